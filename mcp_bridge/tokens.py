"""The bearer-token lookup of the resource server (/mcp), compiled to SQL once per process instead of once per call.

It belongs to the resource server: the authorization server (oauth_ext) issues tokens and never reads them
back on a hot path; DOT's own lookup (the validator's default) serves any bearer validation DOT does itself.
An authenticated tools/call costs one SELECT (token, user and client together, here) and its audit row
(``audit.services``: one INSERT, or a share of a batch's, ``audit.batch``). Through the ORM, compiling the
SELECT costs several times more than running it (about 1.5 ms of the token lookup's 1.6 ms, measured by
bench/run.py), so it is built once from the models' metadata and the rows are turned back into model
instances with ``Model.from_db``, exactly what the ORM would have returned (``select_related("user",
"application")``, as DOT's lookup). On PostgreSQL the connection binds parameters server-side and prepares a
statement it has run five times (``mcpgate.env.envdatabase``), so the three-table join is planned once per
connection, not on every call. There /mcp admission sends it from the event loop (``aload_access_token`` on
``mcpgate.asyncdb``'s connections, set up like Django's), not from a worker thread; the rows are turned into
models the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from django.core.signals import setting_changed
from django.db import connections, models, router
from oauth2_provider.models import get_access_token_model

from mcpgate import ratelimit
from mcpgate.asyncdb import AsyncDatabase

from .models import TokenCalls


def _columns(model: type[models.Model], alias: str, quote: Any) -> tuple[list[str], list[str]]:
    fields = model._meta.concrete_fields
    return [f.attname for f in fields], [f"{alias}.{quote(f.column)}" for f in fields]


class _TokenLookup:
    """SELECT access token + user + client by token checksum (DOT's lookup, select_related included)."""

    def __init__(self, db: str) -> None:
        connection = connections[db]
        quote = connection.ops.quote_name
        token_model = get_access_token_model()
        user_field = token_model._meta.get_field("user")
        app_field = token_model._meta.get_field("application")
        self.models = (token_model, user_field.related_model, app_field.related_model)
        self.names: list[list[str]] = []
        selects: list[str] = []
        for model, alias in zip(self.models, ("t", "u", "a"), strict=True):
            names, cols = _columns(model, alias, quote)
            self.names.append(names)
            selects.extend(cols)
        # Identifiers come from model metadata and are quoted; the checksum is a bound parameter.
        self.sql = (
            f"SELECT {', '.join(selects)} FROM {quote(token_model._meta.db_table)} t "  # noqa: S608
            f"LEFT JOIN {quote(self.models[1]._meta.db_table)} u ON u.{quote(self.models[1]._meta.pk.column)} = "
            f"t.{quote(user_field.column)} "
            f"LEFT JOIN {quote(self.models[2]._meta.db_table)} a ON a.{quote(self.models[2]._meta.pk.column)} = "
            f"t.{quote(app_field.column)} "
            f"WHERE t.{quote(token_model._meta.get_field('token_checksum').column)} = %s"
        )
        self.db = db
        # PostgreSQL: the same lookup with the request counted against the token in the same statement.
        self.counting_sql = self._counting_sql(selects, quote) if connection.vendor == "postgresql" else None
        # The ORM's own per-column converters (backend first, then field), resolved once.
        self.converters = [
            [
                (col, [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)])
                for col in (f.get_col(model._meta.db_table) for f in model._meta.concrete_fields)
            ]
            for model in self.models
        ]

    def _counting_sql(self, selects: list[str], quote: Any) -> str:
        """``sql`` with the request counted in ``TokenCalls`` (an upsert in a CTE: PostgreSQL runs it once,
        atomically against every other count of the token). Parameters: the checksum, then the window's end.

        A later window restarts the count at 1; an earlier one (a replica whose clock is behind) counts in
        the row's window, which is kept.
        """
        calls = TokenCalls._meta
        table, token_id = quote(calls.db_table), quote(calls.get_field("token").column)
        end, count = quote(calls.get_field("window_end").column), quote(calls.get_field("calls").column)
        # Aliased: three tables' columns share names ("id"), which a CTE's columns may not when referenced.
        aliased = ", ".join(f"{column} AS c{i}" for i, column in enumerate(selects))
        pk = self.names[0].index(self.models[0]._meta.pk.attname)
        return (
            f"WITH found AS (SELECT {aliased} {self.sql[self.sql.index(' FROM ') + 1 :]}), "  # noqa: S608
            f"counted AS (INSERT INTO {table} AS c ({token_id}, {end}, {count}) SELECT c{pk}, %s, 1 FROM found "
            f"ON CONFLICT ({token_id}) DO UPDATE SET "
            f"{count} = CASE WHEN EXCLUDED.{end} > c.{end} THEN 1 ELSE c.{count} + 1 END, "
            f"{end} = GREATEST(c.{end}, EXCLUDED.{end}) RETURNING c.{count}) "
            f"SELECT found.*, (SELECT {count} FROM counted) FROM found"
        )

    def load(self, checksum: str) -> Any:
        connection = connections[self.db]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [checksum])
            return self.token(cursor.fetchone())

    async def aload(self, checksum: str, database: AsyncDatabase) -> Any:
        return self.token(await database.fetchone(self.sql, [checksum]))

    def load_counted(self, checksum: str, window_end: int) -> tuple[Any, int | None]:
        assert self.counting_sql is not None
        with connections[self.db].cursor() as cursor:
            cursor.execute(self.counting_sql, [checksum, window_end])
            return self.counted(cursor.fetchone())

    async def aload_counted(self, checksum: str, window_end: int, database: AsyncDatabase) -> tuple[Any, int | None]:
        assert self.counting_sql is not None
        return self.counted(await database.fetchone(self.counting_sql, [checksum, window_end]))

    def counted(self, row: Sequence[Any] | None) -> tuple[Any, int | None]:
        """The token of one row of ``counting_sql`` and its calls in the window (None, None: no row)."""
        if row is None:
            return None, None
        return self.token(row[:-1]), row[-1]

    def token(self, row: Sequence[Any] | None) -> Any:
        """The token, user and client of one row of ``sql``, as the ORM would build them (None: no row)."""
        if row is None:
            return None
        sizes = [len(n) for n in self.names]
        token_values = row[: sizes[0]]
        user_values = row[sizes[0] : sizes[0] + sizes[1]]
        app_values = row[sizes[0] + sizes[1] :]
        token = self._from_db(0, token_values)
        # Through the forward descriptors, so token.user / token.application need no query.
        token.user = self._from_db(1, user_values) if user_values[0] is not None else None
        token.application = self._from_db(2, app_values) if app_values[0] is not None else None
        return token

    def _from_db(self, index: int, values: Sequence[Any]) -> Any:
        connection = connections[self.db]
        converted = []
        for (col, converters), value in zip(self.converters[index], values, strict=True):
            for converter in converters:
                value = converter(value, col, connection)
            converted.append(value)
        return self.models[index].from_db(self.db, self.names[index], converted)


_lock = threading.Lock()
_lookups: dict[str, _TokenLookup] = {}


def load_access_token(checksum: str) -> Any:
    """The access token whose SHA-256 checksum (DOT's ``token_checksum``) this is, its user and client
    loaded, or None (one query)."""
    return _lookup(token_database()).load(checksum)


def token_database() -> str:
    """The database alias access tokens are read from."""
    return router.db_for_read(get_access_token_model())


def _lookup(db: str) -> _TokenLookup:
    lookup = _lookups.get(db)
    if lookup is None:
        with _lock:
            lookup = _lookups.setdefault(db, _TokenLookup(db))
    return lookup


async def aload_access_token(checksum: str, *, database: AsyncDatabase) -> Any:
    """``load_access_token`` from the event loop, on ``database``'s asynchronous connections (mcpgate.asyncdb)."""
    return await _lookup(database.alias).aload(checksum, database)


def load_and_count(checksum: str, *, window_end: int) -> tuple[Any, int | None]:
    """``load_access_token``, and on PostgreSQL this request counted against the token in the rate-limit window
    ending at ``window_end``, in the same statement (``TokenCalls``): the token (or None) and its requests in
    that window, this one included; None when the count is not kept here (SQLite: the cache keeps it)."""
    lookup = _lookup(token_database())
    if lookup.counting_sql is None:
        return lookup.load(checksum), None
    return lookup.load_counted(checksum, window_end)


async def aload_and_count(checksum: str, *, window_end: int, database: AsyncDatabase) -> tuple[Any, int | None]:
    """``load_and_count`` from the event loop, on ``database``'s asynchronous connections (PostgreSQL)."""
    return await _lookup(database.alias).aload_counted(checksum, window_end, database)


def peek_calls(token: Any) -> ratelimit.Verdict | None:
    """The count ``MCPGATE_RATE_LIMIT_MCP`` holds for ``token`` (an access token) in its current window,
    without counting (tests, diagnostics): ``TokenCalls`` on PostgreSQL, else the cache's (None: unknown)."""
    window = ratelimit.window(ratelimit.MCP, token.token_checksum)
    if _lookup(token_database()).counting_sql is None:
        return ratelimit.peek(ratelimit.MCP, str(token.pk))
    row = TokenCalls.objects.using(token_database()).filter(token_id=token.pk, window_end=window.end).first()
    return ratelimit.counted(window, row.calls if row is not None else 0)


def lookup_sql(db: str) -> str:
    """The SELECT ``load_access_token`` runs on ``db``."""
    return _TokenLookup(db).sql


def admission_sql(db: str) -> str:
    """The statement /mcp admission runs on ``db``: the lookup, counting on PostgreSQL (the benchmark shows
    its plan: bench/fixtures.py)."""
    lookup = _TokenLookup(db)
    return lookup.counting_sql or lookup.sql


def _forget(**kwargs: Any) -> None:
    # Tests swap databases and settings; a statement compiled for one must not outlive it.
    _lookups.clear()


setting_changed.connect(_forget)

__all__ = [
    "admission_sql",
    "aload_access_token",
    "aload_and_count",
    "load_access_token",
    "load_and_count",
    "lookup_sql",
    "peek_calls",
    "token_database",
]
