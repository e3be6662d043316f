"""Fuzzing the authorization endpoint (/oauth/authorize, RFC 6749 §4.1.1) and its consent form.

Whatever the query string, the form, who is signed in (Alice, Mallory from outside the domain,
nobody, or a forwarded identity header of any shape) and the Host, the answer is an HTML page or
a redirect: never a 5xx, never internals. A redirect goes to this site (sign-in) or to a
redirect URI registered for the client named, and carries a code only after consent was given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.test import Client as HttpClient
from hypothesis import example, given
from hypothesis import strategies as st
from oauth2_provider.models import get_access_token_model, get_grant_model

from oauth_ext.models import Client
from tests.conftest import (
    ALICE,
    CLAUDE_CALLBACK,
    CLIENT_ADDR,
    INTERNAL,
    INTERNAL_BASE,
    LOOPBACK_REDIRECT,
    MALLORY,
    PROXY_ADDR,
    PUBLIC,
    PUBLIC_BASE,
    PUBLIC_RESOURCE,
    proxy_headers,
)
from tests.e2e.oauthclient import PKCE
from tests.security.strategies import (
    LOOPBACK_HOSTS,
    URLENCODED_STYLES,
    as_request_target,
    assert_no_leak,
    form_bodies,
    header_text,
    hostile_text,
    isolated_example,
    mostly,
    parameter_pairs,
    urlencoded,
)

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
Grant = get_grant_model()

PUBLIC_ID = "fuzz-public-client"
CLAUDE_ID = "fuzz-claude-client"
REGISTERED = {PUBLIC_ID: [LOOPBACK_REDIRECT], CLAUDE_ID: [CLAUDE_CALLBACK]}
CHALLENGE = PKCE.make().challenge


def make_clients() -> None:
    """A loopback public client and a public client with an allowlisted https redirect, known ids."""
    for client_id, uris in REGISTERED.items():
        Client.objects.create(
            client_id=client_id,
            name="Fuzz " + client_id,
            client_type=Client.CLIENT_PUBLIC,
            authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(uris),
            token_endpoint_auth_method="none",
            registration_source=Client.RegistrationSource.DCR,
            client_secret="",
        )


AUTHORIZE_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "prompt",
    "nonce",
    "response_mode",
    "request",
    "request_uri",
    "max_age",
    "login_hint",
    "claims",
)
PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "response_type": st.sampled_from(["code", "token", "code id_token", "none", ""]),
    "client_id": st.sampled_from([PUBLIC_ID, CLAUDE_ID, "https://client.example/metadata.json"]),
    "redirect_uri": st.sampled_from(
        [
            LOOPBACK_REDIRECT,
            "http://127.0.0.1:1/callback",
            "http://localhost:33418/callback",
            CLAUDE_CALLBACK,
            CLAUDE_CALLBACK + "/../x",
            CLAUDE_CALLBACK + "?x=1",
            "https://evil.test/cb",
            "javascript:alert(1)",
            "//evil.test/cb",
            "",
        ]
    ),
    "scope": st.sampled_from(["mcp", "mcp offline_access", "openid mcp", "admin", ""]),
    "state": st.sampled_from(["st-1", "", "<script>alert(1)</script>"]),
    "code_challenge": st.sampled_from([CHALLENGE, "short", "a" * 43, "a" * 129, ""]),
    "code_challenge_method": st.sampled_from(["S256", "plain", "s256", ""]),
    "resource": st.sampled_from([PUBLIC_RESOURCE, PUBLIC_RESOURCE + "/", "https://evil.test/mcp", ""]),
    "prompt": st.sampled_from(["none", "consent", "login", "select_account", "consent login"]),
    "response_mode": st.sampled_from(["query", "fragment", "form_post"]),
    "max_age": st.sampled_from(["0", "-1", "9" * 30]),
}


def authorize_value(name: str) -> st.SearchStrategy[str]:
    plausible = PLAUSIBLE.get(name, hostile_text)
    return st.one_of(plausible, plausible, hostile_text)


query_strings = st.builds(
    lambda pairs, style: as_request_target(urlencoded(pairs, style)),
    parameter_pairs(AUTHORIZE_PARAMETERS, authorize_value),
    st.sampled_from(URLENCODED_STYLES),
)

# The consent form's fields (templates/oauth_ext/consent.html, DOT's AllowForm) and a few more.
CONSENT_FIELDS = (
    "allow",
    "cancel",
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "claims",
    "resource",
)
CONSENT_PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    **PLAUSIBLE,
    "allow": st.sampled_from(["Authorize", "", "false", "0"]),
    "cancel": st.sampled_from(["Cancel", ""]),
}
consent_bodies = form_bodies(
    parameter_pairs(CONSENT_FIELDS, lambda name: st.one_of(CONSENT_PLAUSIBLE.get(name, hostile_text), hostile_text))
)


@st.composite
def visitors(draw: st.DrawFn) -> dict[str, str]:
    """Who asks: Alice or Mallory through the proxy, nobody, or the proxy forwarding an identity of any shape."""
    kind = draw(st.sampled_from(["alice", "alice", "alice", "mallory", "anonymous", "forged", "odd_identity"]))
    if kind == "alice":
        return proxy_headers(ALICE, draw(st.sampled_from(["eng", "", "eng,ops"])))
    if kind == "mallory":
        return proxy_headers(MALLORY)
    if kind == "anonymous":
        return {"REMOTE_ADDR": CLIENT_ADDR}
    if kind == "forged":  # identity headers from an address that is not the proxy: ignored
        return {"REMOTE_ADDR": CLIENT_ADDR, "HTTP_X_FORWARDED_EMAIL": ALICE}
    headers = {"REMOTE_ADDR": PROXY_ADDR, "HTTP_X_FORWARDED_EMAIL": draw(header_text)}
    for key in ("HTTP_X_FORWARDED_GROUPS", "HTTP_X_FORWARDED_USER", "HTTP_X_FORWARDED_FOR"):
        value = draw(st.one_of(st.none(), header_text))
        if value is not None:
            headers[key] = value
    return headers


hosts = mostly(st.sampled_from([PUBLIC, PUBLIC, PUBLIC, INTERNAL]), header_text)


def redirect_allowed(location: str, client_ids: list[str]) -> bool:
    """Whether a redirect goes to this site, or to a redirect URI registered for one of ``client_ids``.

    A loopback redirect URI matches on any port (RFC 8252 §7.3); anything else exactly, up to the query.
    """
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc and location.startswith("/") and not location.startswith("//"):
        return True  # this site: the sign-in page
    if f"{parts.scheme}://{parts.netloc}" in (PUBLIC_BASE, INTERNAL_BASE):
        return True
    for client_id in client_ids:
        for uri in REGISTERED.get(client_id, []):
            registered = urlsplit(uri)
            same_port = registered.port == parts.port or (parts.hostname or "") in LOOPBACK_HOSTS
            if (parts.scheme, parts.hostname, parts.path) == (
                registered.scheme,
                registered.hostname,
                registered.path,
            ) and same_port:
                return True
    return False


def assert_page_or_redirect(response: Any, client_ids: list[str]) -> dict[str, list[str]]:
    """An HTML page, or a redirect this endpoint may send; returns the redirect's query."""
    assert response.status_code < 500, response.content[:2000]
    assert_no_leak(response.content)
    if response.status_code in (301, 302, 303, 307, 308):
        location = response["Location"]
        assert redirect_allowed(location, client_ids), f"redirect to {location!r}, not registered for {client_ids}"
        return parse_qs(urlsplit(location).query)
    assert response["Content-Type"].startswith("text/html"), (response.status_code, response["Content-Type"])
    return {}


def authorize_round(query: str, visitor: dict[str, str], host: str) -> None:
    """GET /oauth/authorize once: a page or a permitted redirect, and never a code (nobody consented)."""
    make_clients()
    grants = Grant.objects.count()

    response = HttpClient(enforce_csrf_checks=True).get("/oauth/authorize?" + query, HTTP_HOST=host, **visitor)

    client_ids = parse_qs(query).get("client_id", [])
    redirect_query = assert_page_or_redirect(response, client_ids)
    assert "code" not in redirect_query, "an authorization code without consent"
    assert Grant.objects.count() == grants, "a grant was stored without consent"


ALICE_VIA_PROXY = proxy_headers(ALICE, "eng")
VALID_QUERY = (
    f"response_type=code&client_id={PUBLIC_ID}&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Fcallback"
    f"&code_challenge={CHALLENGE}&code_challenge_method=S256&scope=mcp"
)


# Inputs that once broke the endpoint (issue 8 and what this fuzzing found): checked on every run.
@example(query=VALID_QUERY + "&state=%zz", visitor=ALICE_VIA_PROXY, host=PUBLIC)  # oauthlib: invalid hex encoding
@example(query="client_id=a%00b", visitor=ALICE_VIA_PROXY, host=PUBLIC)  # NUL, PostgreSQL
@example(query=VALID_QUERY, visitor={**ALICE_VIA_PROXY, "HTTP_X_FORWARDED_FOR": "x"}, host=PUBLIC)
@example(query=VALID_QUERY, visitor=ALICE_VIA_PROXY, host="")  # no Host: still a page
@example(query=VALID_QUERY, visitor={**ALICE_VIA_PROXY, "HTTP_X_FORWARDED_EMAIL": "a@b@example.com"}, host=PUBLIC)
@given(query=query_strings, visitor=visitors(), host=hosts)
def test_any_authorization_request_gets_a_page_or_a_registered_redirect_and_never_a_code_or_5xx(
    query: str, visitor: dict[str, str], host: str
) -> None:
    with isolated_example():
        authorize_round(query, visitor, host)


def consent_round(query: str, body: tuple[bytes, str], visitor: dict[str, str], origin: str | None) -> None:
    """POST the consent form once, as anything might: a code only for Alice, to a registered URI."""
    make_clients()
    grants = Grant.objects.count()
    headers = {"HTTP_HOST": PUBLIC, **visitor}
    if origin is not None:
        headers["HTTP_ORIGIN"] = origin

    # CSRF is not enforced here (the test client's default) so that the form reaches the view.
    response = HttpClient().generic("POST", "/oauth/authorize?" + query, body[0], content_type=body[1], **headers)

    # The clients this request names somewhere (the form may be multipart, or in another charset).
    sent = unquote(query) + body[0].decode("utf-8", "replace") + body[0].decode("utf-16", "replace")
    client_ids = [client_id for client_id in REGISTERED if client_id in sent]
    redirect_query = assert_page_or_redirect(response, client_ids)
    if "code" in redirect_query:
        signed_in_as = visitor.get("HTTP_X_FORWARDED_EMAIL", "").strip(" \t").lower()
        assert signed_in_as == ALICE and visitor["REMOTE_ADDR"] == PROXY_ADDR, f"a code for {visitor}"
        assert Grant.objects.count() == grants + 1
    else:
        assert Grant.objects.count() == grants, "a grant was stored, but no code was sent"
    assert AccessToken.objects.count() == 0


@example(query="", body=(b"", "application/x-www-form-urlencoded"), visitor=ALICE_VIA_PROXY, origin=None)
@example(
    query=VALID_QUERY,
    body=(b"allow=Authorize&client_id=nobody", "application/x-www-form-urlencoded"),
    visitor=ALICE_VIA_PROXY,
    origin=PUBLIC_BASE,
)
@given(
    query=query_strings,
    body=consent_bodies,
    visitor=visitors(),
    origin=st.one_of(st.none(), st.just(PUBLIC_BASE), header_text),
)
def test_any_consent_submission_gets_a_page_or_a_registered_redirect_and_never_a_5xx(
    query: str, body: tuple[bytes, str], visitor: dict[str, str], origin: str | None
) -> None:
    with isolated_example():
        consent_round(query, body, visitor, origin)
