"""Authorization request policy (RFC 6749 §4.1.1): what is refused before the person is asked to consent."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from .resources import canonical_resource
from .text import NUL_IN_REQUEST, nul_in_parameters

# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) without padding is always 43 characters.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
MALFORMED_CHALLENGE = (
    "code_challenge must be the base64url-encoded SHA-256 digest of the code_verifier (43 characters, RFC 7636 §4.2)."
)
UNSUPPORTED_CHALLENGE_METHOD = 'Unsupported code_challenge_method; use "S256".'


@dataclass(frozen=True)
class AuthorizationRefusal:
    """An RFC 6749 §4.1.2.1 error for the client's redirect URI: ``error`` code and ``description``."""

    error: str
    description: str


def authorization_request_problem(
    *, query: QueryDict, credentials: Mapping[str, Any], resource: str
) -> AuthorizationRefusal | None:
    """Why an authorization request DOT accepted is refused before consent, or None.

    ``query`` is the request's parameters, ``credentials`` what DOT validated from them and
    ``resource`` this host's /mcp. Refused: a NUL in any parameter (state, nonce... would be
    stored with the code); a code_challenge_method other than S256 (RFC 9700 §2.1.1: oauthlib
    takes a missing method to mean "plain", RFC 7636 §4.3, and DOT refuses plain only once the
    code is minted, after the person has been asked); a challenge no verifier can match (oauthlib
    takes any string); an RFC 8707 ``resource`` other than this host's /mcp (``invalid_target``).
    """
    if nul_in_parameters(query):
        return AuthorizationRefusal("invalid_request", NUL_IN_REQUEST)
    if credentials.get("code_challenge_method") != "S256":
        return AuthorizationRefusal("invalid_request", UNSUPPORTED_CHALLENGE_METHOD)
    if not S256_CHALLENGE.fullmatch(credentials.get("code_challenge") or ""):
        return AuthorizationRefusal("invalid_request", MALFORMED_CHALLENGE)
    for value in query.getlist("resource"):
        if canonical_resource(value) != resource:
            return AuthorizationRefusal(
                "invalid_target", f"Unknown resource; this server issues tokens for {resource} only."
            )
    return None


def consent_forced(query: QueryDict) -> bool:
    """Whether the client asks for the consent page even if an approval is remembered (OIDC ``prompt``)."""
    return bool(set(query.get("prompt", "").split()) & {"consent", "login"})
