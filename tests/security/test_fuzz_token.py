"""Fuzzing the token endpoint (/oauth/token, RFC 6749 §3.2) and revocation (/oauth/revoke, RFC 7009).

Whatever the form body, its encoding, the Basic credentials or the Host, the answer is an RFC
6749 §5.2 error (or, for a request that is right in every part, tokens): never a 5xx, never
internals, never cached; and no request without a valid code leaves a usable token behind.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client as HttpClient
from hypothesis import example, given
from hypothesis import strategies as st
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from oauth_ext.models import Client
from tests.conftest import (
    CLAUDE_CALLBACK,
    CLIENT_ADDR,
    INTERNAL,
    INTERNAL_RESOURCE,
    LOOPBACK_REDIRECT,
    PROXY_ADDR,
    PUBLIC,
    PUBLIC_RESOURCE,
    Flow,
)
from tests.personas import ALICE
from tests.security.strategies import (
    Pairs,
    assert_no_leak,
    assert_oauth_error,
    basic_authorizations,
    form_bodies,
    header_text,
    hostile_text,
    isolated_example,
    mostly,
    parameter_pairs,
)

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()

PUBLIC_ID = "fuzz-public-client"
CONFIDENTIAL_ID = "fuzz-confidential-client"
CONFIDENTIAL_SECRET = "fuzz-confidential-secret-0123456789abcdef"
CLIENT_IDS = (PUBLIC_ID, CONFIDENTIAL_ID)


def make_clients() -> None:
    """A public client (loopback redirect) and a confidential one (allowlisted https redirect), known ids."""
    Client.objects.create(
        client_id=PUBLIC_ID,
        name="Fuzz public",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=LOOPBACK_REDIRECT,
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.DCR,
        client_secret="",
    )
    Client.objects.create(
        client_id=CONFIDENTIAL_ID,
        name="Fuzz confidential",
        client_type=Client.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=CLAUDE_CALLBACK,
        token_endpoint_auth_method="client_secret_basic",
        registration_source=Client.RegistrationSource.MANUAL,
        client_secret=CONFIDENTIAL_SECRET,  # hashed on save
    )


def issued_counts() -> tuple[int, int, int]:
    return AccessToken.objects.count(), RefreshToken.objects.count(), Grant.objects.count()


GRANT_TYPES = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "password",
    "implicit",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:token-exchange",
)
TOKEN_PARAMETERS = (
    "grant_type",
    "code",
    "redirect_uri",
    "client_id",
    "client_secret",
    "code_verifier",
    "refresh_token",
    "scope",
    "resource",
    "username",
    "password",
)
PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "grant_type": st.sampled_from(GRANT_TYPES),
    "code": st.sampled_from(["", "abc", "x" * 30, "%00", "\x00"]),
    "redirect_uri": st.sampled_from([LOOPBACK_REDIRECT, "http://127.0.0.1:1/callback", CLAUDE_CALLBACK, ""]),
    "client_id": st.sampled_from(CLIENT_IDS),
    "client_secret": st.sampled_from([CONFIDENTIAL_SECRET, "", "wrong"]),
    "code_verifier": st.sampled_from(["a" * 43, "a" * 128, "a" * 129, "short", ""]),
    "refresh_token": st.sampled_from(["", "r" * 30]),
    "scope": st.sampled_from(["mcp", "mcp offline_access", "openid", "", "mcp mcp"]),
    "resource": st.sampled_from([PUBLIC_RESOURCE, INTERNAL_RESOURCE, "https://evil.test/mcp", ""]),
    "username": st.just(ALICE),
    "password": st.just("x"),
}


def token_value(name: str) -> st.SearchStrategy[str]:
    return st.one_of(PLAUSIBLE.get(name, hostile_text), hostile_text)


token_bodies = form_bodies(parameter_pairs(TOKEN_PARAMETERS, token_value))
authorizations = st.one_of(st.none(), basic_authorizations(st.sampled_from(CLIENT_IDS)), header_text)
hosts = mostly(st.sampled_from([PUBLIC, PUBLIC, INTERNAL]), header_text)


@st.composite
def peers(draw: st.DrawFn) -> dict[str, str]:
    """A client on the internet, or the trusted proxy forwarding one (X-Forwarded-For of any shape)."""
    if draw(st.booleans()):
        return {"REMOTE_ADDR": CLIENT_ADDR}
    forwarded = draw(st.one_of(st.sampled_from(["198.51.100.4", "198.51.100.4, 10.9.9.9"]), header_text))
    return {"REMOTE_ADDR": PROXY_ADDR, "HTTP_X_FORWARDED_FOR": forwarded}


def post(path: str, body: bytes, content_type: str, authorization: str | None, host: str, peer: dict[str, str]) -> Any:
    headers = {"HTTP_HOST": host, **peer}
    if authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    return HttpClient(enforce_csrf_checks=True).generic("POST", path, body, content_type=content_type, **headers)


def assert_token_error(response: Any) -> None:
    """RFC 6749 §5.2: 400, or 401 with a challenge for failed client authentication (or 429, rate limited)."""
    assert 400 <= response.status_code < 500, response.status_code
    assert_oauth_error(response)
    if response.status_code == 401:
        assert response.get("WWW-Authenticate"), "a 401 without a challenge (RFC 6749 §5.2)"
    if response.status_code == 429:
        assert response.get("Retry-After"), "a 429 without Retry-After"


# ---------------------------------------------------------------------------
# No valid code anywhere: nothing may be issued
# ---------------------------------------------------------------------------
def token_round(body: bytes, content_type: str, authorization: str | None, host: str, peer: dict[str, str]) -> None:
    """POST one token request where no grant exists: an error, and nothing issued."""
    make_clients()
    before = issued_counts()

    response = post("/oauth/token", body, content_type, authorization, host, peer)

    assert response.status_code < 500, response.content[:2000]
    assert_no_leak(response.content)
    assert_token_error(response)
    assert issued_counts() == before, "a token request without a valid code or refresh token issued something"


FORM = "application/x-www-form-urlencoded"
ON_THE_INTERNET = {"REMOTE_ADDR": CLIENT_ADDR}
A_CODE_REQUEST = b"grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Fcallback"


# Inputs that once broke the endpoints (issue 8 and what this fuzzing found): checked on every run.
@example(body=(A_CODE_REQUEST + b"&client_id=a%00b", FORM), authorization=None, host=PUBLIC, peer=ON_THE_INTERNET)
@example(body=(A_CODE_REQUEST, FORM), authorization="Basic YQBiOg==", host=PUBLIC, peer=ON_THE_INTERNET)  # "a\0b:"
@example(body=(A_CODE_REQUEST, FORM), authorization="Basic \xe9\xe9", host=PUBLIC, peer=ON_THE_INTERNET)
@example(body=(A_CODE_REQUEST, FORM), authorization=None, host="", peer=ON_THE_INTERNET)
@example(
    body=(A_CODE_REQUEST, FORM),
    authorization=None,
    host=PUBLIC,
    peer={"REMOTE_ADDR": PROXY_ADDR, "HTTP_X_FORWARDED_FOR": "x"},
)
@given(body=token_bodies, authorization=authorizations, host=hosts, peer=peers())
def test_any_token_request_without_a_valid_grant_gets_an_rfc6749_error_and_issues_nothing(
    body: tuple[bytes, str], authorization: str | None, host: str, peer: dict[str, str]
) -> None:
    with isolated_example():
        token_round(*body, authorization, host, peer)


# ---------------------------------------------------------------------------
# A real code, and a request around it: tokens only for the exact request
# ---------------------------------------------------------------------------
# How each parameter of the exchange is sent: right, missing, wrong, or twice.
MODES = ("right", "right", "right", "right", "missing", "wrong", "twice", "twice_wrong")
EXCHANGE_PARAMETERS = ("grant_type", "code", "redirect_uri", "client_id", "code_verifier", "resource")


@st.composite
def exchange_plans(draw: st.DrawFn) -> dict[str, tuple[str, str]]:
    return {name: (draw(st.sampled_from(MODES)), draw(token_value(name))) for name in EXCHANGE_PARAMETERS}


def exchange_pairs(plan: dict[str, tuple[str, str]], right: dict[str, str]) -> Pairs:
    pairs: Pairs = []
    for name, (mode, wrong) in plan.items():
        if mode == "right":
            pairs.append((name, right[name]))
        elif mode == "wrong":
            pairs.append((name, wrong))
        elif mode == "twice":
            pairs += [(name, right[name]), (name, right[name])]
        elif mode == "twice_wrong":
            pairs += [(name, right[name]), (name, wrong)]
    return pairs


def exchange_round(plan: dict[str, tuple[str, str]], authorization: str | None, style: str) -> None:
    """Alice authorizes the public client; one token request around the real code is then sent."""
    make_clients()
    flow = Flow(HttpClient(enforce_csrf_checks=True))
    query, pkce, _ = flow.authorize_code(PUBLIC_ID)
    right = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": LOOPBACK_REDIRECT,
        "client_id": PUBLIC_ID,
        "code_verifier": pkce.verifier,
        "resource": PUBLIC_RESOURCE,
    }
    pairs = exchange_pairs(plan, right)
    before = AccessToken.objects.count()
    body = (json.dumps(dict(pairs)) if style == "json" else urlencode(pairs, errors="surrogatepass")).encode(
        "utf-8", "surrogatepass"
    )
    content_type = "application/json" if style == "json" else "application/x-www-form-urlencoded"

    response = post("/oauth/token", body, content_type, authorization, PUBLIC, {"REMOTE_ADDR": CLIENT_ADDR})

    assert response.status_code < 500, response.content[:2000]
    assert_no_leak(response.content)
    if response.status_code == 200:
        sent = {name: [v for k, v in pairs if k == name] for name in ("code", "code_verifier", "client_id")}
        assert sent == {"code": [right["code"]], "code_verifier": [pkce.verifier], "client_id": [PUBLIC_ID]}, (
            "tokens for a request whose code, verifier or client was not exactly the right one"
        )
        assert response["Cache-Control"] == "no-store"
        assert AccessToken.objects.count() == before + 1
    else:
        assert_token_error(response)
        assert AccessToken.objects.count() == before, "a refused exchange issued a token"


@example(  # the code twice (RFC 6749 §3.2: parameters MUST NOT be included more than once)
    plan={name: ("twice" if name == "code" else "right", "") for name in EXCHANGE_PARAMETERS},
    authorization=None,
    style="form",
)
@given(
    plan=exchange_plans(),
    authorization=st.one_of(st.none(), st.none(), basic_authorizations(st.just(PUBLIC_ID))),
    style=st.sampled_from(["form", "form", "form", "json"]),
)
def test_a_code_is_exchanged_only_by_the_exact_request_and_never_with_a_5xx(
    plan: dict[str, tuple[str, str]], authorization: str | None, style: str
) -> None:
    with isolated_example():
        exchange_round(plan, authorization, style)


# ---------------------------------------------------------------------------
# Revocation
# ---------------------------------------------------------------------------
REVOKE_PARAMETERS = ("token", "token_type_hint", "client_id", "client_secret")
REVOKE_PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "token": st.sampled_from(["", "t" * 30]),
    "token_type_hint": st.sampled_from(["access_token", "refresh_token", "id_token", ""]),
    "client_id": st.sampled_from(CLIENT_IDS),
    "client_secret": st.sampled_from([CONFIDENTIAL_SECRET, "", "wrong"]),
}
revoke_bodies = form_bodies(
    parameter_pairs(REVOKE_PARAMETERS, lambda name: st.one_of(REVOKE_PLAUSIBLE[name], hostile_text))
)


def revoke_round(body: bytes, content_type: str, authorization: str | None, host: str, peer: dict[str, str]) -> None:
    """POST one revocation request: 200 (RFC 7009 §2.2, also for unknown tokens) or an RFC 6749 error."""
    make_clients()
    before = issued_counts()

    response = post("/oauth/revoke", body, content_type, authorization, host, peer)

    assert response.status_code < 500, response.content[:2000]
    assert_no_leak(response.content)
    if response.status_code != 200:
        assert_token_error(response)
    assert issued_counts() == before


@example(body=(b"token=a%00b", FORM), authorization=None, host=PUBLIC, peer=ON_THE_INTERNET)
@example(body=(b"token=x", FORM), authorization="Basic \xe9\xe9", host=PUBLIC, peer=ON_THE_INTERNET)
@given(body=revoke_bodies, authorization=authorizations, host=hosts, peer=peers())
def test_any_revocation_request_gets_200_or_an_rfc6749_error_and_never_a_5xx(
    body: tuple[bytes, str], authorization: str | None, host: str, peer: dict[str, str]
) -> None:
    with isolated_example():
        revoke_round(*body, authorization, host, peer)
