"""The token and revocation endpoints (RFC 6749 §3.2, RFC 7009), on DOT's views."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse
from oauth2_provider.models import get_access_token_model
from oauth2_provider.views import (
    RevokeTokenView,
    TokenView,
)

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate.errors import refusal

from ..models import Client
from ..registration import SUPPORTED_GRANT_TYPES
from ..text import NUL
from .common import (
    BASIC_CHALLENGE,
    CODE_VERIFIER,
    ERROR_DESCRIPTIONS,
    MALFORMED_VERIFIER,
    basic_credentials,
    client_request_problem,
    printable,
    with_error_description,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# /oauth/token and /oauth/revoke
# ---------------------------------------------------------------------------
def _client_id_of(request: HttpRequest) -> str:
    """The client_id a token-endpoint request names (body or Basic user part), for the audit; "" if unusable."""
    client_id = request.POST.get("client_id", "") or (basic_credentials(request) or ("", ""))[0]
    return "" if NUL in client_id else client_id[:255]


class TokenEndpointView(TokenView):
    """RFC 6749 §3.2 token endpoint (authorization_code with PKCE, refresh_token); refusals audited."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = self._malformed(request) or with_error_description(request, super().post(request, *args, **kwargs))
        if response.status_code == 401:
            # RFC 6749 §5.2: the challenge names the scheme clients authenticate with here
            # (oauthlib answers with a Bearer challenge, which is the resource server's scheme).
            response["WWW-Authenticate"] = BASIC_CHALLENGE
        if response.status_code != 200:
            try:
                error = json.loads(response.content).get("error", "")
            except ValueError:
                error = ""
            client_id = _client_id_of(request)
            audit_record(
                event=AuditKind.TOKEN_ERROR,
                request=request,
                client=Client.objects.filter(client_id=client_id).first() if client_id else None,
                detail={"error": error, "grant_type": printable(request.POST.get("grant_type", ""), 64)},
            )
        return response

    def authorization_flow_token_response(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """DOT's answer, or ``invalid_grant`` when the tokens were revoked before it was written.

        After issuing, DOT looks the new access token up again with ``.get()`` (for its
        app_authorized signal). A concurrent request that proved the code or refresh token was
        used twice (oauth_ext.validators) may have revoked it in between: the tokens in the body
        are dead, and the answer is RFC 6749 §5.2 ``invalid_grant``.
        """
        try:
            response: HttpResponse = super().authorization_flow_token_response(request, *args, **kwargs)
        except get_access_token_model().DoesNotExist:
            return refusal(request, status=400, error="invalid_grant", description=ERROR_DESCRIPTIONS["invalid_grant"])
        return response

    @staticmethod
    def _malformed(request: HttpRequest) -> HttpResponse | None:
        """The refusal of a request oauthlib must not see, or None.

        A NUL anywhere, undecodable Basic credentials or a repeated parameter
        (``client_request_problem``); a grant type this server does not serve;
        an RFC 7636 §4.1 code_verifier of the wrong length or alphabet (oauthlib compares its
        hash only, so a short, guessable verifier would pass). oauthlib reads parameters from
        the query string too, so every code_verifier there is checked as well.
        """
        problem = client_request_problem(request)
        if problem is not None:
            return problem
        grant_type = request.POST.get("grant_type")
        if grant_type not in SUPPORTED_GRANT_TYPES:
            return refusal(
                request,
                status=400,
                error="unsupported_grant_type",
                description="This server supports authorization_code and refresh_token.",
            )
        verifiers = request.GET.getlist("code_verifier") + request.POST.getlist("code_verifier")
        if grant_type == "authorization_code" and not all(CODE_VERIFIER.fullmatch(v) for v in verifiers):
            return refusal(request, status=400, error="invalid_request", description=MALFORMED_VERIFIER)
        return None


class RevokeEndpointView(RevokeTokenView):
    """RFC 7009 revocation; the token value itself is never recorded."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        problem = client_request_problem(request)  # RFC 7009 §2.2.1: RFC 6749 §5.2 errors
        if problem is not None:
            return problem
        response = with_error_description(request, super().post(request, *args, **kwargs))
        if response.status_code == 200:
            client_id = _client_id_of(request)
            audit_record(
                event=AuditKind.TOKEN_REVOKED,
                request=request,
                client=Client.objects.filter(client_id=client_id).first() if client_id else None,
                detail={"token_type_hint": printable(request.POST.get("token_type_hint", ""), 32)},
            )
        return response
