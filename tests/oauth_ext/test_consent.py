"""The consent page (checklist AS8): what it shows, how it is protected, what it remembers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import override_settings
from django.utils.html import escape
from oauth2_provider.models import get_grant_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, Consent
from oauth_ext.services import client_create
from tests.conftest import (
    ALICE,
    BOB,
    CLAUDE_CALLBACK,
    GEMINI_CALLBACK,
    INTERNAL_RESOURCE,
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC,
    PUBLIC_BASE,
    Flow,
    authorize_params,
    hidden_inputs,
    proxy_headers,
)

pytestmark = pytest.mark.django_db

SCOPES_WITH_FILES = {"mcp": "Use the organisation's MCP tools as you", "files:read": "Read your files"}


def consent_page(flow: Flow, client: Client, email: str = ALICE, **extra: str) -> Any:
    page = flow.authorize(authorize_params(client.client_id, PKCE.make(), **extra), email=email)
    assert page.status_code == 200, page.content
    return page


def query_of(response: Any) -> dict[str, str]:
    assert response.status_code == 302, response.content
    return {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}


# ---------------------------------------------------------------------------
# What the page shows
# ---------------------------------------------------------------------------
def test_consent_page_names_client_person_redirect_host_and_scopes_in_words(flow: Flow, public_client: Client) -> None:
    html = consent_page(flow, public_client).content.decode()
    assert "<title>Allow Claude Code? \u2013 mcpgate</title>" in html
    assert "Allow <strong>Claude Code</strong> to use your tools?" in html
    assert "You are signed in as <strong>alice@example.com</strong>." in html
    assert "<dd><code>127.0.0.1:33418</code></dd>" in html
    assert f"<strong>{escape(SCOPES_WITH_FILES['mcp'])}</strong> <code>mcp</code>" in html
    assert "<code>https://mcp.example.com/mcp</code>" in html


def test_consent_page_says_self_registered_client_registered_itself(
    flow: Flow, make_client: Callable[..., Client]
) -> None:
    html = consent_page(flow, make_client(CLAUDE_CALLBACK, name="Claude"), redirect_uri=CLAUDE_CALLBACK)
    text = html.content.decode()
    assert '<span class="badge warn">registered itself</span>' in text
    assert "This application registered itself. Only continue if you recognise <code>claude.ai</code>" in text
    assert "set up by your administrators" not in text


def test_consent_page_says_operator_made_client_is_set_up_by_administrators(flow: Flow) -> None:
    client, _secret = client_create(name="Gemini Enterprise", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    text = consent_page(flow, client, redirect_uri=GEMINI_CALLBACK).content.decode()
    assert '<span class="badge">set up by your administrators</span>' in text
    assert "registered itself" not in text
    assert "<code>vertexaisearch.cloud.google.com</code>" in text


def test_consent_page_warns_about_loopback_only_clients(flow: Flow, public_client: Client) -> None:
    text = consent_page(flow, public_client).content.decode()
    assert "<strong>Only continue if you started this sign-in yourself</strong>" in text
    assert "this application receives its answer on your own machine (<code>127.0.0.1:33418</code>)" in text


def test_consent_page_shows_app_scheme_redirects(flow: Flow, make_client: Callable[..., Client]) -> None:
    callback = "cursor://anysphere.cursor-mcp/oauth/callback"
    text = consent_page(flow, make_client(callback), redirect_uri=callback).content.decode()
    assert "<code>anysphere.cursor-mcp</code>" in text


@override_settings(MCPGATE_SCOPES=SCOPES_WITH_FILES)
def test_consent_page_describes_every_scope_asked_for(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client, scope="mcp files:read")
    assert page.context["scope_rows"] == [
        ("mcp", SCOPES_WITH_FILES["mcp"], ["Add a note", "List my notes", "Who am I?"]),
        ("files:read", "Read your files", []),
    ]
    assert "<strong>Read your files</strong> <code>files:read</code>" in page.content.decode()


def test_consent_page_escapes_the_client_name(flow: Flow, make_client: Callable[..., Client]) -> None:
    client = make_client(LOOPBACK_REDIRECT, name='<script>alert("x")</script>')
    text = consent_page(flow, client).content.decode()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


def test_consent_page_works_without_javascript(flow: Flow, public_client: Client) -> None:
    text = consent_page(flow, public_client).content.decode()
    assert "<script" not in text
    assert '<html lang="en">' in text
    assert '<form method="post" action="">' in text
    assert '<button type="submit" name="allow" value="Authorize" class="primary">Allow</button>' in text
    assert '<button type="submit" name="cancel" value="Cancel">Deny</button>' in text


def test_consent_shown_is_audited(flow: Flow, public_client: Client) -> None:
    consent_page(flow, public_client)
    event = AuditEvent.objects.get(event=AuditKind.CONSENT_SHOWN)
    assert event.client == public_client
    assert event.email == ALICE
    assert event.detail == {"scope": "mcp"}


# ---------------------------------------------------------------------------
# Protection
# ---------------------------------------------------------------------------
def test_consent_page_cannot_be_framed(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client)
    assert "frame-ancestors 'none'" in page["Content-Security-Policy"]
    assert page["X-Frame-Options"] == "DENY"


def test_error_page_cannot_be_framed_either(flow: Flow, public_client: Client) -> None:
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make(), redirect_uri="https://x.test/"))
    assert page.status_code == 400
    assert "frame-ancestors 'none'" in page["Content-Security-Policy"]
    assert page["X-Frame-Options"] == "DENY"


def test_consent_page_content_security_policy_allows_nothing_but_our_styles(flow: Flow, public_client: Client) -> None:
    assert consent_page(flow, public_client)["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def test_consent_post_without_csrf_token_refused(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client)
    data = hidden_inputs(page.content.decode())
    del data["csrfmiddlewaretoken"]
    response = flow.http.post(
        "/oauth/authorize?" + urlencode(page.wsgi_request.GET),
        {**data, "allow": "Authorize"},
        HTTP_HOST=PUBLIC,
        HTTP_ORIGIN=PUBLIC_BASE,
        **proxy_headers(ALICE),
    )
    assert response.status_code == 403
    assert not get_grant_model().objects.exists()
    assert not Consent.objects.exists()


def test_consent_post_from_another_origin_refused(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client)
    response = flow.http.post(
        "/oauth/authorize?" + urlencode(page.wsgi_request.GET),
        {**hidden_inputs(page.content.decode()), "allow": "Authorize"},
        HTTP_HOST=PUBLIC,
        HTTP_ORIGIN="https://evil.example",
        **proxy_headers(ALICE),
    )
    assert response.status_code == 403
    assert not get_grant_model().objects.exists()


def test_consent_post_with_tampered_redirect_uri_does_not_redirect_there(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client)
    data = {**hidden_inputs(page.content.decode()), "redirect_uri": "https://evil.example/cb", "allow": "Authorize"}
    response = flow.http.post(
        "/oauth/authorize", data, HTTP_HOST=PUBLIC, HTTP_ORIGIN=PUBLIC_BASE, **proxy_headers(ALICE)
    )
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert "Mismatching redirect URI." in response.content.decode()
    assert not get_grant_model().objects.exists()


def test_consent_post_with_tampered_resource_gets_invalid_target(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client, resource="https://mcp.example.com/mcp")
    data = {**hidden_inputs(page.content.decode()), "resource": INTERNAL_RESOURCE, "allow": "Authorize"}
    response = flow.http.post(
        "/oauth/authorize", data, HTTP_HOST=PUBLIC, HTTP_ORIGIN=PUBLIC_BASE, **proxy_headers(ALICE)
    )
    query = query_of(response)
    assert query["error"] == "invalid_target"
    assert query["iss"] == PUBLIC_BASE
    assert not get_grant_model().objects.exists()


# ---------------------------------------------------------------------------
# Allow, deny, remember
# ---------------------------------------------------------------------------
def test_allow_records_consent_and_audits_it(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client))
    consent = Consent.objects.get()
    assert consent.user.email == ALICE
    assert consent.client == public_client
    assert consent.scopes == ["mcp"]
    assert consent.host == "public"
    assert AuditEvent.objects.get(event=AuditKind.CONSENT_GIVEN).detail == {"scope": "mcp"}


def test_deny_redirects_with_access_denied_state_and_iss(flow: Flow, public_client: Client) -> None:
    page = consent_page(flow, public_client, state="keep-me")
    assert query_of(flow.consent(page, allow=False)) == {
        "error": "access_denied",
        "state": "keep-me",
        "iss": PUBLIC_BASE,
    }
    assert not Consent.objects.exists()
    assert not get_grant_model().objects.exists()
    assert AuditEvent.objects.get(event=AuditKind.CONSENT_REFUSED).detail == {"scope": "mcp"}


def test_consent_remembered_for_same_person_client_and_scopes(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client))
    again = flow.authorize(authorize_params(public_client.client_id, PKCE.make(), state="second"))
    query = query_of(again)
    assert query["state"] == "second"
    assert query["iss"] == PUBLIC_BASE
    assert query["code"]
    assert AuditEvent.objects.filter(event=AuditKind.CONSENT_REMEMBERED).count() == 1


def test_consent_not_shared_between_people(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client))
    consent_page(flow, public_client, email=BOB)  # Bob is asked


def test_consent_not_shared_between_clients(flow: Flow, public_client: Client, make_client: Any) -> None:
    flow.consent(consent_page(flow, public_client))
    consent_page(flow, make_client(LOOPBACK_REDIRECT, name="Other"))


def test_denial_is_not_remembered(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client), allow=False)
    consent_page(flow, public_client)


@override_settings(MCPGATE_SCOPES=SCOPES_WITH_FILES)
def test_new_scope_asks_again_and_approvals_accumulate(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client, scope="mcp"))
    page = consent_page(flow, public_client, scope="mcp files:read")  # asked again
    flow.consent(page)
    assert Consent.objects.get().scopes == ["files:read", "mcp"]
    for scope in ("mcp", "files:read", "mcp files:read"):
        response = flow.authorize(authorize_params(public_client.client_id, PKCE.make(), scope=scope))
        assert response.status_code == 302, scope


def test_prompt_consent_asks_even_when_remembered(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client))
    consent_page(flow, public_client, prompt="consent")


def test_remembered_consent_for_disabled_client_refused(flow: Flow, public_client: Client) -> None:
    flow.consent(consent_page(flow, public_client))
    Client.objects.filter(pk=public_client.pk).update(disabled=True)
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 400
    assert not page.has_header("Location")


def test_consent_page_lists_the_tools_each_scope_unlocks(flow: Flow, public_client: Client) -> None:
    """Issue 3: the consent page says, for the scopes asked, which tools they unlock."""
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make(), scope="mcp notes:write"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Tools: Add a note, List my notes, Who am I?" in html
    assert "Tools: Add a note</span>" in html
