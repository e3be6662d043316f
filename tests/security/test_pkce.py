"""PKCE values must have the shape RFC 7636 gives them, at /oauth/authorize and at /oauth/token.

§4.2: an S256 ``code_challenge`` is the unpadded base64url encoding of a SHA-256 digest, so
exactly 43 characters of [A-Z a-z 0-9 - _]. §4.1: a ``code_verifier`` is 43 to 128 characters
of [A-Z a-z 0-9 - . _ ~]. A short verifier is guessable, which is what PKCE exists to prevent.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from oauth2_provider.models import get_access_token_model, get_grant_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from tests.conftest import (
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC,
    PUBLIC_BASE,
    Flow,
    authorize_params,
    hidden_inputs,
    oauth_error,
    proxy_headers,
)
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

MALFORMED_CHALLENGE = {
    "error": "invalid_request",
    "error_description": "code_challenge must be the base64url-encoded SHA-256 digest of the code_verifier "
    "(43 characters, RFC 7636 §4.2).",
}
MALFORMED_VERIFIER = oauth_error(
    "invalid_request", "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)."
)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


VALID = PKCE.make().challenge


@pytest.mark.parametrize(
    "challenge",
    [
        "abcde",  # the review's case
        VALID[:42],
        VALID + "A",
        VALID[:42] + "=",  # padded
        VALID[:41] + "+/",  # base64, not base64url
        VALID[:42] + "~",  # a verifier character, not a base64url one
        "A" * 128,
    ],
    ids=["5-chars", "42-chars", "44-chars", "padded", "base64", "tilde", "128-chars"],
)
def test_a_malformed_code_challenge_is_refused_before_the_consent_page(
    flow: Flow, public_client: Client, challenge: str
) -> None:
    params = {**authorize_params(public_client.client_id, PKCE.make(), state="s1"), "code_challenge": challenge}
    assert flow.code_from(flow.authorize(params)) == {**MALFORMED_CHALLENGE, "state": "s1", "iss": PUBLIC_BASE}
    assert not AuditEvent.objects.filter(event=AuditKind.CONSENT_SHOWN).exists()
    assert not get_grant_model().objects.exists()


def test_a_malformed_code_challenge_is_refused_when_consent_is_remembered(flow: Flow, public_client: Client) -> None:
    flow.authorize_code(public_client.client_id)  # Alice approves once
    params = {**authorize_params(public_client.client_id, PKCE.make(), state="s2"), "code_challenge": "abcde"}
    assert flow.code_from(flow.authorize(params)) == {**MALFORMED_CHALLENGE, "state": "s2", "iss": PUBLIC_BASE}
    assert get_grant_model().objects.count() == 1  # the first approval's only


def test_a_malformed_code_challenge_in_the_consent_form_gets_an_error_page(flow: Flow, public_client: Client) -> None:
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 200
    data = {**hidden_inputs(page.content.decode()), "code_challenge": "abcde", "allow": "Authorize"}
    response = flow.http.post(
        "/oauth/authorize", data, HTTP_HOST=PUBLIC, HTTP_ORIGIN=PUBLIC_BASE, **proxy_headers(ALICE)
    )
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert "invalid_request: " + MALFORMED_CHALLENGE["error_description"] in response.content.decode()
    assert not get_grant_model().objects.exists()


def code_for_verifier(flow: Flow, client: Client, verifier: str) -> str:
    """An authorization code whose (well-formed) challenge is the S256 of ``verifier``."""
    params = authorize_params(client.client_id, PKCE.make())
    params["code_challenge"] = s256(verifier)
    page = flow.authorize(params)
    if page.status_code == 200:
        page = flow.consent(page)
    return flow.code_from(page)["code"]


@pytest.mark.parametrize(
    "verifier",
    [
        "abcde",  # matches its challenge, but is guessable
        "a" * 42,
        "a" * 129,
        "a" * 42 + "+",  # not an unreserved character
        "a" * 42 + " ",
        "a" * 42 + "%",
    ],
)
def test_a_malformed_code_verifier_is_refused_at_the_token_endpoint(
    flow: Flow, public_client: Client, verifier: str
) -> None:
    code = code_for_verifier(flow, public_client, verifier)
    response = flow.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": LOOPBACK_REDIRECT,
            "client_id": public_client.client_id,
            "code_verifier": verifier,
        }
    )
    assert response.status_code == 400, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json() == MALFORMED_VERIFIER
    assert not get_access_token_model().objects.filter(user__isnull=False).exists()


@pytest.mark.parametrize("verifier", ["a" * 43, "A-._~" * 25 + "123"])
def test_a_verifier_of_any_allowed_length_and_alphabet_is_accepted(
    flow: Flow, public_client: Client, verifier: str
) -> None:
    code = code_for_verifier(flow, public_client, verifier)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": LOOPBACK_REDIRECT,
        "client_id": public_client.client_id,
        "code_verifier": verifier,
    }
    response: Any = flow.token(data)
    assert response.status_code == 200, response.content


def test_a_malformed_code_verifier_in_the_query_string_is_refused(flow: Flow, public_client: Client) -> None:
    """oauthlib reads token request parameters from the query string as well as the body."""
    code = code_for_verifier(flow, public_client, "abcde")
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": LOOPBACK_REDIRECT,
        "client_id": public_client.client_id,
    }
    response = flow.http.post("/oauth/token?code_verifier=abcde", data, HTTP_HOST=PUBLIC)
    assert response.status_code == 400, response.content
    assert response.json() == MALFORMED_VERIFIER
    assert not get_access_token_model().objects.filter(user__isnull=False).exists()
