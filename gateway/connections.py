"""People's own accounts at per-person upstreams (issue 12): connect, use on their calls, disconnect.

An upstream whose ``credential`` is per person is called, for each person, with that person's own
token as ``Authorization: Bearer`` (RFC 6750 §2.1), added to the one request it is for
(gateway.percall), never the MCP client's token for mcpgate (MCP authorization, "Access Token
Privilege Restriction"). The token is sealed at rest (gateway.crypto), shown to nobody after it is
pasted, and deleted when the person disconnects, when an operator revokes it or offboards the person,
and when the upstream refuses it (HTTP 401: the person is asked to connect again).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.models import AuditKind
from audit.services import audit_record
from oauth_ext.models import User

from . import hooks
from .crypto import KeyMissing, SealBroken, seal, unseal
from .models import Connection, Credential, Upstream

logger = logging.getLogger(__name__)

# last_used_at is for people and operators ("when was this last used"), not an access log: writing it on
# every call would add a statement to each of them.
USE_RECORDED_EVERY = timedelta(minutes=1)
MAX_TOKEN_LENGTH = 4096
# What an HTTP field value can carry without any doubt (RFC 9110 §5.5 visible characters), so a pasted
# token is sent as it was pasted: printable ASCII, no spaces (RFC 6750 §2.1's b64token is narrower still).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class DisconnectReason(StrEnum):
    """Why a connection was deleted (the audit row's ``reason``)."""

    PERSON = "person"  # at /connect/
    OPERATOR = "operator"  # revoked in the console
    OFFBOARDED = "offboarded"  # the console's offboarding of the person
    REFUSED = "refused"  # the upstream answered 401 to it


class TokenRejected(Exception):
    """A pasted token that is not stored; the message says why, for the person (never the token)."""


class NotConnected(Exception):
    """The person has not connected their account at a per-person upstream; the message says where to."""

    def __init__(self, *, upstream: str, url: str) -> None:
        super().__init__(
            f"This tool acts as your own {upstream} account, which you have not connected to mcpgate. "
            f"Connect it at {url} and call the tool again."
        )


class CredentialUnavailable(Exception):
    """The person's stored credential cannot be opened (MCPGATE_UPSTREAM_KEYS lost the key that sealed it)."""


def connect_path(name: str) -> str:
    """Where a person connects their account at the upstream ``name`` (gateway.views)."""
    return f"/connect/{name}/"


def token_problem(*, upstream: Upstream, token: str) -> str | None:
    """Why ``token`` cannot be this person's token at ``upstream``, or None."""
    if not token:
        return "Paste your token."
    if len(token) > MAX_TOKEN_LENGTH:
        return f"That is longer than a token can be here ({MAX_TOKEN_LENGTH} characters at most)."
    if not _TOKEN_CHARACTERS.fullmatch(token):
        return "A token is one line of printable ASCII characters without spaces."
    if upstream.token_pattern and not re.fullmatch(upstream.token_pattern, token):
        return f"That is not a {upstream.name} token: a {upstream.name} token matches {upstream.token_pattern}."
    return None


def connection_token_save(*, user: User, upstream: Upstream, token: str) -> Connection:
    """The person's token at a per-person-token upstream, checked, sealed and stored (replacing theirs).

    Raises ``TokenRejected`` (nothing stored) for a token that cannot be right, ``KeyMissing`` when
    credentials cannot be sealed.
    """
    if upstream.credential != Credential.PERSON_TOKEN:
        raise TokenRejected(f"{upstream.name} does not take a token of yours.")
    token = token.strip()
    problem = token_problem(upstream=upstream, token=token)
    if problem is not None:
        raise TokenRejected(problem)
    with transaction.atomic():
        connection, created = Connection.objects.update_or_create(
            user=user,
            upstream=upstream,
            defaults={
                "sealed_credential": seal({"token": token}),
                "connected_at": timezone.now(),
                "last_used_at": None,
            },
        )
        audit_record(
            event=AuditKind.UPSTREAM_CONNECTED, user=user, detail={"upstream": upstream.name, "replaced": not created}
        )
    # An upstream nobody had connected yet could not be listed (gateway.runtime): this worker tries at once.
    transaction.on_commit(hooks.announce)
    return connection


def connection_delete(*, connection: Connection, reason: DisconnectReason, operator: User | None = None) -> None:
    """Delete one connection: the next call of that person to that upstream is asked to connect again."""
    with transaction.atomic():
        connection.delete()
        audit_record(
            event=AuditKind.UPSTREAM_DISCONNECTED,
            user=connection.user,
            detail=_reason(connection.upstream.name, reason, operator),
        )


def connections_delete_for_person(*, user: User, operator: User | None) -> int:
    """Offboarding: every upstream account the person connected is forgotten. Returns how many."""
    with transaction.atomic():
        connections = list(Connection.objects.filter(user=user).select_related("upstream"))
        for connection in connections:
            connection.delete()
            audit_record(
                event=AuditKind.UPSTREAM_DISCONNECTED,
                user=user,
                detail=_reason(connection.upstream.name, DisconnectReason.OFFBOARDED, operator),
            )
    return len(connections)


def _reason(upstream: str, reason: DisconnectReason, operator: User | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"upstream": upstream, "reason": str(reason)}
    if operator is not None:
        detail["operator"] = operator.get_username()
    return detail


@dataclass(frozen=True)
class Held:
    """A person's credential as one call holds it (``repr`` omits the token)."""

    connection_id: int
    connected_at: datetime
    token: str = field(repr=False)


def connection_refused(*, held: Held) -> bool:
    """The upstream answered 401 to this credential: its connection is deleted (and audited) so the person
    is asked to connect again. Not a connection made since (a token pasted while the call was out).
    False when there was nothing to delete."""
    found = (
        Connection.objects.select_related("user", "upstream")
        .filter(pk=held.connection_id, connected_at=held.connected_at)
        .first()
    )
    if found is None:
        return False
    connection_delete(connection=found, reason=DisconnectReason.REFUSED)
    return True


def connection_credential(*, user_id: int, upstream_id: int) -> Held | None:
    """The person's credential at the upstream for one call, or None when they have not connected.

    One statement, and a second at most once a minute per connection (``last_used_at``). Raises
    ``CredentialUnavailable`` when the stored token cannot be opened.
    """
    row = (
        Connection.objects.filter(user_id=user_id, upstream_id=upstream_id)
        .values_list("pk", "sealed_credential", "connected_at", "last_used_at")
        .first()
    )
    if row is None:
        return None
    pk, sealed, connected_at, last_used_at = row
    held = Held(connection_id=pk, connected_at=connected_at, token=_opened(sealed))
    now = timezone.now()
    if last_used_at is None or now - last_used_at >= USE_RECORDED_EVERY:
        Connection.objects.filter(pk=pk).update(last_used_at=now)
    return held


def listing_credential(*, upstream_id: int) -> str | None:
    """A token to list a per-person upstream's tools with (what everyone allowed to use it is shown): the
    most recently used connection's. None when nobody has connected."""
    sealed = (
        Connection.objects.filter(upstream_id=upstream_id)
        .order_by(F("last_used_at").desc(nulls_last=True), "-connected_at")
        .values_list("sealed_credential", flat=True)
        .first()
    )
    return _opened(sealed) if sealed is not None else None


def _opened(sealed: str) -> str:
    try:
        return unseal(sealed)["token"]
    except (KeyMissing, SealBroken, KeyError) as exc:
        logger.error("a person's upstream credential cannot be opened: %s", exc)
        raise CredentialUnavailable(
            "mcpgate cannot open the credential you connected; its operator has been told. Connect again."
        ) from None


def connections_of(*, user: User) -> dict[int, Connection]:
    """The person's connections by upstream id (the /connect/ page)."""
    return {c.upstream_id: c for c in Connection.objects.filter(user=user)}
