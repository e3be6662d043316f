"""The one audit writer: every event goes through ``audit_record``; the console reads the one table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed
from django.db import connections, models, router
from django.http import HttpRequest

from mcpgate.asyncdb import AsyncDatabase
from mcpgate.ratelimit import audit_allowance

from . import batch
from .models import AuditEvent, AuditKind
from .signals import event_recorded

if TYPE_CHECKING:
    from oauth_ext.models import Client

__all__ = ["AuditKind", "audit_record", "audit_record_on_loop"]


def audit_record(
    *,
    event: AuditKind,
    request: HttpRequest | None = None,
    user: Any = None,
    client: Client | None = None,
    host: str = "",
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """Append one event. Never pass a token, code or secret in ``detail``.

    What a caller nobody signed in causes (a failed token request, a refused registration) is
    bounded per event kind and client address (``mcpgate.ratelimit.audit_allowance``): beyond
    MCPGATE_AUDIT_ANONYMOUS_RATE the rows are counted, not written (None is returned), and the
    next row of that kind from that address carries the count as ``detail["suppressed"]``.
    Events with a person, or with no address (the operators' and the system's), are always written.

    A tool call's row is queued instead while the worker batches them (``audit.batch``): it is
    returned without a primary key, and written within ``MCPGATE_AUDIT_BATCH_SECONDS``.
    """
    record = _event(event=event, request=request, user=user, client=client, host=host, ip=ip, detail=detail)
    if record is None:
        return None
    if not _queued(record):
        # One INSERT, compiled once.
        _insert_row(record)
    event_recorded.send(sender=AuditEvent, event=record)
    return record


async def audit_record_on_loop(
    *,
    database: AsyncDatabase,
    event: AuditKind,
    user: Any = None,
    client: Client | None = None,
    host: str = "",
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """``audit_record`` from the event loop, its INSERT on ``database``'s asynchronous connections
    (``mcpgate.asyncdb``: the /mcp hot path on PostgreSQL, which writes it without a worker thread)."""
    record = _event(event=event, request=None, user=user, client=client, host=host, ip=ip, detail=detail)
    if record is None:
        return None
    if not _queued(record):
        sql, params = _insert_statement(record)
        row = await database.fetchone(sql, params)
        _inserted(record, row[0] if row is not None else None)
    event_recorded.send(sender=AuditEvent, event=record)
    return record


def _queued(record: AuditEvent) -> bool:
    """Whether ``record`` went to this worker's batcher (a tool call, while it batches), not to be written now."""
    batcher = batch.current()
    if batcher is None or record.event != AuditKind.TOOL_CALL:
        return False
    batcher.submit(record)
    return True


def _event(
    *,
    event: AuditKind,
    request: HttpRequest | None,
    user: Any,
    client: Client | None,
    host: str,
    ip: str | None,
    detail: dict[str, Any] | None,
) -> AuditEvent | None:
    """The row ``audit_record`` appends, or None when the anonymous allowance says it is only counted."""
    if not isinstance(event, AuditKind):
        # A bare string would be stored and silently drop out of every timeline and filter.
        raise TypeError(f"audit_record needs an AuditKind, not {event!r}")
    if user is None and request is not None:
        user = getattr(request, "user", None)
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    if request is not None and not host:
        host_obj = getattr(request, "mcpgate_host", None)
        host = host_obj.name if host_obj else ""
    if ip is None and request is not None:
        ip = getattr(request, "mcpgate_client_ip", None)
    detail = dict(detail or {})
    if user is None and ip:
        allowance = audit_allowance(event=str(event), ip=ip)
        if not allowance.write:
            return None
        if allowance.suppressed_before:
            detail["suppressed"] = allowance.suppressed_before
    return AuditEvent(
        event=event,
        user=user,
        client=client,
        email=(user.email or user.get_username()) if user is not None else "",
        client_label=(client.name or client.client_id)[:255] if client is not None else "",
        host=host,
        ip=ip or None,
        detail=detail,
    )


def _insert_row(instance: models.Model) -> None:
    """INSERT one row for ``instance`` with a statement built once per model and database.

    For append-only rows on the hot path (the audit). ``pk`` is set from RETURNING where the
    database supports it, else from the cursor.
    """
    sql, params = _insert_statement(instance)
    connection = connections[router.db_for_write(type(instance))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        pk = cursor.fetchone()[0] if connection.features.can_return_columns_from_insert else cursor.lastrowid
    _inserted(instance, pk)


def _inserted(instance: models.Model, pk: Any) -> None:
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = router.db_for_write(type(instance))


def _insert_statement(instance: models.Model) -> tuple[str, list[Any]]:
    """The INSERT of ``instance`` (built once per model and database) and its parameters."""
    model = type(instance)
    db = router.db_for_write(model)
    key = (model, db)
    statement = _inserts.get(key)
    connection = connections[db]
    if statement is None:
        quote = connection.ops.quote_name
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        placeholders = ", ".join("%s" for _ in fields)
        # Quoted identifiers from model metadata; values are bound parameters.
        sql = (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES ({placeholders})"
        )
        if connection.features.can_return_columns_from_insert:
            sql += f" RETURNING {quote(model._meta.pk.column)}"
        statement = _inserts.setdefault(key, (sql, fields))
    sql, fields = statement
    return sql, [field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields]


_inserts: dict[tuple[type[models.Model], str], tuple[str, list[Any]]] = {}


def _forget(**kwargs: Any) -> None:
    # Tests swap databases and settings; a statement compiled for one must not outlive it.
    _inserts.clear()


setting_changed.connect(_forget)
