"""DRF bearer authentication for protected resources on this server (/mcp, and any DRF API)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from oauth2_provider.www_authenticate import build_bearer_challenge
from rest_framework import exceptions
from rest_framework.request import Request

from mcpgate.hosts import host_for_request
from oauth_ext.scopes import BASIC_SCOPE


def _presented_bearer(request: Request) -> bool:
    return request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "


class MCPBearerAuthentication(OAuth2Authentication):
    """RFC 6750 §2.1 bearer tokens, audience-checked against this host's resource (RFC 8707).

    DOT validates the token (one query: token, user and client together), its expiry and
    that its client is usable (not disabled). On top of that:

    - the token must carry this host's resource as its audience: DOT lets a token with no
      resource through as "unrestricted" (e.g. RFC 7592 registration tokens), this does not
      (checklist R2, R3: no token issued for anything else is accepted);
    - the person must be active (operators disable people; it takes effect on the next call).

    A 401 always carries ``WWW-Authenticate: Bearer`` with ``resource_metadata`` (RFC 9728
    §5.1, checklist D3) and ``scope``, plus ``error="invalid_token"`` when a token was sent.
    Being the first authentication class, it also keeps DRF from turning 401 into 403.
    """

    www_authenticate_realm = ""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            if _presented_bearer(request) and not getattr(request, "oauth2_error", None):
                request.oauth2_error = OrderedDict(
                    [("error", "invalid_token"), ("error_description", "The access token is invalid.")]
                )
            return None
        user, token = result
        if host_for_request(request) is None or host_for_request(request).resource not in (token.resource or []):
            self._fail(request, "The access token was not issued for this resource.")
        if user is None or not user.is_active:
            self._fail(request, "The access token's user is disabled.")
        return user, token

    def _fail(self, request: Request, description: str) -> None:
        request.oauth2_error = OrderedDict([("error", "invalid_token"), ("error_description", description)])
        raise exceptions.AuthenticationFailed(description)

    def authenticate_header(self, request: Request) -> str:
        error: dict[str, str] = dict(getattr(request, "oauth2_error", None) or {})
        error.setdefault("scope", BASIC_SCOPE)
        return str(
            build_bearer_challenge(
                request, oauth2_error=error, resource_metadata_url=host_for_request(request).resource_metadata_url
            )
        )
