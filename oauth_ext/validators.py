"""DOT's OAuth2Validator, extended for MCP: audience-bound tokens, refresh grace with hashed storage, audit."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request as OAuthlibRequest
from oauthlib.oauth2.rfc6749 import errors

from . import fastpath, services
from .hosts import Host, host_for_netloc
from .resources import canonical_resource

logger = logging.getLogger(__name__)


def host_of(request: OAuthlibRequest) -> Host:
    """The configured host an oauthlib request came to (HostMiddleware already normalised Host)."""
    host = host_for_netloc(str(request.headers.get("HTTP_HOST", "")))
    if host is None:  # unreachable behind HostMiddleware; fail closed all the same
        raise errors.InvalidRequestError(description="Unknown host.", request=request)
    return host


class MCPGateValidator(OAuth2Validator):
    """Policy on top of DOT: every token is bound to this host's /mcp, refresh has a grace window."""

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

    def _create_authorization_code(self, request: OAuthlibRequest, code: dict[str, str], expires: Any = None) -> Any:
        self._bind_resource(request)
        return super()._create_authorization_code(request, code, expires)

    def _check_and_set_request_resource(self, request: OAuthlibRequest) -> None:
        """RFC 8707 §2.2 at /token: a named resource must be this host's /mcp (in any case form).

        It is then passed on in canonical form, so DOT's check that a token request does
        not widen the grant's or refresh token's resources compares like with like.
        """
        expected = host_of(request).resource
        named = [v for k, v in (getattr(request, "decoded_body", None) or []) if k == "resource"]
        if not named and isinstance(getattr(request, "resource", None), list):
            named = list(request.resource)
        if named:
            request.resource = named
            self._bind_resource(request)
        else:
            request.resource = []
        super()._check_and_set_request_resource(request)
        if not request.resource:  # a grant from before binding existed: bind now
            request.resource = [expected]

    # -- Bearer tokens (RFC 6750) ---------------------------------------------------
    def _load_access_token(self, token: str) -> Any:
        """DOT's lookup (token, user and client in one query), from a statement compiled once.

        Every /mcp call pays for this lookup; see oauth_ext.fastpath for why and what it costs.
        """
        return fastpath.load_access_token(hashlib.sha256(token.encode("utf-8")).hexdigest())

    # -- Refresh: reuse detection with a grace window under hashed storage -------------
    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> bool:
        """RFC 9700 §4.14.2 rotation with reuse detection, plus a short grace window.

        DOT's own grace period returns the previously issued token, which hashed storage
        no longer has (DOT refuses that combination, oauth2_provider.E001). Here a refresh
        token rotated out less than MCPGATE_REFRESH_GRACE_SECONDS ago, whose successor is
        still live, is honoured by minting a *sibling* pair in the same token family (see
        ``_save_bearer_token``): two concurrent refreshes from one client both succeed,
        and a replay after the window still revokes the whole family.

        The grace check and DOT's validation read the token separately; a concurrent
        rotation committed between the two would make DOT see a rotated-out token without
        grace and revoke the family. So both run in one transaction holding the token's
        row lock, which rotation (``_save_bearer_token``) takes too; on SQLite the
        transaction's write lock (``transaction_mode`` IMMEDIATE) does the same.
        """
        checksum = hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()
        with transaction.atomic():
            list(get_refresh_token_model().objects.select_for_update().filter(token_checksum=checksum).values("pk"))
            rt = self._rotated_within_grace(refresh_token)
            if rt is not None:
                request.user = rt.user
                request.refresh_token = refresh_token
                request.refresh_token_instance = rt
                request.mcpgate_grace_sibling = True
                return bool(rt.application == client) and rt.user.is_active
            valid = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
            if not valid:
                self._audit_refresh_failure(refresh_token, request)
        return bool(valid) and request.user.is_active

    def validate_code(
        self, client_id: str, code: str, client: Any, request: OAuthlibRequest, *args: Any, **kwargs: Any
    ) -> bool:
        """A disabled person gets no tokens, from a code or (above) a refresh token."""
        return bool(super().validate_code(client_id, code, client, request, *args, **kwargs)) and request.user.is_active

    def _rotated_within_grace(self, refresh_token: str) -> Any:
        grace = settings.MCPGATE_REFRESH_GRACE_SECONDS
        if grace <= 0:
            return None
        checksum = hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()
        refresh_model = get_refresh_token_model()
        rt = (
            refresh_model.objects.filter(token_checksum=checksum, revoked__isnull=False)
            .select_related("user", "application")
            .order_by(F("revoked").desc())
            .first()
        )
        if rt is None or rt.revoked <= timezone.now() - timedelta(seconds=grace):
            return None
        # Superseded by rotation (its successor access token still exists), not revoked on purpose.
        if not get_access_token_model().objects.filter(source_refresh_token=rt).exists():
            return None
        if refresh_model.objects.filter(token_checksum=checksum, revoked__isnull=True).exists():
            return None  # a live row with this value exists: let DOT handle it normally
        return rt

    def _audit_refresh_failure(self, refresh_token: str, request: OAuthlibRequest) -> None:
        checksum = hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()
        rt = (
            get_refresh_token_model()
            .objects.filter(token_checksum=checksum, revoked__isnull=False)
            .select_related("user", "application")
            .first()
        )
        if rt is not None:
            # DOT has just revoked the family (REFRESH_TOKEN_REUSE_PROTECTION).
            services.audit_record(
                event="refresh_reuse",
                user=rt.user,
                client=rt.application,
                host=host_of(request).name,
                detail={"token_family": str(rt.token_family)},
            )

    def _save_bearer_token(self, token: dict[str, Any], request: OAuthlibRequest, *args: Any, **kwargs: Any) -> Any:
        if request.grant_type == "refresh_token":
            rt = request.refresh_token_instance
            locked = get_refresh_token_model().objects.select_for_update().get(pk=rt.pk)
            if locked.revoked is not None and not getattr(request, "mcpgate_grace_sibling", False):
                # Lost a race with a concurrent request on the same refresh token. A concurrent
                # rotation (the successor exists) is what the grace window is for; a concurrent
                # revocation is final.
                superseded = get_access_token_model().objects.filter(source_refresh_token=locked).exists()
                if not superseded or settings.MCPGATE_REFRESH_GRACE_SECONDS <= 0:
                    raise errors.InvalidGrantError(request=request)
                request.mcpgate_grace_sibling = True
            if getattr(request, "mcpgate_grace_sibling", False):
                self._mint_sibling_pair(token, request, locked)
                self._after_issue(request, refreshed=True)
                return None
        result = super()._save_bearer_token(token, request, *args, **kwargs)
        self._after_issue(request, refreshed=request.grant_type == "refresh_token")
        return result

    def _mint_sibling_pair(self, token: dict[str, Any], request: OAuthlibRequest, rotated: Any) -> None:
        """A new access + refresh token in the rotated token's family (never a reissue of old values)."""
        self._check_and_set_request_resource(request)
        expires = timezone.now() + timedelta(seconds=token.get("expires_in", settings.MCPGATE_ACCESS_TOKEN_SECONDS))
        access_token = self._create_access_token(expires, request, token, source_refresh_token=None)
        self._create_refresh_token(request, token["refresh_token"], access_token, rotated)
        request.refresh_token_instance = None

    def _after_issue(self, request: OAuthlibRequest, *, refreshed: bool) -> None:
        services.client_mark_used(client=request.client)
        services.audit_record(
            event="token_refreshed" if refreshed else "token_issued",
            user=request.user,
            client=request.client,
            host=host_of(request).name,
            detail={"scope": " ".join(request.scopes or []), "resource": list(request.resource or [])},
        )
