"""Fuzzing RFC 7591 registration (/oauth/register) and RFC 7592 management (/oauth/register/<client_id>).

Whatever the body, its encoding, Content-Type, Host or forwarding headers, the answer is a
registration (201) or an RFC 7591 §3.2.2 error: never a 5xx, never internals, never cached. A
refused registration creates nothing; an accepted one never stores a redirect URI that escapes
the redirect policy or a grant type this server does not serve.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from django.test import Client as HttpClient
from hypothesis import example, given
from hypothesis import strategies as st
from oauth2_provider.models import get_access_token_model

from oauth_ext.models import Client, RedirectAllowlistEntry
from tests.conftest import CLAUDE_CALLBACK, CLIENT_ADDR, INTERNAL, LOOPBACK_REDIRECT, PROXY_ADDR, PUBLIC, register
from tests.security.strategies import (
    JSON_CONTENT_TYPES,
    LOOPBACK_HOSTS,
    assert_no_leak,
    assert_oauth_error,
    encoded,
    header_text,
    hostile_text,
    isolated_example,
    json_object_bodies,
    json_values,
    mostly,
)

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()

# RFC 7591 §2 client metadata, plus fields a client has no business sending (client_id, client_secret).
REGISTRATION_FIELDS = (
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "contacts",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "jwks",
    "software_id",
    "software_version",
    "software_statement",
    "application_type",
    "client_id",
    "client_secret",
)

REDIRECT_URIS = (
    LOOPBACK_REDIRECT,
    "http://localhost:41234/callback",
    "http://[::1]:8080/cb",
    CLAUDE_CALLBACK,
    "https://chatgpt.com/connector_platform_oauth_redirect",
    "https://chatgpt.com/connector/oauth/abc123",
    "https://chatgpt.com/connector/oauth/../../x",
    "https://chatgpt.com/connector/oauth/%2e%2e/%2E%2E/x",
    "https://chatgpt.com/connector/oauth/.%2e/x",
    "https://chatgpt.com/connector/oauth/..\\..\\x",
    "https://chatgpt.com/connector/oauth/./x",
    "https://chatgpt.com:8443/connector/oauth/x",
    "https://CHATGPT.com/connector/oauth/x",
    "https://chatgpt.com/connector/oauth/x#frag",
    "https://user:pw@claude.ai/api/mcp/auth_callback",
    "https://claude.ai\\@evil.test/api/mcp/auth_callback",
    "https://claude.ai.evil.test/api/mcp/auth_callback",
    "cursor://anysphere.cursor-mcp/x",
    "cursor://anysphere.cursor-mcp/../../etc",
    "http://127.0.0.1:99999/cb",
    "http://127.0.0.1:0/x",
    "http://127.0.0.1.evil.test/cb",
    "http://[::1/cb",
    "http://%00/",
    "javascript:alert(1)",
    "data:text/html,x",
    "urn:ietf:wg:oauth:2.0:oob",
    "/relative",
    "",
)

GRANT_TYPES = (
    "authorization_code",
    "refresh_token",
    "implicit",
    "password",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
)
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth")


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right kind, sometimes null, hostile text or any JSON."""
    return st.one_of(good, good, st.none(), hostile_text, json_values())


redirect_uri = st.one_of(
    st.sampled_from(REDIRECT_URIS),
    st.builds(lambda base, tail: base + tail, st.sampled_from(REDIRECT_URIS), hostile_text),
)

plausible_metadata = st.fixed_dictionaries(
    {"redirect_uris": either(st.lists(redirect_uri, min_size=1, max_size=3))},
    optional={
        "token_endpoint_auth_method": either(st.sampled_from(AUTH_METHODS)),
        "grant_types": either(st.lists(st.sampled_from(GRANT_TYPES), max_size=3)),
        "response_types": either(st.lists(st.sampled_from(["code", "token", "id_token", "code id_token"]), max_size=2)),
        "client_name": either(st.sampled_from(["Claude Code", "x" * 300])),
        "scope": either(st.sampled_from(["mcp", "mcp offline_access", "openid", "admin"])),
        "software_id": either(st.just("claude-code")),
        "software_version": either(st.just("2.1.0")),
        "client_uri": either(st.just("https://example.com")),
        "contacts": either(st.lists(st.just("a@example.com"), max_size=2)),
        "application_type": either(st.sampled_from(["native", "web"])),
        "jwks": json_values(),
        "client_id": hostile_text,
        "client_secret": hostile_text,
    },
)

registration_bodies = encoded(json_object_bodies(plausible_metadata, REGISTRATION_FIELDS))
content_types = st.one_of(st.just("application/json"), st.sampled_from(JSON_CONTENT_TYPES))
hosts = mostly(st.sampled_from([PUBLIC, INTERNAL]), header_text)


@st.composite
def peers(draw: st.DrawFn) -> dict[str, str]:
    """Who is calling: a client on the internet, or the trusted proxy forwarding one (X-Forwarded-For)."""
    if draw(st.booleans()):
        return {"REMOTE_ADDR": draw(st.sampled_from([CLIENT_ADDR, "2001:db8::7", "192.0.2.1"]))}
    forwarded = draw(st.one_of(st.sampled_from(["198.51.100.4", "198.51.100.4, 10.9.9.9", ""]), header_text))
    return {"REMOTE_ADDR": PROXY_ADDR, "HTTP_X_FORWARDED_FOR": forwarded}


def percent_decoded_path_segments(uri: str) -> list[str]:
    """The path segments a browser resolves (it decodes %2e as a dot, WHATWG URL "double-dot segment")."""
    path = urlsplit(uri).path
    return unquote(path).split("/")


def origin_and_path(uri: str) -> tuple[str, str, int | None, str, str]:
    """Scheme, host, port (the default one filled in), path and query, as a browser compares them."""
    parts = urlsplit(uri)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port, parts.path, parts.query


def assert_redirect_uri_within_policy(uri: str) -> None:
    """A stored redirect URI: loopback, an exact allowlist entry, or under an allowlisted prefix, not escaping it."""
    assert "\\" not in uri and "#" not in uri, uri
    parts = urlsplit(uri)
    assert parts.username is None and parts.password is None, uri
    assert not {".", ".."} & set(percent_decoded_path_segments(uri)), uri
    if parts.scheme.lower() in ("http", "https") and (parts.hostname or "").lower() in LOOPBACK_HOSTS:
        return
    scheme, host, port, path, query = origin_and_path(uri)
    for entry in RedirectAllowlistEntry.objects.all():
        e_scheme, e_host, e_port, e_path, e_query = origin_and_path(entry.uri)
        if (scheme, host, port) != (e_scheme, e_host, e_port):
            continue
        if entry.match == RedirectAllowlistEntry.Match.EXACT and (path, query) == (e_path, e_query):
            return
        if entry.match == RedirectAllowlistEntry.Match.PREFIX and path.startswith(e_path):
            return
    raise AssertionError(f"{uri!r} was stored, but is neither loopback nor within the allowlist")


def assert_issued_registration(response: Any) -> None:
    body = json.loads(response.content)
    client = Client.objects.get(client_id=body["client_id"])
    assert client.authorization_grant_type == Client.GRANT_AUTHORIZATION_CODE, client.authorization_grant_type
    assert set(body["grant_types"]) <= {"authorization_code", "refresh_token"}, body
    assert client.redirect_uris.split(), "a code-flow client needs a redirect URI"
    for uri in client.redirect_uris.split():
        assert_redirect_uri_within_policy(uri)
    assert body["redirect_uris"] == client.redirect_uris.split()


def registration_round(body: bytes, content_type: str, host: str, peer: dict[str, str]) -> None:
    """POST one registration request and check the answer and what it left behind."""
    clients, tokens = Client.objects.count(), AccessToken.objects.count()

    response = HttpClient(enforce_csrf_checks=True).generic(
        "POST", "/oauth/register", body, content_type=content_type, HTTP_HOST=host, **peer
    )

    assert response.status_code < 500, response.content[:2000]
    assert_no_leak(response.content)
    if response.status_code == 201:
        assert response["Cache-Control"] == "no-store"
        assert_issued_registration(response)
    else:
        assert 400 <= response.status_code < 500, response.status_code
        assert_oauth_error(response)
        assert Client.objects.count() == clients, "a refused registration created a client"
        assert AccessToken.objects.count() == tokens, "a refused registration issued a registration token"


JSON = "application/json"
ON_THE_INTERNET = {"REMOTE_ADDR": CLIENT_ADDR}


def metadata(**fields: Any) -> bytes:
    return json.dumps({"redirect_uris": [LOOPBACK_REDIRECT], **fields}).encode()


# Inputs that once broke the endpoint (issue 8 and what this fuzzing found): checked on every run.
@example(body=b"[" * 100_000 + b"]" * 100_000, content_type=JSON, host=PUBLIC, peer=ON_THE_INTERNET)  # RecursionError
@example(body=metadata(client_name=None), content_type=JSON, host=PUBLIC, peer=ON_THE_INTERNET)
@example(body=metadata(client_name="a\x00b"), content_type=JSON, host=PUBLIC, peer=ON_THE_INTERNET)  # NUL, PostgreSQL
@example(body=metadata(software_id="\ud800"), content_type=JSON, host=PUBLIC, peer=ON_THE_INTERNET)  # lone surrogate
@example(
    body=metadata(redirect_uris=["https://chatgpt.com/connector/oauth/../../x"]),
    content_type=JSON,
    host=PUBLIC,
    peer=ON_THE_INTERNET,
)
@example(body=b"{}", content_type=JSON, host="", peer=ON_THE_INTERNET)  # no Host: still an RFC 7591 error
@example(body=b"{}", content_type=JSON, host=PUBLIC, peer={"REMOTE_ADDR": PROXY_ADDR, "HTTP_X_FORWARDED_FOR": "x"})
@given(body=registration_bodies, content_type=content_types, host=hosts, peer=peers())
def test_any_registration_request_gets_a_client_or_an_rfc7591_error_and_never_a_5xx(
    body: bytes, content_type: str, host: str, peer: dict[str, str]
) -> None:
    with isolated_example():
        registration_round(body, content_type, host, peer)


# ---------------------------------------------------------------------------
# RFC 7592: reading, replacing and deleting a registration
# ---------------------------------------------------------------------------
MANAGEMENT_METHODS = ("GET", "PUT", "PUT", "PUT", "DELETE", "POST", "PATCH")

management_authorizations = st.one_of(
    st.just("valid"),
    st.just("valid"),
    st.none(),
    header_text,
    st.builds(lambda t: "Bearer " + t, header_text),
)


def management_round(
    method: str, body: bytes, content_type: str, authorization: str | None, other_client_id: str | None
) -> None:
    """Register a client, then send one RFC 7592 request about it (or another id) and check the outcome."""
    http = HttpClient(enforce_csrf_checks=True)
    issued = register(http, {"client_name": "Claude Code", "redirect_uris": [LOOPBACK_REDIRECT]})
    assert issued.status_code == 201, issued.content
    registration = issued.json()
    client_id = registration["client_id"] if other_client_id is None else other_client_id
    headers: dict[str, str] = {"HTTP_HOST": PUBLIC, "REMOTE_ADDR": CLIENT_ADDR}
    if authorization == "valid":
        headers["HTTP_AUTHORIZATION"] = "Bearer " + registration["registration_access_token"]
    elif authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    before = Client.objects.get(client_id=registration["client_id"])

    response = http.generic(
        method,
        "/oauth/register/" + quote(client_id, safe="", errors="surrogatepass"),
        body,
        content_type=content_type,
        **headers,
    )

    assert response.status_code < 500, response.content[:2000]
    assert_no_leak(response.content)
    if authorization != "valid":
        assert response.status_code >= 400, "a registration was managed without its registration token"
    after = Client.objects.filter(client_id=registration["client_id"]).first()
    if response.status_code >= 400:
        assert_oauth_error(response)
        assert after is not None, "a refused request deleted the registration"
        assert (after.redirect_uris, after.authorization_grant_type, after.client_type, after.name) == (
            before.redirect_uris,
            before.authorization_grant_type,
            before.client_type,
            before.name,
        ), "a refused request changed the registration"
    else:
        if response.content:
            assert response["Cache-Control"] == "no-store", "a registration's management response was cacheable"
        if after is not None:
            assert after.authorization_grant_type == Client.GRANT_AUTHORIZATION_CODE, after.authorization_grant_type
            for uri in after.redirect_uris.split():
                assert_redirect_uri_within_policy(uri)


@example(method="PUT", body=metadata(client_name=None), content_type=JSON, authorization="valid", other_client_id=None)
@example(
    method="PUT",
    body=metadata(grant_types=["client_credentials"]),
    content_type=JSON,
    authorization="valid",
    other_client_id=None,
)
@example(method="POST", body=metadata(), content_type=JSON, authorization="valid", other_client_id=None)  # 405
@given(
    method=st.sampled_from(MANAGEMENT_METHODS),
    body=registration_bodies,
    content_type=content_types,
    authorization=management_authorizations,
    other_client_id=st.one_of(st.none(), hostile_text),
)
def test_any_registration_management_request_is_answered_within_policy_and_never_with_a_5xx(
    method: str, body: bytes, content_type: str, authorization: str | None, other_client_id: str | None
) -> None:
    with isolated_example():
        management_round(method, body, content_type, authorization, other_client_id)
