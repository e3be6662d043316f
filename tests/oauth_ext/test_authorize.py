"""/oauth/authorize: PKCE (AS1), redirect URIs (AS2), state (AS3), resource (AS4) and iss (RFC 9207)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from oauth2_provider.models import get_grant_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from tests.conftest import (
    ALICE,
    CLAUDE_CALLBACK,
    INTERNAL_BASE,
    INTERNAL_RESOURCE,
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC,
    PUBLIC_BASE,
    PUBLIC_RESOURCE,
    Flow,
    authorize_params,
    proxy_headers,
)

pytestmark = pytest.mark.django_db

STATE = "S-1"


def redirect_query(response: Any, to: str = LOOPBACK_REDIRECT) -> dict[str, str]:
    """The parameters of an authorization response redirect to ``to``."""
    assert response.status_code == 302, response.content
    location = response["Location"]
    assert location.split("?")[0] == to, location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def error_page(response: Any) -> str:
    """The text of the error shown to the person when the client cannot safely be redirected to."""
    assert response.status_code == 400
    assert not response.has_header("Location")
    html = response.content.decode()
    assert "This sign-in request cannot continue" in html
    return html


def params(client: Client, **extra: str) -> dict[str, str]:
    return authorize_params(client.client_id, PKCE.make(), state=STATE, **extra)


# ---------------------------------------------------------------------------
# The happy path
# ---------------------------------------------------------------------------
def test_authorize_shows_consent_then_redirects_with_code_state_and_iss(flow: Flow, public_client: Client) -> None:
    page = flow.authorize(params(public_client))
    assert page.status_code == 200
    query = redirect_query(flow.consent(page))
    assert set(query) == {"code", "state", "iss"}
    assert query["state"] == STATE
    assert query["iss"] == PUBLIC_BASE


def test_authorize_pages_are_never_cached(flow: Flow, public_client: Client) -> None:
    page = flow.authorize(params(public_client))
    assert "no-store" in page["Cache-Control"]


def test_authorization_code_records_pkce_challenge_and_s256(flow: Flow, public_client: Client) -> None:
    request = params(public_client)
    flow.consent(flow.authorize(request))
    grant = get_grant_model().objects.get()
    assert grant.code_challenge == request["code_challenge"]
    assert grant.code_challenge_method == "S256"
    assert grant.redirect_uri == LOOPBACK_REDIRECT


def test_signed_out_person_is_sent_to_sign_in(http: Any, public_client: Client) -> None:
    """Without oauth2-proxy headers from a trusted peer, nobody is signed in (Django's login is the fallback)."""
    response = http.get("/oauth/authorize", params(public_client), HTTP_HOST=PUBLIC)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/oauth/authorize%3F")


# ---------------------------------------------------------------------------
# AS1: PKCE S256 for every client, code flow only
# ---------------------------------------------------------------------------
def test_missing_code_challenge_refused(flow: Flow, public_client: Client) -> None:
    request = params(public_client)
    del request["code_challenge"], request["code_challenge_method"]
    assert redirect_query(flow.authorize(request)) == {
        "error": "invalid_request",
        "error_description": "Code challenge required.",
        "state": STATE,
        "iss": PUBLIC_BASE,
    }


def test_plain_code_challenge_method_refused_before_consent(flow: Flow, public_client: Client) -> None:
    pkce = PKCE.make()
    request = {**params(public_client), "code_challenge": pkce.verifier, "code_challenge_method": "plain"}
    assert redirect_query(flow.authorize(request)) == {
        "error": "invalid_request",
        "error_description": 'Unsupported code_challenge_method; use "S256".',
        "state": STATE,
        "iss": PUBLIC_BASE,
    }
    assert not AuditEvent.objects.filter(event=AuditKind.CONSENT_SHOWN).exists()


def test_missing_code_challenge_method_means_plain_and_is_refused(flow: Flow, public_client: Client) -> None:
    """RFC 7636 §4.3: an omitted method defaults to plain."""
    request = params(public_client)
    del request["code_challenge_method"]
    query = redirect_query(flow.authorize(request))
    assert query["error"] == "invalid_request"
    assert query["error_description"] == 'Unsupported code_challenge_method; use "S256".'


def test_plain_refused_even_when_consent_is_remembered(flow: Flow, public_client: Client) -> None:
    flow.authorize_code(public_client.client_id)  # Alice approves once
    pkce = PKCE.make()
    request = {**params(public_client), "code_challenge": pkce.verifier, "code_challenge_method": "plain"}
    assert redirect_query(flow.authorize(request))["error"] == "invalid_request"
    assert get_grant_model().objects.count() == 1  # the first approval's only


def test_unknown_code_challenge_method_refused(flow: Flow, public_client: Client) -> None:
    query = redirect_query(flow.authorize({**params(public_client), "code_challenge_method": "S512"}))
    assert query == {
        "error": "invalid_request",
        "error_description": "Transform algorithm not supported.",
        "state": STATE,
        "iss": PUBLIC_BASE,
    }


def test_implicit_response_type_refused(flow: Flow, public_client: Client) -> None:
    query = redirect_query(flow.authorize({**params(public_client), "response_type": "token"}))
    assert query == {"error": "unauthorized_client", "state": STATE, "iss": PUBLIC_BASE}


def test_unknown_scope_refused(flow: Flow, public_client: Client) -> None:
    query = redirect_query(flow.authorize({**params(public_client), "scope": "admin"}))
    assert query == {"error": "invalid_scope", "state": STATE, "iss": PUBLIC_BASE}


def test_omitted_scope_means_mcp(flow: Flow, public_client: Client) -> None:
    request = params(public_client)
    del request["scope"]
    page = flow.authorize(request)
    assert page.status_code == 200
    assert page.context["scopes"] == ["mcp"]


# ---------------------------------------------------------------------------
# Requests the client cannot be trusted with: shown to the person, never redirected
# ---------------------------------------------------------------------------
def test_unknown_client_id_shown_as_error_page(flow: Flow, public_client: Client) -> None:
    html = error_page(flow.authorize({**params(public_client), "client_id": "no-such-client"}))
    assert "invalid_request: Invalid client_id parameter value." in html


def test_disabled_client_shown_as_error_page(flow: Flow, public_client: Client) -> None:
    Client.objects.filter(pk=public_client.pk).update(disabled=True)
    html = error_page(flow.authorize(params(public_client)))
    assert "invalid_request: Invalid client_id parameter value." in html


def test_unregistered_redirect_uri_shown_as_error_page(flow: Flow, public_client: Client) -> None:
    html = error_page(flow.authorize(params(public_client, redirect_uri="https://evil.example/cb")))
    assert "invalid_request: Mismatching redirect URI." in html
    assert AuditEvent.objects.get(event=AuditKind.AUTHORIZE_ERROR).detail == {"error": "invalid_request"}


def test_missing_redirect_uri_shown_as_error_page(flow: Flow, public_client: Client) -> None:
    """The redirect URI is always explicit, so the code can be bound to it (RFC 6749 §4.1.3)."""
    request = params(public_client)
    del request["redirect_uri"]
    html = error_page(flow.authorize(request))
    assert "invalid_request: Missing redirect URI." in html


# ---------------------------------------------------------------------------
# AS2: redirect URIs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("http://127.0.0.1:33418/callback", "http://127.0.0.1:50123/callback"),
        ("http://127.0.0.1/callback", "http://127.0.0.1:50123/callback"),
        ("http://[::1]:8080/callback", "http://[::1]:50123/callback"),
        ("http://localhost/callback", "http://localhost:50123/callback"),
    ],
)
def test_loopback_redirect_any_port(
    flow: Flow, make_client: Callable[..., Client], registered: str, requested: str
) -> None:
    client = make_client(registered)
    query, pkce, _ = flow.authorize_code(client.client_id, redirect_uri=requested)
    assert query["state"]
    response = flow.exchange(client.client_id, query["code"], pkce, redirect_uri=requested)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "requested",
    [
        "http://localhost:33418/callback",  # another loopback host name
        "http://127.0.0.1:33418/other",  # another path
        "https://127.0.0.1:33418/callback",  # another scheme
        "http://127.0.0.1:33418/callback?x=1",  # a query the registration does not have
    ],
)
def test_loopback_redirect_must_otherwise_match(flow: Flow, public_client: Client, requested: str) -> None:
    html = error_page(flow.authorize(params(public_client, redirect_uri=requested)))
    assert "Mismatching redirect URI." in html


def test_https_redirect_must_match_exactly(flow: Flow, make_client: Callable[..., Client]) -> None:
    client = make_client(CLAUDE_CALLBACK)
    assert flow.authorize(params(client, redirect_uri=CLAUDE_CALLBACK)).status_code == 200
    for other in (CLAUDE_CALLBACK + "/", "https://claude.ai:8443/api/mcp/auth_callback", CLAUDE_CALLBACK.upper()):
        assert "Mismatching redirect URI." in error_page(flow.authorize(params(client, redirect_uri=other))), other


def test_prefix_allowlist_governs_registration_not_matching(flow: Flow, make_client: Callable[..., Client]) -> None:
    """A client registered with one ChatGPT connector callback cannot use another."""
    client = make_client("https://chatgpt.com/connector/oauth/abc")
    other = "https://chatgpt.com/connector/oauth/xyz"
    assert "Mismatching redirect URI." in error_page(flow.authorize(params(client, redirect_uri=other)))


def test_cursor_app_scheme_redirect_receives_the_code(flow: Flow, make_client: Callable[..., Client]) -> None:
    callback = "cursor://anysphere.cursor-mcp/oauth/callback"
    client = make_client(callback)
    page = flow.authorize(params(client, redirect_uri=callback))
    query = redirect_query(flow.consent(page), to=callback)
    assert query["state"] == STATE
    assert query["iss"] == PUBLIC_BASE


def test_client_with_several_redirects_chooses_one(flow: Flow, make_client: Callable[..., Client]) -> None:
    client = make_client(CLAUDE_CALLBACK, "https://claude.com/api/mcp/auth_callback")
    page = flow.authorize(params(client, redirect_uri="https://claude.com/api/mcp/auth_callback"))
    assert redirect_query(flow.consent(page), to="https://claude.com/api/mcp/auth_callback")["code"]


# ---------------------------------------------------------------------------
# AS3: state
# ---------------------------------------------------------------------------
def test_state_echoed_unchanged(flow: Flow, public_client: Client) -> None:
    state = "a b/c?d=e&f+g~%25 é"
    page = flow.authorize({**params(public_client), "state": state})
    assert redirect_query(flow.consent(page))["state"] == state


def test_state_echoed_on_errors(flow: Flow, public_client: Client) -> None:
    state = "x&y=z"
    query = redirect_query(flow.authorize({**params(public_client), "state": state, "resource": "https://x.test/"}))
    assert query["state"] == state


def test_no_state_sent_none_returned(flow: Flow, public_client: Client) -> None:
    request = params(public_client)
    del request["state"]
    query = redirect_query(flow.consent(flow.authorize(request)))
    assert set(query) == {"code", "iss"}


# ---------------------------------------------------------------------------
# AS4: resource (RFC 8707) at the authorization endpoint
# ---------------------------------------------------------------------------
def test_unknown_resource_gets_invalid_target(flow: Flow, public_client: Client) -> None:
    query = redirect_query(flow.authorize(params(public_client, resource="https://other.example/mcp")))
    assert query == {
        "error": "invalid_target",
        "error_description": "Unknown resource; this server issues tokens for https://mcp.example.com/mcp only.",
        "state": STATE,
        "iss": PUBLIC_BASE,
    }
    assert AuditEvent.objects.get(event=AuditKind.AUTHORIZE_ERROR).detail == {"error": "invalid_target"}


@pytest.mark.parametrize(
    "resource",
    [
        INTERNAL_RESOURCE,  # the other host's resource
        "https://mcp.example.com/",  # the origin, not the endpoint
        "https://mcp.example.com/MCP",  # the path is case-sensitive
        "https://mcp.example.com/mcp?x=1",
        "https://mcp.example.com/mcp#top",
        "https://user@mcp.example.com/mcp",
        "http://mcp.example.com/mcp",
        "mcp.example.com/mcp",
        "not a url",
    ],
)
def test_resource_other_than_this_hosts_mcp_refused(flow: Flow, public_client: Client, resource: str) -> None:
    assert redirect_query(flow.authorize(params(public_client, resource=resource)))["error"] == "invalid_target"


def test_one_bad_resource_among_several_refused(flow: Flow, public_client: Client) -> None:
    request = params(public_client, resource=PUBLIC_RESOURCE)
    response = flow.http.get(
        "/oauth/authorize",
        {**request, "resource": [PUBLIC_RESOURCE, "https://other.example/mcp"]},
        HTTP_HOST=PUBLIC,
        **proxy_headers(ALICE),
    )
    assert redirect_query(response)["error"] == "invalid_target"


@pytest.mark.parametrize(
    "resource",
    [
        PUBLIC_RESOURCE,
        "HTTPS://MCP.EXAMPLE.COM/mcp",
        "https://Mcp.Example.Com/mcp",
        "https://mcp.example.com:443/mcp",
        "https://mcp.example.com/mcp/",
    ],
)
def test_resource_compared_canonically_and_stored_canonical(flow: Flow, public_client: Client, resource: str) -> None:
    query, _pkce, _ = flow.authorize_code(public_client.client_id, resource=resource)
    assert get_grant_model().objects.get(code=query["code"]).resource == [PUBLIC_RESOURCE]


def test_omitted_resource_still_binds_the_code_to_this_hosts_mcp(flow: Flow, public_client: Client) -> None:
    query, _pkce, _ = flow.authorize_code(public_client.client_id)
    assert get_grant_model().objects.get(code=query["code"]).resource == [PUBLIC_RESOURCE]


def test_remembered_consent_also_binds_the_code(flow: Flow, public_client: Client) -> None:
    flow.authorize_code(public_client.client_id)
    query, _pkce, _ = flow.authorize_code(public_client.client_id, resource="HTTPS://MCP.EXAMPLE.COM/mcp")
    assert get_grant_model().objects.get(code=query["code"]).resource == [PUBLIC_RESOURCE]


# ---------------------------------------------------------------------------
# RFC 9207 iss
# ---------------------------------------------------------------------------
def test_iss_equals_the_issuer_of_the_public_host(flow: Flow, public_client: Client) -> None:
    query, _pkce, _ = flow.authorize_code(public_client.client_id)
    issuer = flow.http.get("/.well-known/oauth-authorization-server", HTTP_HOST=PUBLIC).json()["issuer"]
    assert query["iss"] == issuer == PUBLIC_BASE


def test_iss_equals_the_issuer_of_the_internal_host(internal_flow: Flow, public_client: Client) -> None:
    query, _pkce, _ = internal_flow.authorize_code(public_client.client_id)
    assert query["iss"] == INTERNAL_BASE


def test_iss_appears_exactly_once_even_if_the_redirect_uri_has_one(
    flow: Flow, make_client: Callable[..., Client]
) -> None:
    callback = "http://127.0.0.1:33418/callback?iss=https://evil.example"
    client = make_client(callback)
    page = flow.authorize(params(client, redirect_uri=callback))
    location = flow.consent(page)["Location"]
    assert parse_qs(urlsplit(location).query)["iss"] == [PUBLIC_BASE]
