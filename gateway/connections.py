"""People's own accounts at per-person upstreams (issue 12): connect, use on their calls, refresh, disconnect.

An upstream whose ``credential`` is per person is called, for each person, with that person's own
token as ``Authorization: Bearer`` (RFC 6750 §2.1), added to the one request it is for
(gateway.percall), never the MCP client's token for mcpgate (MCP authorization, "Access Token
Privilege Restriction"). The token is one the person pasted (``PERSON_TOKEN``) or one the upstream's
authorization server gave mcpgate after the person signed in there (``PERSON_OAUTH``,
gateway.upstream_oauth), refreshed shortly before it expires with at most one refresh in flight per
(person, upstream) across workers and replicas: the refresh runs under a lock on the connection's row
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write lock, its transactions being IMMEDIATE), and
whoever waited for it uses the token it left. A single-use refresh token is never sent twice.

Tokens are sealed at rest (gateway.crypto), shown to nobody, and deleted when the person disconnects,
when an operator revokes them or offboards the person, when the upstream refuses the access token
(HTTP 401) and when its authorization server refuses the refresh: the person is asked to connect again.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping, MutableMapping
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
from .upstream_oauth import (
    Endpoints,
    OAuthClient,
    OAuthFailed,
    Pkce,
    Problem,
    authorization_url,
    exchange_code,
    refresh,
)

logger = logging.getLogger(__name__)

# last_used_at is for people and operators ("when was this last used"), not an access log: writing it on
# every call would add a statement to each of them.
USE_RECORDED_EVERY = timedelta(minutes=1)
MAX_TOKEN_LENGTH = 4096
# An access token is refreshed this long before it expires, so a call never carries one that lapses on the way.
REFRESH_AHEAD = timedelta(seconds=60)
# Connections a person has started at /connect/ and not finished (in their session, by ``state``).
PENDING_KEY = "mcpgate.connect"
PENDING_SECONDS = 600
PENDING_MAX = 5
# Connections tried, most recently used first, for a credential to list a per-person upstream with.
LISTING_TRIES = 3
# What an HTTP field value can carry without any doubt (RFC 9110 §5.5 visible characters), so a pasted
# token is sent as it was pasted: printable ASCII, no spaces (RFC 6750 §2.1's b64token is narrower still).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class DisconnectReason(StrEnum):
    """Why a connection was deleted (the audit row's ``reason``)."""

    PERSON = "person"  # at /connect/
    OPERATOR = "operator"  # revoked in the console
    OFFBOARDED = "offboarded"  # the console's offboarding of the person
    REFUSED = "refused"  # the upstream answered 401 to it, or its authorization server refused the refresh


class TokenRejected(Exception):
    """A pasted token that is not stored; the message says why, for the person (never the token)."""


class NotConnected(Exception):
    """The person has not connected their account at a per-person upstream; the message says where to."""

    def __init__(self, *, upstream: str, url: str, ended: bool = False) -> None:
        self.upstream, self.url = upstream, url
        if ended:
            message = (
                f"{upstream} no longer accepts the account you connected, so mcpgate has forgotten it. "
                f"Connect again at {url} and call the tool again."
            )
        else:
            message = (
                f"This tool acts as your own {upstream} account, which you have not connected to mcpgate. "
                f"Connect it at {url} and call the tool again."
            )
        super().__init__(message)


class ConnectionEnded(Exception):
    """The upstream's authorization server refused to renew the person's access: the connection was deleted."""

    def __init__(self, *, upstream: str) -> None:
        super().__init__(upstream)
        self.upstream = upstream


class ConnectRefused(Exception):
    """A /connect/ callback that stores nothing; the message is for the person, ``status`` the page's."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
    return _store(user=user, upstream=upstream, credential={"access_token": token}, expires_at=None)


def _store(*, user: User, upstream: Upstream, credential: dict[str, str], expires_at: datetime | None) -> Connection:
    """Seal and store the person's credential at ``upstream`` (replacing theirs), audited."""
    with transaction.atomic():
        connection, created = Connection.objects.update_or_create(
            user=user,
            upstream=upstream,
            defaults={
                "sealed_credential": seal(credential),
                "connected_at": timezone.now(),
                "last_used_at": None,
                "expires_at": expires_at,
            },
        )
        audit_record(
            event=AuditKind.UPSTREAM_CONNECTED, user=user, detail={"upstream": upstream.name, "replaced": not created}
        )
    # An upstream nobody had connected yet could not be listed (gateway.runtime): this worker tries at once.
    transaction.on_commit(hooks.announce)
    return connection


# ---------------------------------------------------------------------------
# Per-person OAuth: the person signs in at the upstream's authorization server
# ---------------------------------------------------------------------------
def oauth_client_of(upstream: Upstream) -> OAuthClient:
    """mcpgate's client registration at ``upstream``'s authorization server, its secret opened."""
    try:
        secret = unseal(upstream.sealed_oauth_client_secret).get("secret", "")
    except (KeyMissing, SealBroken) as exc:
        logger.error("the OAuth client secret of upstream %s cannot be opened: %s", upstream.name, exc)
        raise CredentialUnavailable(
            f"mcpgate cannot open its own credentials for {upstream.name}; its operator has been told."
        ) from None
    return OAuthClient(
        client_id=upstream.oauth_client_id,
        client_secret=secret,
        endpoints=Endpoints(
            authorization_url=upstream.authorization_url, token_url=upstream.token_url, issuer=upstream.oauth_issuer
        ),
        resource=upstream.url,
        scopes=tuple(upstream.upstream_scopes),
    )


def connection_oauth_start(
    *, user: User, upstream: Upstream, session: MutableMapping[str, Any], redirect_uri: str
) -> str:
    """Where to send the person to sign in at the upstream (RFC 6749 §4.1.1 with PKCE and RFC 8707).

    ``state`` is random, kept in the person's own session with the PKCE verifier, and good for one
    callback within ``PENDING_SECONDS`` (RFC 6749 §10.12, RFC 9700 §4.7.1): another person's, a replayed
    or a forged one matches nothing.
    """
    client = oauth_client_of(upstream)
    state, pkce = secrets.token_urlsafe(32), Pkce.make()
    now = time.time()
    pending = {
        key: entry
        for key, entry in dict(session.get(PENDING_KEY, {})).items()
        if isinstance(entry, dict) and now - float(entry.get("at", 0)) < PENDING_SECONDS
    }
    kept = sorted(pending.items(), key=lambda item: float(item[1]["at"]))[-(PENDING_MAX - 1) :]
    session[PENDING_KEY] = dict(kept) | {
        state: {"upstream": upstream.pk, "person": user.pk, "verifier": pkce.verifier, "at": now, "to": redirect_uri}
    }
    return authorization_url(client, state=state, pkce=pkce, redirect_uri=redirect_uri)


def connection_oauth_finish(
    *, user: User, upstream: Upstream, session: MutableMapping[str, Any], query: Mapping[str, str]
) -> Connection:
    """The callback: the authorization response checked against what this person started (``state``, used
    up whatever happens), the code exchanged with the PKCE verifier, the tokens sealed and stored.
    Raises ``ConnectRefused`` (nothing stored)."""
    name = upstream.name
    state = query.get("state", "")
    pending = dict(session.get(PENDING_KEY, {}))
    entry = pending.pop(state, None) if state else None
    session[PENDING_KEY] = pending
    if (
        not isinstance(entry, dict)
        or time.time() - float(entry.get("at", 0)) > PENDING_SECONDS
        or entry.get("person") != user.pk
        or entry.get("upstream") != upstream.pk
    ):
        raise ConnectRefused(
            f"This answer from {name}'s sign-in does not match a connection you started here, or it was used "
            "already, or it is too old. Nothing was stored; start again."
        )
    error = query.get("error", "")
    if error:
        raise ConnectRefused(f"{name} did not connect your account ({_printable(error, 60)}). Nothing was stored.")
    issuer = upstream.oauth_issuer
    if issuer and "iss" in query and query["iss"] != issuer:
        # RFC 9207 §2.4: an answer from another authorization server than the one the person was sent to.
        raise ConnectRefused(f"This answer did not come from {name}'s sign-in. Nothing was stored; start again.")
    code = query.get("code", "")
    if not code:
        raise ConnectRefused(f"{name}'s sign-in answered without an authorization code. Nothing was stored.")
    try:
        token = exchange_code(
            oauth_client_of(upstream), code=code, pkce=Pkce(verifier=str(entry["verifier"])), redirect_uri=entry["to"]
        )
    except OAuthFailed as exc:
        status = 400 if exc.problem is Problem.REFUSED else 502
        message = f"{name}'s sign-in did not give mcpgate access: {exc}. Nothing was stored."
        raise ConnectRefused(message, status=status) from None
    except CredentialUnavailable as exc:
        raise ConnectRefused(str(exc), status=503) from None
    return _store(user=user, upstream=upstream, credential=_sealable(token), expires_at=_expiry(token.expires_in))


def _sealable(token: Any) -> dict[str, str]:
    credential = {"access_token": token.access_token}
    if token.refresh_token:
        credential["refresh_token"] = token.refresh_token
    return credential


def _expiry(expires_in: int | None) -> datetime | None:
    return timezone.now() + timedelta(seconds=expires_in) if expires_in else None


def _printable(text: str, limit: int) -> str:
    return "".join(c for c in text[:limit] if c.isprintable())


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

    One statement; a second at most once a minute per connection (``last_used_at``); and, for an access
    token about to expire, the refresh (``_renewed``). Raises ``ConnectionEnded`` when the upstream's
    server refused the refresh and ``CredentialUnavailable`` when the token cannot be opened or renewed.
    """
    row = (
        Connection.objects.filter(user_id=user_id, upstream_id=upstream_id)
        .values_list("pk", "sealed_credential", "connected_at", "last_used_at", "expires_at")
        .first()
    )
    if row is None:
        return None
    pk, sealed, connected_at, last_used_at, expires_at = row
    held = _renewed(pk) if _due(expires_at) else _held(pk, connected_at, _opened(sealed))
    now = timezone.now()
    if held is not None and (last_used_at is None or now - last_used_at >= USE_RECORDED_EVERY):
        Connection.objects.filter(pk=pk).update(last_used_at=now)
    return held


def _due(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at - REFRESH_AHEAD <= timezone.now()


def _held(pk: int, connected_at: datetime, credential: dict[str, str]) -> Held:
    return Held(connection_id=pk, connected_at=connected_at, token=credential["access_token"])


def connection_renewed_after_refusal(*, held: Held) -> Held | None:
    """The upstream answered 401 to ``held``'s access token, which it may have revoked or expired early: the
    connection renewed at once, like an expiring one (RFC 6750 §3.1 ``invalid_token``: the client may get a
    new token). Another call's renewal meanwhile is used as it is. None when the connection is gone."""
    return _renewed(held.connection_id, refused=held.token)


def _renewed(pk: int, *, refused: str | None = None) -> Held | None:
    """The connection's access token renewed (RFC 6749 §6) under a lock on its row, unless whoever held the
    lock before renewed it already; ``refused``: an access token the upstream refused, renewed even when it
    is not due. A refusal of the renewal deletes the connection (``ConnectionEnded``)."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update().select_related("upstream", "user").filter(pk=pk).first()
        if connection is None:
            return None
        credential = _opened(connection.sealed_credential)
        fresh = not _due(connection.expires_at) if refused is None else credential["access_token"] != refused
        if fresh:
            return _held(pk, connection.connected_at, credential)
        upstream = connection.upstream
        failure: OAuthFailed | None = None
        if "refresh_token" in credential:
            try:
                token = refresh(oauth_client_of(upstream), refresh_token=credential["refresh_token"])
            except OAuthFailed as exc:
                failure = exc
            else:
                # Without a new refresh token the old one stays good (RFC 6749 §6); with one, the old is spent.
                renewed = _sealable(token)
                renewed.setdefault("refresh_token", credential["refresh_token"])
                connection.sealed_credential = seal(renewed)
                connection.expires_at = _expiry(token.expires_in)
                connection.save(update_fields=["sealed_credential", "expires_at"])
                logger.info("renewed the access of %s at upstream %s", connection.user, upstream.name)
                return _held(pk, connection.connected_at, renewed)
        if failure is not None and failure.problem is not Problem.REFUSED:
            if refused is None and connection.expires_at is not None and connection.expires_at > timezone.now():
                return _held(pk, connection.connected_at, credential)  # still good for a moment: try again later
            logger.warning("could not renew access at upstream %s: %s", upstream.name, failure)
            raise CredentialUnavailable(
                f"{upstream.name}'s sign-in service did not renew your access ({failure}); try again in a moment."
            )
    # Refused (or nothing to refresh with): the person must connect again. Deleted outside the block above,
    # which an exception would roll back.
    logger.info("upstream %s refused to renew the access of %s: connection deleted", upstream.name, connection.user)
    connection_delete(connection=connection, reason=DisconnectReason.REFUSED)
    raise ConnectionEnded(upstream=upstream.name)


def listing_credential(*, upstream_id: int) -> str | None:
    """A token to list a per-person upstream's tools with (what everyone allowed to use it is shown): the
    most recently used connection's, renewed first when it is due (a session reopened after everyone's
    access lapsed must not wait for someone's call). None when nobody has a usable connection."""
    rows = (
        Connection.objects.filter(upstream_id=upstream_id)
        .order_by(F("last_used_at").desc(nulls_last=True), "-connected_at")
        .values_list("pk", "sealed_credential", "expires_at")[:LISTING_TRIES]
    )
    for pk, sealed, expires_at in rows:
        if not _due(expires_at):
            return _opened(sealed)["access_token"]
        try:
            held = _renewed(pk)
        except (ConnectionEnded, CredentialUnavailable):
            continue  # that one is gone or cannot be renewed now: the next one
        if held is not None:
            return held.token
    return None


def _opened(sealed: str) -> dict[str, str]:
    try:
        credential = unseal(sealed)
        if "access_token" not in credential:
            raise KeyError("access_token")  # not a row this module wrote
        return credential
    except (KeyMissing, SealBroken, KeyError) as exc:
        logger.error("a person's upstream credential cannot be opened: %s", exc)
        raise CredentialUnavailable(
            "mcpgate cannot open the credential you connected; its operator has been told. Connect again."
        ) from None


def connections_of(*, user: User) -> dict[int, Connection]:
    """The person's connections by upstream id (the /connect/ page)."""
    return {c.upstream_id: c for c in Connection.objects.filter(user=user)}
