"""The operators' console sends a strict Content-Security-Policy, and its pages need nothing it forbids.

The console is where a client secret is shown and every token can be revoked: markup injected
into it (a client name, an audit detail) must not run. Its policy allows scripts, styles and
images from this origin only, no inline script or style, no framing and no <base>; so the pages
carry no inline ``<script>``, ``<style>``, ``style=`` or ``on…=`` either (the browser tests in
tests/browser run the whole console in Chromium under the policy: a violation is a console
error there, which fails them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client as HttpClient
from django.urls import reverse

from audit.models import AuditEvent, AuditKind
from console.admin_site import CONSOLE_CSP
from oauth_ext.models import Client
from oauth_ext.views import CONSENT_CSP
from tests.conftest import ALICE, GEMINI_CALLBACK, INTERNAL, proxy_headers
from tests.personas import OLIVIA

pytestmark = pytest.mark.django_db

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture(autouse=True)
def operators(settings: Any) -> None:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Rate limits and audit allowances are counted in the cache: no test may see another's."""
    cache.clear()
    yield
    cache.clear()


class _Inline(HTMLParser):
    """What a strict policy would block: inline scripts, style elements and attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]
        self.found += [f"{tag} {name}=javascript:" for name, value in attrs if (value or "").startswith("javascript:")]


def inline(html: bytes) -> list[str]:
    parser = _Inline()
    parser.feed(html.decode())
    return parser.found


@pytest.fixture
def olivia() -> HttpClient:
    http = HttpClient()
    http.defaults.update({"HTTP_HOST": INTERNAL, **proxy_headers(OLIVIA)})
    return http


@pytest.fixture
def a_client_and_its_events(olivia: HttpClient) -> Client:
    """A client with a hostile name, and an audit event, so the pages have rows to show."""
    client = Client.objects.create(
        name='<script>alert(1)</script><img src=x onerror="alert(2)">',
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1:33418/callback",
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.DCR,
        client_secret="",
    )
    AuditEvent.objects.create(event=AuditKind.REGISTER, client=client, detail={"x": "<b onclick=1>"})
    return client


def console_pages(client: Client) -> list[str]:
    event = AuditEvent.objects.get()
    return [
        reverse("admin:index"),
        reverse("admin:oauth_ext_client_changelist"),
        reverse("admin:oauth_ext_client_change", args=[client.pk]),
        reverse("admin:oauth_ext_client_add"),
        reverse("admin:oauth_ext_client_purge"),
        reverse("admin:audit_auditevent_changelist"),
        reverse("admin:audit_auditevent_change", args=[event.pk]),
        reverse("admin:oauth_ext_redirectallowlistentry_changelist"),
        reverse("admin:oauth_ext_redirectallowlistentry_add"),
        reverse("admin:oauth_ext_user_changelist"),
        reverse("admin:app_list", args=["oauth_ext"]),
        reverse("admin:password_change"),
    ]


def test_the_policy_is_the_strict_one() -> None:
    assert CONSOLE_CSP == POLICY


def test_every_console_page_sends_the_policy_and_has_nothing_inline(
    olivia: HttpClient, a_client_and_its_events: Client
) -> None:
    for path in console_pages(a_client_and_its_events):
        page = olivia.get(path)
        assert page.status_code == 200, (path, page.status_code)
        assert page["Content-Security-Policy"] == POLICY, path
        assert inline(page.content) == [], path


def test_the_one_time_secret_page_sends_the_policy_and_has_nothing_inline(olivia: HttpClient) -> None:
    add = reverse("admin:oauth_ext_client_add")
    form = olivia.get(add)
    data = {
        "name": "Gemini Enterprise",
        "redirect_uris": GEMINI_CALLBACK,
        "scopes": ["mcp"],
        "host": "public",
        "auth_method": "client_secret_basic",
    }
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.content)
    nonce = re.search(rb'name="nonce" value="([^"]+)"', form.content)
    if nonce:
        data["nonce"] = nonce.group(1).decode()
    assert token is not None

    page = olivia.post(add, {**data, "csrfmiddlewaretoken": token.group(1).decode()})

    assert page.status_code == 200, page.content[:300]
    assert b"Copy the secret now" in page.content
    assert page["Content-Security-Policy"] == POLICY
    assert inline(page.content) == []
    assert b'src="/static/console/console.js"' in page.content


def test_the_sign_in_page_and_the_refusal_page_send_the_policy() -> None:
    anonymous = HttpClient().get(reverse("admin:login"), HTTP_HOST=INTERNAL)
    alice = HttpClient().get(reverse("admin:login"), HTTP_HOST=INTERNAL, **proxy_headers(ALICE))

    assert anonymous.status_code == 200
    assert alice.status_code == 403  # signed in, but no operator
    for page in (anonymous, alice):
        assert page["Content-Security-Policy"] == POLICY
        assert inline(page.content) == []


def test_the_policy_leaves_the_consent_page_its_own() -> None:
    """Only the console gets this policy; the consent page keeps its stricter one (no scripts at all)."""
    assert CONSENT_CSP != POLICY
    assert "script-src" not in CONSENT_CSP
