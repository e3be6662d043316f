"""DRF bearer authentication for protected resources on this server (/mcp, and any DRF API)."""

from __future__ import annotations

import hashlib
from typing import Any

from django.http import HttpRequest
from django.utils.encoding import escape_uri_path
from oauth2_provider.bcp import bcp_compliant
from oauth2_provider.contrib.rest_framework import OAuth2ProtectedResourceAuthentication
from rest_framework import exceptions
from rest_framework.request import Request

from mcpgate.hosts import host_for_request
from oauth_ext.scopes import BASIC_SCOPE

from . import tokens

INVALID = "The access token is invalid."
EXPIRED = "The access token has expired."
WRONG_AUDIENCE = "The access token is not valid for this resource."
NOT_ISSUED_HERE = "The access token was not issued for this resource."
USER_DISABLED = "The access token's user is disabled."


class MCPBearerAuthentication(OAuth2ProtectedResourceAuthentication):
    """RFC 6750 §2.1 bearer tokens, audience-checked against this host's resource (RFC 8707).

    The challenge is DOT's (``OAuth2ProtectedResourceAuthentication``): ``WWW-Authenticate:
    Bearer`` with ``resource_metadata`` (RFC 9728 §5.1, checklist D3), here this host's
    document, plus ``scope`` and, when a token was sent, ``error="invalid_token"``. Being the
    first authentication class, it also keeps DRF from turning 401 into 403.

    The token itself is not validated through DOT's ``OAuth2Authentication.authenticate``:
    that builds an oauthlib request from the whole Django request and looks the token up
    through the authorization server's validator, on every /mcp call. This resource server
    reads the token with its own one-statement lookup (``mcp_bridge.tokens``) and applies
    the checks of DOT's ``validate_bearer_token``, in its order, through the models' public
    methods, then its own:

    - no token in the URL query (RFC 9700 §4.3.2, DOT's ``COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT``);
    - the token exists (a revoked token is deleted) and has not expired (``is_expired``);
    - a token bound to resources is good for this URL (``allows_audience``, RFC 8707);
    - its client may be used (``Client.is_usable``: not disabled);
    - it carries this host's resource as its audience: DOT lets a token with no resource
      through as "unrestricted" (e.g. RFC 7592 registration tokens), this does not
      (checklist R2, R3: no token issued for anything else is accepted);
    - the person is active (operators disable people; it takes effect on the next call).

    Scopes are the endpoint's to check: they depend on the tool called (RFC 6750 §3.1).
    """

    www_authenticate_realm = ""  # no realm parameter in the challenge

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        """``request``: DRF's, or the plain HttpRequest at /mcp (whose body belongs to the SDK)."""
        checksum = self.presented(request)
        if checksum is None:
            return None  # not a bearer token: not this class's scheme
        return self.verify(request, tokens.load_access_token(checksum))

    def presented(self, request: Any) -> str | None:
        """The checksum of the bearer token the request presents (DOT's ``token_checksum``), to look up;
        None when it presents none. A malformed one fails (``AuthenticationFailed``)."""
        request.oauth2_error = {"scope": BASIC_SCOPE}
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        if authorization[:7].lower() != "bearer ":
            return None
        parts = authorization.split()
        if len(parts) != 2 or ("access_token" in request.GET and self._token_in_query_refused()):
            self._fail(request, INVALID)
        return hashlib.sha256(parts[1].encode("utf-8")).hexdigest()

    def verify(self, request: Any, token: Any) -> tuple[Any, Any]:
        """The checks above on the token ``presented`` found (None: none was), no database work:
        (user, token), or ``AuthenticationFailed``."""
        if token is None:
            self._fail(request, INVALID)
        if token.is_expired():
            self._fail(request, EXPIRED)
        if token.resource and not token.allows_audience(request.build_absolute_uri(escape_uri_path(request.path))):
            self._fail(request, WRONG_AUDIENCE)
        # DOT hands is_usable the oauthlib request; Client.is_usable needs neither.
        if token.application is not None and not token.application.is_usable(request):
            self._fail(request, INVALID)
        host = host_for_request(request)
        if host is None or host.resource not in (token.resource or []):
            self._fail(request, NOT_ISSUED_HERE)
        user = token.user
        if user is None or not user.is_active:
            self._fail(request, USER_DISABLED)
        return user, token

    @staticmethod
    def _token_in_query_refused() -> bool:
        return bool(
            bcp_compliant(
                "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT",
                "Presenting an OAuth 2.0 access token in the URI query string",
            )
        )

    @staticmethod
    def _fail(request: Any, description: str) -> None:
        """RFC 6750 §3.1 ``invalid_token``: the challenge and the endpoint's body say why."""
        request.oauth2_error = {"error": "invalid_token", "error_description": description, "scope": BASIC_SCOPE}
        raise exceptions.AuthenticationFailed(description)

    def get_resource_metadata_url(self, request: Request | HttpRequest) -> str | None:
        """RFC 9728 §3.1: this host's protected resource metadata (each host is its own resource)."""
        host = host_for_request(request)
        return host.resource_metadata_url if host is not None else None
