"""DOT's OAuth2Validator, extended for MCP: audience binding, single-use codes, refresh grace, client secrets, audit."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.db import router, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
    set_token_value,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OAuthlibRequest
from oauthlib.oauth2.rfc6749 import errors

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate.hosts import Host, host_for_netloc

from . import services
from .redirects import redirect_uri_shape_problem
from .resources import canonical_resource

logger = logging.getLogger(__name__)


def host_of(request: OAuthlibRequest) -> Host:
    """The configured host an oauthlib request came to (HostMiddleware already normalised Host)."""
    host = host_for_netloc(str(request.headers.get("HTTP_HOST", "")))
    if host is None:  # unreachable behind HostMiddleware; fail closed all the same
        raise errors.InvalidRequestError(description="Unknown host.", request=request)
    return host


# RFC 9562 §5.5 name space of the token families of authorization codes (see code_token_family).
CODE_FAMILY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mcpgate:authorization-code")


def checksum(value: str) -> str:
    """SHA-256 hex digest: how DOT stores tokens (``token_checksum``), and how codes are named here."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def code_token_family(code: str) -> uuid.UUID:
    """The token family of the tokens issued for an authorization code, derived from the code.

    RFC 6749 §4.1.2 and RFC 9700 §4.2.4: when a code is redeemed twice, the authorization
    server SHOULD revoke all tokens previously issued based on it. DOT deletes the grant on
    redemption and starts each refresh token family with a random UUID, which leaves nothing
    to find those tokens by. A name-based UUID (RFC 9562 §5.5) of the code's SHA-256 checksum
    instead: rotations and grace siblings inherit the family (RFC 9700 §4.14.2), so a replay
    of the code finds every token descended from its redemption, and no code is stored. The
    family reveals nothing of the code, and never matches a random (version 4) family.
    """
    return uuid.uuid5(CODE_FAMILY_NAMESPACE, checksum(code))


class CodeAlreadyRedeemed(Exception):
    """Raised inside the token transaction when the code's grant is gone: another request redeemed it."""


class RefreshTokenReused(Exception):
    """Raised inside the token transaction when a rotated refresh token may no longer be honoured."""

    def __init__(self, refresh_token: Any) -> None:
        super().__init__("refresh token reused")
        self.refresh_token = refresh_token


class MCPGateValidator(OAuth2Validator):
    """Policy on top of DOT: audience-bound tokens, single-use codes, one grace sibling, fast client secrets."""

    # -- RFC 6749 §4.1.3: the code is bound to the redirect URI presented -----------
    def get_default_redirect_uri(self, client_id: str, request: OAuthlibRequest, *args: Any, **kwargs: Any) -> None:
        """No default: ``redirect_uri`` is required at /oauth/authorize and at /oauth/token.

        oauthlib substitutes the client's first registered URI when the parameter is
        omitted, so a token request without ``redirect_uri`` would pass whenever the
        authorization request used that URI, although RFC 6749 §4.1.3 requires it to be
        repeated. Loopback clients vary the port (RFC 8252 §7.3), so a default would be
        wrong for them anyway. oauthlib answers a missing value with ``invalid_request``.
        """
        return None

    def validate_redirect_uri(
        self, client_id: str, redirect_uri: str, request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> bool:
        """RFC 6749 §3.1.2.3, RFC 9700 §2.1: DOT's exact match, and the URI must also be clean.

        The presented URI equals a registered one (DOT), so this re-checks stored URIs: a client
        registered before oauth_ext.redirects refused dot segments and backslashes gets no code.
        Only the shape is checked, not the allowlist again, so removing an allowlist entry later
        does not cut off clients registered under it (operators disable those explicitly).
        """
        if redirect_uri_shape_problem(redirect_uri) is not None:
            return False
        return bool(super().validate_redirect_uri(client_id, redirect_uri, request, *args, **kwargs))

    # -- RFC 8707: audience binding -------------------------------------------------
    def _bind_resource(self, request: OAuthlibRequest) -> None:
        """RFC 8707 §2: the only resource here is this host's /mcp; no resource means that one too.

        A request that names another resource (another host's /mcp included) gets
        ``invalid_target``; so no token is ever minted without an audience.
        """
        expected = host_of(request).resource
        requested = getattr(request, "resource", None) or []
        if isinstance(requested, str):
            requested = requested.split()
        for value in requested:
            if canonical_resource(value) != expected:
                raise errors.CustomOAuth2Error(
                    error="invalid_target",
                    description=f"Unknown resource; this server issues tokens for {expected} only.",
                    request=request,
                )
        request.resource = [expected]

    def save_authorization_code(
        self, client_id: str, code: dict[str, str], request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> None:
        """RFC 8707 §2.1 at /authorize: the grant (and every token from it) is bound to this host's /mcp."""
        self._bind_resource(request)
        super().save_authorization_code(client_id, code, request, *args, **kwargs)

    def _bind_token_resource(self, request: OAuthlibRequest, *, inherited: list[str] | None) -> None:
        """RFC 8707 §2.2 at /token, before DOT saves: a named resource must be this host's /mcp.

        It is passed on in canonical form, so DOT's check that a token request does not widen
        the grant's or refresh token's resources (``inherited``) compares like with like. With
        none named, DOT gives the tokens the inherited resources; a grant or refresh token from
        before binding existed has none, and its tokens are bound to this host's /mcp now.
        """
        named = [v for k, v in (getattr(request, "decoded_body", None) or []) if k == "resource"]
        if not named and isinstance(getattr(request, "resource", None), list):
            named = list(request.resource)
        if named:
            request.resource = named
            self._bind_resource(request)
        elif inherited:
            request.resource = []
        else:
            request.resource = [host_of(request).resource]

    # -- Client authentication (RFC 6749 §2.3.1) ------------------------------------
    def _check_secret(self, provided_secret: str, stored_secret: str) -> bool:
        """Verify a client secret; one stored by an earlier hasher moves to CLIENT_SECRET_HASHER on success.

        A private DOT hook, the one this validator still overrides: no public one serves. It is
        the one place where both of DOT's client authentication methods (HTTP Basic and the
        request body) verify a secret, and DOT calls ``check_password`` there without a setter:
        a secret stored with PBKDF2 at 1,000,000 iterations would stay so, and each wrong guess
        at it would cost half a second of CPU for good (issue 8, finding 1; see
        oauth_ext.hashers). The public ``authenticate_client`` would mean copying DOT's two
        private methods that parse the credentials (``_authenticate_basic_auth``,
        ``_authenticate_request_body``) instead of one that compares them. tests/oauth_ext/
        test_library_contracts.py pins its name, parameters and meaning, and that DOT calls it
        for both methods; tests/security/test_client_secret_hashing.py the same through HTTP.

        - An empty stored secret (a public client's, Client.clean) or an empty one presented
          authenticates nobody, and costs no hashing. DOT would compare two empty strings as
          equal, and would verify a stored hash of the empty string.
        - A secret stored unhashed (``hash_client_secret`` off) is compared in constant time.
        - Otherwise Django's ``check_password``; on success, when the stored hash was not made
          by CLIENT_SECRET_HASHER, the row holding exactly that hash is rewritten with it.
        """
        if not provided_secret or not stored_secret:
            return False
        try:
            identify_hasher(stored_secret)
        except ValueError:
            return constant_time_compare(provided_secret, stored_secret)
        hasher = oauth2_settings.CLIENT_SECRET_HASHER

        def rehash(secret: str) -> None:
            get_application_model().objects.filter(client_secret=stored_secret).update(
                client_secret=make_password(secret, hasher=hasher)
            )

        return bool(check_password(provided_secret, stored_secret, setter=rehash, preferred=hasher))

    # -- Authorization codes: single use (RFC 6749 §4.1.2, RFC 9700 §4.2.4) -----------
    def validate_code(
        self, client_id: str, code: str, client: Any, request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> bool:
        """RFC 6749 §4.1.3, and a disabled person gets no tokens (nor, below, from a refresh token).

        DOT's ``validate_code`` (the grant is this client's and unexpired; its scopes, person,
        nonce and claims go on the request), with the grant and its person read in one SELECT
        that the rest of the token request reuses: oauthlib then asks for the PKCE challenge and
        method (RFC 7636 §4.6) and to confirm the redirect URI (§4.1.3), for which DOT reads the
        grant again each time, and its person once more: five SELECTs became one.

        A code that is no longer valid may be one that was redeemed: then it is being used a
        second time, and the tokens issued for it are revoked (``_revoke_code_family``).
        Redemption itself is decided under the grant's row lock (``_redeem_code``).
        """
        grant = get_grant_model().objects.select_related("user").filter(code=code, application=client).first()
        request.mcpgate_grant = grant
        if grant is None or grant.is_expired():
            self._revoke_code_family(code, request)
            return False
        request.scopes = grant.scope.split(" ")
        request.user = grant.user
        if grant.nonce:
            request.nonce = grant.nonce
        if grant.claims:
            request.claims = json.loads(grant.claims)
        return bool(request.user.is_active)

    def get_code_challenge(self, code: str, request: OAuthlibRequest) -> str | None:
        return self._validated_grant(code, request).code_challenge or None

    def get_code_challenge_method(self, code: str, request: OAuthlibRequest) -> str | None:
        return self._validated_grant(code, request).code_challenge_method or None

    def confirm_redirect_uri(
        self,
        client_id: str,
        code: str,
        redirect_uri: str,
        client: Any,
        request: OAuthlibRequest,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        return bool(self._validated_grant(code, request).redirect_uri_allowed(redirect_uri))

    @staticmethod
    def _validated_grant(code: str, request: OAuthlibRequest) -> Any:
        """The grant ``validate_code`` read for this request (oauthlib asks for these only after it passed)."""
        grant = getattr(request, "mcpgate_grant", None)
        if grant is None or grant.code != code:
            raise errors.InvalidGrantError(request=request)
        return grant

    def invalidate_authorization_code(
        self, client_id: str, code: str, request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> None:
        """Nothing left to do: ``_redeem_code`` deleted the grant with the tokens it issued."""

    def _redeem_code(self, token: dict[str, Any], request: OAuthlibRequest, *args: Any, **kwargs: Any) -> Any:
        """Spend the code in the transaction that issues its tokens (RFC 6749 §4.1.2: use it once).

        DOT deletes the grant after the tokens are saved, in a statement of its own
        (``invalidate_authorization_code``), so concurrent redemptions could all pass
        validation and save tokens. Here the grant's row is locked first (SQLite: the
        IMMEDIATE transaction holds the write lock), the tokens are issued in the code's
        family (``code_token_family``) and the grant is deleted before commit. A request
        that finds the grant gone is a second use of the code; since it is gone only once
        the winner's tokens are committed, revoking the family afterwards finds them.
        """
        grant_model = get_grant_model()
        grant = grant_model.objects.select_for_update().filter(code=request.code, application=request.client).first()
        if grant is None:
            raise CodeAlreadyRedeemed
        self._bind_token_resource(request, inherited=grant.resource)
        result = super().save_bearer_token(token, request, *args, **kwargs)
        if token.get("refresh_token"):
            get_refresh_token_model().objects.filter(token_checksum=checksum(token["refresh_token"])).update(
                token_family=code_token_family(request.code)
            )
        grant_model.objects.filter(pk=grant.pk).delete()
        self._after_issue(request, refreshed=False)
        return result

    def _revoke_code_family(self, code: str, request: OAuthlibRequest) -> None:
        """A redeemed code presented again: revoke every token descended from it, and record it.

        RFC 6749 §4.1.2 and RFC 9700 §4.2.4 (tokens issued from a code used twice SHOULD be
        revoked): the refresh tokens of the code's family, rotated and sibling ones included,
        and their access tokens (DOT's ``revoke_family``). The server cannot tell the client
        from a thief, so both lose them, and the person signs in again. A code never redeemed
        (made up, expired unused, another client's) has no family: nothing is done.
        """
        family = code_token_family(code)
        refresh_model = get_refresh_token_model()
        first = refresh_model.objects.filter(token_family=family).select_related("user", "application").first()
        if first is None:
            return
        refresh_model.revoke_family(family)
        logger.warning("authorization code presented again: token family %s revoked", family)
        audit_record(
            event=AuditKind.CODE_REUSE,
            user=first.user,
            client=first.application,
            host=host_of(request).name,
            detail={"token_family": str(family)},
        )

    # -- Refresh: rotation, reuse detection, one grace sibling (RFC 9700 §4.14.2) -----
    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> bool:
        """RFC 9700 §4.14.2 rotation with reuse detection, plus a short grace window.

        DOT's own grace period returns the previously issued token, which hashed storage
        no longer has (DOT refuses that combination, oauth2_provider.E001). Here a refresh
        token rotated out less than MCPGATE_REFRESH_GRACE_SECONDS ago, whose successor is
        still live and which has not had its sibling yet, is honoured by minting one
        *sibling* pair in the same token family (``_mint_sibling_pair``): two concurrent
        refreshes from one client both succeed, and any further use of the token, inside
        the window or after it, revokes the whole family.

        The grace check and DOT's validation read the token separately; a concurrent
        rotation committed between the two would make DOT see a rotated-out token without
        grace and revoke the family. So both run in one transaction holding the token's
        row lock, which rotation (``_refresh``) takes too; on SQLite the
        transaction's write lock (``transaction_mode`` IMMEDIATE) does the same.
        """
        with transaction.atomic():
            rows = list(
                get_refresh_token_model()
                .objects.select_for_update()
                .filter(token_checksum=checksum(refresh_token))
                .values_list("revoked", flat=True)
            )
            # Only a rotated-out (revoked) row can have a grace sibling: a live token skips the check.
            rt = self._rotated_within_grace(refresh_token) if any(r is not None for r in rows) else None
            if rt is not None:
                request.user = rt.user
                request.refresh_token = refresh_token
                request.refresh_token_instance = rt
                return bool(rt.application == client) and rt.user.is_active
            valid = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
            if not valid:
                self._audit_refresh_failure(refresh_token, request)
        return bool(valid) and request.user.is_active

    def _rotated_within_grace(self, refresh_token: str) -> Any:
        """The refresh token ``refresh_token`` names, when it may still have its one sibling pair."""
        grace = settings.MCPGATE_REFRESH_GRACE_SECONDS
        if grace <= 0:
            return None
        value = checksum(refresh_token)
        refresh_model = get_refresh_token_model()
        rt = (
            refresh_model.objects.filter(token_checksum=value, revoked__isnull=False)
            .select_related("user", "application")
            .order_by(F("revoked").desc())
            .first()
        )
        if rt is None or rt.revoked <= timezone.now() - timedelta(seconds=grace):
            return None
        # Superseded by rotation (its successor access token still names it), not revoked on
        # purpose, and without a sibling yet (minting one clears that name: _mint_sibling_pair).
        if not get_access_token_model().objects.filter(source_refresh_token=rt).exists():
            return None
        if refresh_model.objects.filter(token_checksum=value, revoked__isnull=True).exists():
            return None  # a live row with this value exists: let DOT handle it normally
        return rt

    def _audit_refresh_failure(self, refresh_token: str, request: OAuthlibRequest) -> None:
        rt = (
            get_refresh_token_model()
            .objects.filter(token_checksum=checksum(refresh_token), revoked__isnull=False)
            .select_related("user", "application")
            .first()
        )
        if rt is not None:
            # DOT has just revoked the family (REFRESH_TOKEN_REUSE_PROTECTION).
            self._audit_refresh_reuse(rt, request)

    def _audit_refresh_reuse(self, rt: Any, request: OAuthlibRequest) -> None:
        audit_record(
            event=AuditKind.REFRESH_REUSE,
            user=rt.user,
            client=rt.application,
            host=host_of(request).name,
            detail={"token_family": str(rt.token_family)},
        )

    # -- Saving tokens ----------------------------------------------------------------
    def save_bearer_token(self, token: dict[str, Any], request: OAuthlibRequest, *args: Any, **kwargs: Any) -> Any:
        """Issue the tokens in one transaction; a reuse found inside it is acted on once that has rolled back.

        DOT's ``save_bearer_token`` does the saving, in a savepoint of this transaction, which
        holds what must be decided with it: the code's grant (``_redeem_code``) or the
        presented refresh token (``_refresh``), locked. The refusal is RFC 6749 §5.2
        ``invalid_grant``, as for any spent code or refresh token.
        """
        try:
            with transaction.atomic(using=router.db_for_write(get_access_token_model())):
                if request.grant_type == "authorization_code":
                    return self._redeem_code(token, request, *args, **kwargs)
                if request.grant_type == "refresh_token":
                    return self._refresh(token, request, *args, **kwargs)
                self._bind_token_resource(request, inherited=None)  # the token view serves no other grant
                return super().save_bearer_token(token, request, *args, **kwargs)
        except CodeAlreadyRedeemed:
            self._revoke_code_family(request.code, request)
        except RefreshTokenReused as reuse:
            get_refresh_token_model().revoke_family(reuse.refresh_token.token_family)
            self._audit_refresh_reuse(reuse.refresh_token, request)
        raise errors.InvalidGrantError(request=request)

    def _refresh(self, token: dict[str, Any], request: OAuthlibRequest, *args: Any, **kwargs: Any) -> Any:
        """RFC 6749 §6 with rotation: DOT rotates a live refresh token; a rotated one may get its sibling."""
        presented = request.refresh_token_instance
        locked = get_refresh_token_model().objects.select_for_update().get(pk=presented.pk)
        result = None
        if locked.revoked is None:
            self._bind_token_resource(request, inherited=presented.resource)
            result = super().save_bearer_token(token, request, *args, **kwargs)  # DOT rotates it
        else:
            # Rotated since it was validated (a concurrent refresh), or it was validated for
            # its grace sibling: decided again here, under its row lock.
            self._mint_sibling_pair(token, request, locked)
        self._after_issue(request, refreshed=True)
        return result

    def _mint_sibling_pair(self, token: dict[str, Any], request: OAuthlibRequest, rotated: Any) -> None:
        """One new access + refresh token in the rotated token's family (never a reissue of old values).

        At most one per rotated token: the grace window is for a client whose two refreshes
        crossed, and a third use is a copy of the token in other hands (RFC 9700 §4.14.2).
        ``rotated`` is locked by the caller, so concurrent requests decide one at a time. It
        qualifies while it is inside the window and its successor access token (from the
        rotation) still names it as its source; minting the sibling clears that name, so the
        next request with ``rotated``, here or in ``validate_refresh_token``, is reuse and
        revokes the family. Once the successor is itself rotated (which deletes it) the
        token no longer qualifies either, as in DOT.
        """
        grace = settings.MCPGATE_REFRESH_GRACE_SECONDS
        successor = get_access_token_model().objects.select_for_update().filter(source_refresh_token=rotated).first()
        if successor is None or grace <= 0 or rotated.revoked <= timezone.now() - timedelta(seconds=grace):
            raise RefreshTokenReused(rotated)
        get_access_token_model().objects.filter(pk=successor.pk).update(source_refresh_token=None)
        self._bind_token_resource(request, inherited=rotated.resource)
        resource = request.resource or list(rotated.resource)
        beyond = [res for res in resource if rotated.resource and res not in rotated.resource]
        if beyond:  # as DOT refuses a rotation asking for more than the refresh token's resources
            raise errors.CustomOAuth2Error(
                error="invalid_target",
                description=(
                    f"The requested resource '{beyond[0]}' is not allowed. Token refresh cannot "
                    "request resources beyond the original refresh token scope"
                ),
                request=request,
            )
        expires = timezone.now() + timedelta(seconds=token.get("expires_in", settings.MCPGATE_ACCESS_TOKEN_SECONDS))
        # Built as DOT builds a rotated pair, from the models and set_token_value (hashed storage:
        # checksums only); the refresh token joins the rotated one's family.
        access_token = get_access_token_model()(
            user=request.user,
            scope=token["scope"],
            expires=expires,
            application=request.client,
            source_refresh_token=None,
            resource=resource,
        )
        set_token_value(access_token, token["access_token"])
        access_token.save()
        refresh_token = get_refresh_token_model()(
            user=request.user,
            application=request.client,
            access_token=access_token,
            token_family=rotated.token_family,
            resource=resource,
        )
        set_token_value(refresh_token, token["refresh_token"])
        refresh_token.save()
        request.refresh_token_instance = None

    def _after_issue(self, request: OAuthlibRequest, *, refreshed: bool) -> None:
        services.client_mark_used(client=request.client)
        audit_record(
            event=AuditKind.TOKEN_REFRESHED if refreshed else AuditKind.TOKEN_ISSUED,
            user=request.user,
            client=request.client,
            host=host_of(request).name,
            detail={"scope": " ".join(request.scopes or []), "resource": list(request.resource or [])},
        )
