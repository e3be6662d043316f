"""Everything the authorization server changes: sign-in, registration, consent, audit, clean-up."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views.dynamic_client_registration import _issue_registration_token

from audit.models import AuditKind
from audit.services import audit_record

from .models import Client, Consent, User

logger = logging.getLogger(__name__)

__all__ = [
    "ConsentStep",
    "RegistrationResult",
    "authorization_client_get",
    "authorization_refusal_record",
    "client_create",
    "client_mark_used",
    "client_record_metadata_document",
    "client_record_registration",
    "client_register",
    "client_revoke_all_tokens",
    "client_rotate_secret",
    "client_set_disabled",
    "client_update_registration",
    "clients_purge_unused",
    "consent_covers",
    "consent_page_prepare",
    "consent_record",
    "consent_reuse_record",
    "consent_revoke",
    "consent_shown_session_key",
    "registration_refusal_record",
    "registration_token_issue",
    "token_revoke",
    "user_revoke_all_tokens",
]


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistrationResult:
    """A client registered under RFC 7591, and the credentials its §3.2.1 response carries once."""

    client: Client
    registration_access_token: str
    client_secret: str | None


def client_register(
    *, issued: Mapping[str, Any], metadata: dict[str, Any], ip: str | None, host: str, request: HttpRequest
) -> RegistrationResult:
    """Complete an RFC 7591 registration DOT has just made: record, audit, sweep.

    ``issued`` is DOT's RFC 7591 §3.2.1 response (client_id, registration_access_token and,
    for a confidential client, client_secret); ``metadata`` passed the registration policy
    (oauth_ext.registration.registration_request). Registrations that never lead to a grant pile
    up (claude.ai registers on every fresh connection); registering is what adds them, so it is
    also what sweeps them (``clients_purge_unused``).
    """
    client = client_record_registration(client_id=issued["client_id"], metadata=metadata, ip=ip, host=host)
    audit_record(
        event=AuditKind.REGISTER,
        request=request,
        client=client,
        detail={"auth_method": client.token_endpoint_auth_method, "software_id": client.software_id},
    )
    clients_purge_unused(
        older_than=timedelta(hours=settings.MCPGATE_UNUSED_CLIENT_PURGE_HOURS), limit=PURGE_PER_REGISTRATION
    )
    return RegistrationResult(
        client=client,
        registration_access_token=str(issued["registration_access_token"]),
        client_secret=issued.get("client_secret"),
    )


def registration_refusal_record(
    *, request: HttpRequest, error: str, user: Any = None, client: Client | None = None, operation: str = ""
) -> None:
    """Audit an RFC 7591 §3.2.2 (or RFC 7592 §2.2) refusal: its error code, never the metadata sent.

    ``user`` as for ``audit_record`` (the request's person by default); ``operation`` names an
    RFC 7592 one ("update"), left out for a registration.
    """
    detail = {"error": error}
    if operation:
        detail["operation"] = operation
    audit_record(event=AuditKind.REGISTER_REFUSED, request=request, user=user, client=client, detail=detail)


def client_record_registration(*, client_id: str, metadata: dict[str, Any], ip: str | None, host: str) -> Client:
    """Note on a client DOT has just registered how it authenticates and where it came from.

    ``metadata`` has passed the registration policy (oauth_ext.registration.check_registration_metadata):
    every field used here is a string of a length its column holds.
    """
    client = Client.objects.get(client_id=client_id)
    client.token_endpoint_auth_method = metadata.get("token_endpoint_auth_method", Client.AuthMethod.SECRET_BASIC)
    client.software_id = metadata.get("software_id", "")
    client.software_version = metadata.get("software_version", "")
    client.registered_from = ip
    client.registered_host = host
    client.save(
        update_fields=[
            "token_endpoint_auth_method",
            "software_id",
            "software_version",
            "registered_from",
            "registered_host",
        ]
    )
    return client


@transaction.atomic
def client_update_registration(
    *, client: Client, metadata: dict[str, Any]
) -> tuple[Client, str | None, dict[str, Any]]:
    """Apply an RFC 7592 §2.2 update that the registration policy has accepted.

    The update replaces the metadata (an omitted field is emptied), except how the client
    authenticates, which never changes (``client_type``, ``token_endpoint_auth_method``,
    the secret: the policy refuses a request to change them). When the set of redirect URIs
    changes, every remembered consent for the client and every outstanding authorization
    code go: the person approved sending codes to the URIs they were shown, not to new ones.

    The client's row is locked first, so a consent being recorded at the same moment
    (``consent_record``) sees either the old URIs and is dropped here, or the new ones.
    Returns the client, a new registration access token when
    ``DCR_ROTATE_REGISTRATION_TOKEN_ON_UPDATE`` (else None: the presented one stays valid),
    and what changed, for the audit. Raises ValidationError when ``Client.clean`` refuses.
    """
    client = Client.objects.select_for_update().get(pk=client.pk)
    previous = set(client.redirect_uris.split())
    client.name = metadata.get("client_name", "")
    client.redirect_uris = " ".join(metadata["redirect_uris"])
    client.software_id = metadata.get("software_id", "")
    client.software_version = metadata.get("software_version", "")
    client.full_clean()
    client.save(update_fields=["name", "redirect_uris", "software_id", "software_version", "updated"])
    changed = set(client.redirect_uris.split()) != previous
    consents = codes = 0
    if changed:
        consents = Consent.objects.filter(client=client).delete()[0]
        codes = get_grant_model().objects.filter(application=client).delete()[0]
    token = registration_token_issue(client=client) if oauth2_settings.DCR_ROTATE_REGISTRATION_TOKEN_ON_UPDATE else None
    return client, token, {"redirect_uris_changed": changed, "consents_dropped": consents, "codes_dropped": codes}


def client_record_metadata_document(*, client: Client, ip: str | None, host: str, request: HttpRequest) -> None:
    """Note where a client first seen through its metadata document (CIMD) came from.

    DOT creates the client while resolving its URL-shaped client_id, out of reach of the
    request; this fills in the address and host once, at the first authorization request.
    """
    updated = Client.objects.filter(pk=client.pk, registered_host="").update(registered_from=ip, registered_host=host)
    if updated:
        client.registered_from, client.registered_host = ip, host
        audit_record(event=AuditKind.REGISTER, request=request, client=client, detail={"source": "cimd"})


@transaction.atomic
def registration_token_issue(*, client: Client) -> str:
    """A fresh RFC 7592 registration access token for ``client``; earlier ones stop working.

    RFC 7592 §2.2 rotation on update (``client_update_registration``). The token is minted by
    DOT's own ``_issue_registration_token``, the function its registration views call, so it is
    exactly the kind they issue and authenticate (scope DCR_REGISTRATION_SCOPE, its expiry
    setting, stored hashed under COMPLIANT_BCP_RFC9700_TOKEN_STORAGE). DOT 3.4 has no public way
    to mint one: its RFC 7592 update rotates inside ``DynamicClientRegistrationManagementView.put``,
    which applies DOT's metadata rules rather than ours and cannot lock the client's row before
    the update (``consent_record`` orders itself on that lock). Calling the private function beats
    copying it, which would drift silently; tests/oauth_ext/test_registration_token_contract.py
    fails if DOT renames it or changes what it issues.

    Unlike DOT, which deletes only the token presented, every earlier registration token of the
    client goes: at most one is ever valid.
    """
    get_access_token_model().objects.filter(application=client, scope=_registration_scope()).delete()
    return str(_issue_registration_token(client, None))


@transaction.atomic
def client_create(
    *,
    name: str,
    redirect_uris: list[str],
    confidential: bool,
    auth_method: str | None = None,
    host: str = "",
    operator: Any = None,
) -> tuple[Client, str | None]:
    """An operator-made client. Returns it and, for a confidential one, the secret (shown once).

    ``host`` (internal or public) is the host the vendor will use, kept as ``registered_host``;
    ``operator`` is who made it in the admin (None from the command line). Raises
    ValidationError, per field, when the client breaks the registration policy (Client.clean).
    """
    secret = generate_client_secret() if confidential else ""
    if auth_method is None:
        auth_method = Client.AuthMethod.SECRET_BASIC if confidential else Client.AuthMethod.NONE
    client = Client(
        name=name,
        redirect_uris=" ".join(redirect_uris),
        client_type=Client.CLIENT_CONFIDENTIAL if confidential else Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        client_secret=secret,
        token_endpoint_auth_method=auth_method,
        registration_source=Client.RegistrationSource.MANUAL,
        registered_host=host,
    )
    client.full_clean()
    client.save()  # DOT hashes the secret on save
    detail: dict[str, Any] = {"confidential": confidential}
    if operator is not None:
        detail["operator"] = _operator_label(operator)
    audit_record(event=AuditKind.CLIENT_CREATED, client=client, host=host, detail=detail)
    return client, (secret or None)


def _operator_label(operator: Any) -> str:
    return str(getattr(operator, "email", "") or operator.get_username())


@transaction.atomic
def client_rotate_secret(*, client: Client, operator: Any) -> str:
    """A new secret for a confidential client, returned once; the old one stops working at once.

    Only the hash is stored (DOT hashes on save), so the secret cannot be shown again later.
    Tokens already issued stay valid: rotating a leaked secret is paired with
    ``client_revoke_all_tokens`` when the tokens are suspect too.
    """
    if client.client_type != Client.CLIENT_CONFIDENTIAL:
        raise ValueError("Only a confidential client has a secret to rotate.")
    secret = generate_client_secret()
    client.client_secret = secret
    client.hash_client_secret = True
    client.save(update_fields=["client_secret", "hash_client_secret", "updated"])
    audit_record(
        event=AuditKind.CLIENT_SECRET_ROTATED,
        client=client,
        user=operator,
        detail={"operator": _operator_label(operator)},
    )
    return secret


@transaction.atomic
def client_set_disabled(*, client: Client, disabled: bool, operator: Any) -> bool:
    """Disable or re-enable a client; True when that changed anything.

    A disabled client is not usable (``Client.is_usable``): DOT refuses its authorization and
    token requests, and /mcp refuses its tokens on the next call. Tokens are kept, so enabling
    the client again restores them; revoke them as well to end its sessions for good.
    """
    changed = Client.objects.filter(pk=client.pk).exclude(disabled=disabled).update(disabled=disabled)
    client.disabled = disabled
    if changed:
        audit_record(
            event=AuditKind.CLIENT_DISABLED if disabled else AuditKind.CLIENT_ENABLED,
            client=client,
            user=operator,
            detail={"operator": _operator_label(operator)},
        )
    return bool(changed)


# How stale a client's "last used" may be. Every token request runs this inside the transaction that
# issues the tokens, and the UPDATE holds the client's row lock until commit: for a client many
# people share (claude.ai's one CIMD client_id) every token request would queue on that one row.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def client_mark_used(*, client: Client | None) -> None:
    """Note that ``client`` got tokens now, to the minute (``LAST_USED_RESOLUTION``)."""
    if client is None:
        return
    now = timezone.now()
    if client.last_used_at is not None and now - client.last_used_at < LAST_USED_RESOLUTION:
        return
    Client.objects.filter(pk=client.pk).update(last_used_at=now)
    client.last_used_at = now


# Clients read per query while purging. Each batch is a plain query, not QuerySet.iterator(): on
# PostgreSQL that is a server-side cursor (DECLARE, FETCH, CLOSE: three round trips for a handful of
# rows), and Django closes it with the driver's error unwrapped (mcpgate.errors.TRANSIENT_DATABASE_ERRORS).
PURGE_BATCH = 200
# How many a registration sweeps at most: each registration adds one client, so a backlog still
# shrinks, and one registration never carries the deletion of a large one (manage.py purge_stale_clients does).
PURGE_PER_REGISTRATION = 20


def clients_purge_unused(*, older_than: timedelta, limit: int | None = None) -> int:
    """Delete self-registered clients that never got a token and are older than ``older_than``.

    claude.ai registers on every fresh connection, so abandoned registrations pile up. A
    client with a live authorization code is left alone (a sign-in may be under way). ``limit``
    caps how many go in this call (oldest first); None: all of them. Returns how many went.
    """
    cutoff = timezone.now() - older_than
    access_tokens = (
        get_access_token_model().objects.filter(application=OuterRef("pk")).exclude(scope=_registration_scope())
    )
    refresh_tokens = get_refresh_token_model().objects.filter(application=OuterRef("pk"))
    grants = get_grant_model().objects.filter(application=OuterRef("pk"))
    stale = Client.objects.filter(
        ~Q(registration_source=Client.RegistrationSource.MANUAL),
        created__lt=cutoff,
        last_used_at__isnull=True,
    ).filter(~Exists(access_tokens), ~Exists(refresh_tokens), ~Exists(grants))
    purged = 0
    # A purged client leaves ``stale``, so each batch is the next one; ordered so ``limit`` takes the oldest.
    while limit is None or purged < limit:
        size = PURGE_BATCH if limit is None else min(PURGE_BATCH, limit - purged)
        batch = list(stale.order_by("created", "pk")[:size])
        for client in batch:
            audit_record(
                event=AuditKind.CLIENT_PURGED, client=None, detail={"client_id": client.client_id, "name": client.name}
            )
            client.delete()
        purged += len(batch)
        if len(batch) < size:
            break
    return purged


def _registration_scope() -> str:
    return str(oauth2_settings.DCR_REGISTRATION_SCOPE)


# ---------------------------------------------------------------------------
# Tokens: revocation by operators. Every /mcp call looks its token up, so a deleted
# access token or a revoked refresh token is refused from the next request on.
# ---------------------------------------------------------------------------
def _revoke_tokens(*, user: Any = None, client: Client | None = None) -> int:
    """Revoke the access tokens, refresh tokens and authorization codes of a person and/or a client.

    Refresh tokens are marked revoked (DOT's ``revoke()``, which also deletes the bound access
    token) rather than deleted: reuse detection needs the tombstone. Registration tokens
    (RFC 7592, no user) are left alone. Returns how many credentials were revoked.
    """
    filters: dict[str, Any] = {}
    if user is not None:
        filters["user"] = user
    if client is not None:
        filters["application"] = client
    if not filters:
        raise ValueError("Name a person or a client.")
    revoked = 0
    for refresh_token in get_refresh_token_model().objects.filter(revoked__isnull=True, **filters):
        refresh_token.revoke()
        revoked += 1
    access_tokens = get_access_token_model().objects.filter(user__isnull=False, **filters)
    revoked += access_tokens.delete()[0]
    revoked += get_grant_model().objects.filter(**filters).delete()[0]
    return revoked


@transaction.atomic
def token_revoke(*, token: Any, operator: Any) -> None:
    """Revoke one access token, refresh token or authorization code (RFC 7009 semantics).

    An access token takes its refresh token with it (DOT's ``revoke_access_token``), so the
    client cannot quietly mint a new one.
    """
    from oauth2_provider.models import revoke_access_token

    kind = type(token).__name__
    if isinstance(token, get_access_token_model()):
        revoke_access_token(token)
    elif isinstance(token, get_refresh_token_model()):
        token.revoke()
    elif isinstance(token, get_grant_model()):
        token.delete()
    else:
        raise TypeError(f"cannot revoke a {kind}")
    audit_record(
        event=AuditKind.TOKEN_REVOKED,
        user=token.user,
        client=token.application,
        detail={"operator": _operator_label(operator), "kind": kind, "id": token.pk},
    )


@transaction.atomic
def user_revoke_all_tokens(*, user: User, operator: Any) -> int:
    """Offboarding: every token and code the person holds, for every client, stops working now.

    Their consents go too, so any client must ask them again. Deactivating the account
    (``is_active``) is what stops them signing in again; this ends what is already out there.
    """
    revoked = _revoke_tokens(user=user)
    consents = Consent.objects.filter(user=user).delete()[0]
    audit_record(
        event=AuditKind.TOKEN_REVOKED,
        user=user,
        detail={"operator": _operator_label(operator), "scope": "all of the person's", "count": revoked},
    )
    logger.info("revoked %d credentials and %d consents of %s", revoked, consents, user.get_username())
    return revoked


@transaction.atomic
def client_revoke_all_tokens(*, client: Client, operator: Any) -> int:
    """Every token and code issued to ``client``, for everyone, stops working now."""
    revoked = _revoke_tokens(client=client)
    audit_record(
        event=AuditKind.TOKEN_REVOKED,
        client=client,
        detail={"operator": _operator_label(operator), "scope": "all of the client's", "count": revoked},
    )
    return revoked


@transaction.atomic
def consent_revoke(*, consent: Consent, operator: Any) -> int:
    """Withdraw a person's approval of a client: the consent and the person's tokens for it.

    The client must send the person through the consent page again to get a new token.
    Returns how many credentials were revoked.
    """
    revoked = _revoke_tokens(user=consent.user, client=consent.client)
    audit_record(
        event=AuditKind.CONSENT_REVOKED,
        user=consent.user,
        client=consent.client,
        detail={"operator": _operator_label(operator), "scopes": consent.scopes, "count": revoked},
    )
    consent.delete()
    return revoked


# ---------------------------------------------------------------------------
# The authorization endpoint and consent
# ---------------------------------------------------------------------------
class ConsentStep(enum.Enum):
    """What the authorization endpoint does next with a valid request (RFC 6749 §4.1.1)."""

    REMEMBERED = "remembered"  # an approval already given covers it: answer without asking
    ASK = "ask"  # show the consent page


def authorization_refusal_record(
    *, request: HttpRequest, error: str, client: Client | None = None, client_id: str = ""
) -> None:
    """Audit a refused authorization request (RFC 6749 §4.1.2.1 ``error``), naming the client if known.

    ``client_id`` is looked up when the request was refused before DOT identified the client.
    """
    if client is None and client_id:
        client = Client.objects.filter(client_id=client_id).first()
    audit_record(event=AuditKind.AUTHORIZE_ERROR, request=request, client=client, detail={"error": error})


def authorization_client_get(*, client_id: str, ip: str | None, host: str, request: HttpRequest) -> Client:
    """The client of an authorization request DOT has validated.

    A client DOT created from its metadata document (CIMD) is noted with where it came from at
    its first authorization request (``client_record_metadata_document``).
    """
    client = Client.objects.get(client_id=client_id)
    if client.registration_source == Client.RegistrationSource.CIMD and not client.registered_host:
        client_record_metadata_document(client=client, ip=ip, host=host, request=request)
    return client


def consent_shown_session_key(client: Client) -> str:
    """The session key holding the redirect URIs the person was shown on the consent page for ``client``."""
    return f"mcpgate.consent_shown.{client.pk}"


def consent_page_prepare(*, request: HttpRequest, client: Client, scopes: list[str], forced: bool) -> ConsentStep:
    """Whether to ask the person (``ConsentStep.ASK``) or answer from an approval already given.

    ``forced``: the client asked for the page (``prompt=consent`` or ``login``). When the page is
    shown it is audited, and the client's redirect URIs are kept in the session: an approval is
    remembered only if the client still has these when it arrives (``consent_record``).
    """
    if not forced and consent_covers(user=request.user, client=client, scopes=scopes):
        return ConsentStep.REMEMBERED
    audit_record(event=AuditKind.CONSENT_SHOWN, request=request, client=client, detail={"scope": " ".join(scopes)})
    request.session[consent_shown_session_key(client)] = client.redirect_uris
    return ConsentStep.ASK


def consent_reuse_record(*, request: HttpRequest, client: Client, scopes: list[str]) -> None:
    """Audit an authorization answered from a remembered approval, without the consent page."""
    audit_record(event=AuditKind.CONSENT_REMEMBERED, request=request, client=client, detail={"scope": " ".join(scopes)})


def consent_covers(*, user: Any, client: Client, scopes: list[str]) -> bool:
    consent = Consent.objects.filter(user=user, client=client).first()
    return consent is not None and consent.covers(scopes)


@transaction.atomic
def consent_record(
    *, user: User, client: Client, scopes: list[str], host: str, redirect_uris_shown: str
) -> Consent | None:
    """Remember an approval; scopes accumulate, so asking for fewer later does not ask again.

    ``redirect_uris_shown`` are the client's redirect URIs when the person was shown the
    consent page. If an RFC 7592 update changed them since (``client_update_registration``
    dropped the consents then), the approval is not remembered: it was given for the old
    URIs. Returns None in that case. The client's row lock orders this with such an update.
    """
    current = Client.objects.select_for_update().filter(pk=client.pk).values_list("redirect_uris", flat=True).first()
    if current is None or set(current.split()) != set(redirect_uris_shown.split()):
        return None
    consent, _ = Consent.objects.select_for_update().get_or_create(user=user, client=client)
    consent.scopes = sorted(set(consent.scopes) | set(scopes))
    consent.host = host
    consent.save()
    return consent
