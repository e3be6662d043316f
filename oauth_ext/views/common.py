"""Request checks the OAuth views share (NUL and encoding checks) and the descriptions of oauthlib's errors."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, HttpResponse
from oauthlib.common import INVALID_HEX_PATTERN

from mcpgate.errors import refusal

from ..text import NUL, NUL_IN_REQUEST, contains_nul, nul_in_parameters

logger = logging.getLogger(__name__)


# RFC 6749 §5.2 and RFC 7009 §2.2.1 codes that oauthlib sends without a description.
ERROR_DESCRIPTIONS = {
    "invalid_request": "The request is missing a parameter or is otherwise malformed.",
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The code or refresh token is invalid, expired, revoked, or was issued to another client.",
    "unauthorized_client": "This client may not use this grant type.",
    "unsupported_grant_type": "This server supports authorization_code and refresh_token.",
    "invalid_scope": "The requested scope is invalid or exceeds what was granted.",
    "unsupported_token_type": "This server cannot revoke that type of token.",
}


# oauthlib's and DOT's headers that describe the body they wrote, which the refusal writes anew.
_BODY_HEADERS = frozenset({"content-type", "content-length", "cache-control", "pragma"})


def with_error_description(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A JSON error from DOT's token or revocation core in our shape (mcpgate.errors.refusal).

    oauthlib leaves ``error_description`` out for most codes; ours always has one. Its other
    headers (WWW-Authenticate on a 401) are kept. An error raised while the token is being saved
    (RFC 8707 ``invalid_target``) reaches DOT without oauthlib's headers: the refusal has them all.
    Any other response is returned as it is.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        return response
    if not isinstance(body, dict) or not body.get("error"):
        return response
    error = str(body["error"])
    return refusal(
        request,
        status=response.status_code,
        error=error,
        description=str(body.get("error_description") or ERROR_DESCRIPTIONS.get(error, "The request was refused.")),
        headers={name: value for name, value in response.items() if name.lower() not in _BODY_HEADERS},
    )


def with_iss(uri: str, issuer: str) -> str:
    """``uri`` with exactly one RFC 9207 ``iss`` query parameter, ``issuer``."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "iss"]
    query.append(("iss", issuer))
    return urlunsplit(parts._replace(query=urlencode(query)))


# ---------------------------------------------------------------------------
# Malformed parameters
# ---------------------------------------------------------------------------
def basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    """The client_id and secret of an RFC 6749 §2.3.1 Basic header, decoded as DOT decodes them, or None."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:]).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def nul_in_client_request(request: HttpRequest) -> bool:
    """A NUL in a token or revocation request: a parameter, the Authorization header, or its Basic credentials."""
    credentials = basic_credentials(request) or ()
    return (
        nul_in_parameters(request.GET, request.POST)
        or NUL in request.META.get("HTTP_AUTHORIZATION", "")
        or contains_nul(credentials)
    )


def malformed_basic_credentials(request: HttpRequest) -> bool:
    """Whether the request names the Basic scheme but its credentials do not decode as RFC 6749 §2.3.1 says.

    DOT's decoding raises on a non-ASCII header (``base64.b64decode`` of a str) instead of
    failing the authentication, so such a request must not reach it.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return header[:6].lower() == "basic " and basic_credentials(request) is None


# RFC 6749 §5.2: the challenge names the scheme clients authenticate with here.
BASIC_CHALLENGE = 'Basic realm="oauth", charset="UTF-8"'
# oauthlib's urldecode raises ValueError on a query string this pattern finds (RFC 3986 §2.1).
MALFORMED_QUERY = "The query string is not valid URL encoding (a % must be followed by two hex digits)."
MALFORMED_BASIC = "The Basic credentials are not base64 of a UTF-8 client_id:client_secret (RFC 6749 §2.3.1)."
# Resource indicators may be repeated (RFC 8707 §2); no other parameter may.
REPEATABLE = frozenset({"resource"})


def repeated_parameter(request: HttpRequest) -> str | None:
    """The first parameter of a token or revocation request that is sent more than once, or None.

    RFC 6749 §3.2 (and RFC 7009 §2.1 through it): "Request and response parameters MUST NOT
    be included more than once." DOT hands oauthlib the last value of each and oauthlib reads
    the query string and the body together, so a repeat would be silently resolved instead.
    """
    seen: set[str] = set()
    for query in (request.GET, request.POST):
        for name, values in query.lists():
            if name in REPEATABLE:
                continue
            if name in seen or len(values) > 1:
                return name
            seen.add(name)
    return None


def client_request_problem(request: HttpRequest) -> HttpResponse | None:
    """The refusal of a token or revocation request (RFC 6749 §5.2 errors) that oauthlib must not see, or None.

    A NUL anywhere; a query string oauthlib cannot decode; undecodable Basic credentials; a
    repeated parameter (``repeated_parameter``).

    Undecodable Basic credentials are ``invalid_client`` with 401, not ``invalid_request``:
    the client did attempt to authenticate with the Authorization header, and §5.2 says such
    a failure MUST be answered 401 with a ``WWW-Authenticate`` challenge for the scheme used.
    """
    if nul_in_client_request(request):
        return refusal(request, status=400, error="invalid_request", description=NUL_IN_REQUEST)
    if INVALID_HEX_PATTERN.search(request.META.get("QUERY_STRING", "")):
        # oauthlib reads the query string too, and its urldecode raises ValueError on this.
        return refusal(request, status=400, error="invalid_request", description=MALFORMED_QUERY)
    if malformed_basic_credentials(request):
        return refusal(
            request,
            status=401,
            error="invalid_client",
            description=MALFORMED_BASIC,
            headers={"WWW-Authenticate": BASIC_CHALLENGE},
        )
    repeated = repeated_parameter(request)
    if repeated is not None:
        return refusal(
            request,
            status=400,
            error="invalid_request",
            description=f"The parameter {printable(repeated, 64)} was sent more than once.",
        )
    return None


def printable(value: str, limit: int) -> str:
    """``value`` fit for the audit trail: PostgreSQL's jsonb cannot hold NUL either."""
    return value.replace(NUL, "\ufffd")[:limit]


# RFC 7636 §4.1: code-verifier = 43*128unreserved.
CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
MALFORMED_VERIFIER = "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)."
INCOMPLETE_CONSENT = "The consent form is incomplete or names no known application."
