"""The operators' console in a real browser (issue 4, "Done means"), against mcpgate under gunicorn.

Olivia (olivia@example.com, MCPGATE_OPERATOR_EMAILS) signs in through oauth2-proxy's headers;
the test process plays oauth2-proxy from 127.0.0.1, the trusted proxy. Alice uses clients; Bob
is signed in but no operator. Every page visited is checked for console errors and for form
fields without a label; the key pages are also rendered 375 px wide and must not scroll
sideways. Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or, in CI, fails) the tests with the reason
    expect = None  # type: ignore[assignment]

from tests.e2e.oauthclient import ALICE, authorize, discover, exchange, json_of
from tests.e2e.server import GunicornServer

from .conftest import OPERATOR

# Transactional, so the server sees what the test writes and the test what the server writes
# (tests/conftest.py puts the seeded redirect allowlist back for each such test).
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GEMINI_REDIRECT = "https://vertexaisearch.cloud.google.com/oauth-redirect"
LOOPBACK_REDIRECT = "http://127.0.0.1:33418/callback"
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}

UNLABELLED_FIELDS = """() => Array.from(document.querySelectorAll("input, select, textarea"))
  .filter(e => !["hidden", "submit", "button", "reset", "image"].includes(e.type))
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby"))
  .map(e => e.outerHTML)"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


class Person:
    """A browser tab of someone signed in at oauth2-proxy, which notes every console error."""

    def __init__(self, chromium: Any, server: GunicornServer, email: str, artifacts: Path, **options: Any) -> None:
        self.context = chromium.new_context(base_url=server.internal, **options)
        self.context.set_extra_http_headers({"X-Forwarded-Email": email})
        self.context.grant_permissions(["clipboard-read", "clipboard-write"])
        self.page = self.context.new_page()
        self.artifacts = artifacts
        self.errors: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def visit(self, path: str, *, status: int = 200) -> Any:
        response = self.page.goto(path)
        assert response is not None and response.status == status, (path, response and response.status)
        self.check_page()
        return response

    def check_page(self) -> None:
        """The basics a reviewer looks at: no console errors, a label on every form field."""
        assert self.errors == [], (self.page.url, self.errors)
        assert self.page.evaluate(UNLABELLED_FIELDS) == [], self.page.url

    def no_horizontal_overflow(self) -> None:
        assert self.page.evaluate(OVERFLOW) <= 0, f"{self.page.url} scrolls sideways at this width"

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def olivia(chromium: Any, gunicorn_server: GunicornServer, artifacts: Path) -> Iterator[Person]:
    person = Person(chromium, gunicorn_server, OPERATOR, artifacts)
    yield person
    person.close()


def mcp_ping(server: GunicornServer, token: str) -> int:
    with server.client("public") as http:
        response = http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
        )
    return int(response.status_code)


def test_operator_creates_a_confidential_client_and_its_secret_works(
    olivia: Person, gunicorn_server: GunicornServer
) -> None:
    olivia.visit("/admin/")
    assert olivia.page.get_by_role("heading", name="At a glance").is_visible()
    olivia.screenshot("01-overview")

    olivia.visit("/admin/oauth_ext/client/add/")
    olivia.page.get_by_label("Name:", exact=True).fill("Gemini Enterprise")
    olivia.page.get_by_label("Redirect URIs").fill(GEMINI_REDIRECT)
    assert olivia.page.get_by_label("mcp: Use the organisation's MCP tools as you").is_checked()
    olivia.page.get_by_label("Host it will use").select_option("public")
    olivia.screenshot("02-add-client")
    olivia.page.get_by_role("button", name="Create and show the secret").click()

    # The one-time page: the values for the vendor's form, each with a working copy button.
    assert "shown only this once" in olivia.page.inner_text("#content-main"), olivia.page.inner_text(".errorlist")
    olivia.check_page()
    client_id = olivia.page.get_by_label("Client ID", exact=True).input_value()
    secret = olivia.page.get_by_label("Client secret", exact=True).input_value()
    gunicorn_server.remember(secret)
    shown = {
        label: olivia.page.get_by_label(label, exact=True).input_value()
        for label in ("Authorization URL", "Token URL", "Scopes")
    }
    assert shown == {
        "Authorization URL": gunicorn_server.public + "/oauth/authorize",
        "Token URL": gunicorn_server.public + "/oauth/token",
        "Scopes": "mcp",
    }
    copy = olivia.page.get_by_role("button", name="Copy Client secret")
    assert copy.is_visible()  # revealed by the script; without it the field is plain selectable text
    copy.click()
    expect(copy).to_have_text("Copied")
    assert olivia.page.evaluate("navigator.clipboard.readText()") == secret
    olivia.screenshot("03-client-secret-once")

    # Never again: the client's page and the list do not hold it.
    olivia.page.get_by_role("link", name="Done: go to the client").click()
    olivia.check_page()
    assert secret not in olivia.page.content()
    assert "Stalled before" in olivia.page.inner_text("#content-main")
    olivia.screenshot("04-client-timeline")
    olivia.visit("/admin/oauth_ext/client/")
    assert secret not in olivia.page.content()
    assert "operator" in olivia.page.inner_text("#result_list")
    olivia.screenshot("04b-clients")

    # The vendor's side: Alice signs in and consents, the secret redeems the code, /mcp answers.
    with gunicorn_server.client("public") as client, gunicorn_server.client("public", headers=ALICE) as browser:
        discovery = discover(client, gunicorn_server.public + "/mcp")
        grant = authorize(
            browser,
            discovery,
            client_id=client_id,
            redirect_uri=GEMINI_REDIRECT,
            consent_text=("Gemini Enterprise", "set up by your administrators"),
        )
        response = exchange(
            client, discovery, grant, client_id=client_id, client_secret=secret, auth_method="client_secret_basic"
        )
        assert response.status_code == 200, response.text
        token = json_of(response)["access_token"]
    assert mcp_ping(gunicorn_server, token) == 200


def register_and_get_token(server: GunicornServer, name: str) -> str:
    """Alice connects a self-registered public client (as mcp-remote would) and gets a token."""
    with server.client("public") as client, server.client("public", headers=ALICE) as browser:
        discovery = discover(client, server.public + "/mcp")
        registered = client.post(
            discovery.endpoint("registration"),
            json={
                "client_name": name,
                "redirect_uris": [LOOPBACK_REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
        )
        assert registered.status_code == 201, registered.text
        client_id = str(json_of(registered)["client_id"])
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)
        response = exchange(client, discovery, grant, client_id=client_id)
        assert response.status_code == 200, response.text
        return str(json_of(response)["access_token"])


def test_operator_revokes_a_grant_and_the_next_mcp_call_is_refused(
    olivia: Person, gunicorn_server: GunicornServer
) -> None:
    token = register_and_get_token(gunicorn_server, "Claude Code (browser test)")
    assert mcp_ping(gunicorn_server, token) == 200

    olivia.visit("/admin/oauth_ext/consent/?q=alice%40example.com")
    row = olivia.page.locator("#result_list tbody tr", has_text="Claude Code (browser test)")
    assert row.count() == 1
    olivia.screenshot("05-grants")
    row.get_by_role("checkbox").check()
    olivia.page.get_by_label("Action:").select_option("revoke")
    olivia.page.get_by_role("button", name="Run").or_(olivia.page.get_by_role("button", name="Go")).click()
    assert "Revoked 1 grant" in olivia.page.inner_text(".messagelist")
    olivia.check_page()
    olivia.screenshot("06-grant-revoked")

    assert mcp_ping(gunicorn_server, token) == 401

    olivia.visit("/admin/audit/auditevent/?event=consent_revoked")
    assert "alice@example.com" in olivia.page.inner_text("#result_list")
    olivia.screenshot("07-audit-trail")
    with olivia.page.expect_download() as download:
        olivia.page.get_by_role("link", name="Export these events as CSV").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.startswith("created,event,email")
    assert "consent_revoked" in csv_text and "tool_call" not in csv_text


def test_a_non_operator_is_refused_the_console(chromium: Any, gunicorn_server: GunicornServer, artifacts: Path) -> None:
    bob = Person(chromium, gunicorn_server, "bob@example.com", artifacts)
    try:
        response = bob.page.goto("/admin/")
        assert response is not None and response.status == 403
        assert "not an operator" in bob.page.inner_text("#content-main")
        assert bob.page.locator("input[type=password]").count() == 0
        # The browser reports the 403 document itself; nothing else may go wrong.
        assert [e for e in bob.errors if "403" not in e] == []
        bob.screenshot("08-not-an-operator")
        response = bob.page.goto("/admin/oauth_ext/client/")
        assert response is not None and response.status == 403
    finally:
        bob.close()


@pytest.mark.parametrize(
    "path",
    ["/admin/", "/admin/oauth_ext/client/", "/admin/oauth_ext/client/add/", "/admin/oauth_ext/consent/"],
)
def test_console_pages_fit_a_narrow_screen(
    chromium: Any, gunicorn_server: GunicornServer, artifacts: Path, path: str
) -> None:
    phone = Person(chromium, gunicorn_server, OPERATOR, artifacts, viewport={"width": 375, "height": 800})
    try:
        phone.visit(path)
        phone.no_horizontal_overflow()
        phone.screenshot("narrow" + path.replace("/", "-").rstrip("-"))
    finally:
        phone.close()


def test_disabled_client_gets_a_clear_refusal_page(
    olivia: Person, chromium: Any, gunicorn_server: GunicornServer, artifacts: Path
) -> None:
    token = register_and_get_token(gunicorn_server, "Cursor (to disable)")
    olivia.visit("/admin/oauth_ext/client/?q=Cursor+%28to+disable%29")
    olivia.page.locator("#result_list tbody tr").get_by_role("checkbox").check()
    olivia.page.get_by_label("Action:").select_option("disable")
    olivia.page.get_by_role("button", name="Run").or_(olivia.page.get_by_role("button", name="Go")).click()
    assert "Disabled 1 client" in olivia.page.inner_text(".messagelist")
    assert mcp_ping(gunicorn_server, token) == 401

    alice = Person(chromium, gunicorn_server, "alice@example.com", artifacts)
    try:
        row_id = olivia.page.locator("#result_list tbody tr th a").first.get_attribute("href") or ""
        olivia.page.goto(row_id)
        client_id_text = olivia.page.locator(".field-client_id .readonly").inner_text().strip()
        response = alice.page.goto(
            "/oauth/authorize?response_type=code&client_id="
            + client_id_text
            + "&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Fcallback&code_challenge="
            + "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=x&scope=mcp"
        )
        assert response is not None and response.status == 400
        assert "switched off" in alice.page.inner_text("main")
        alice.screenshot("09-disabled-client-refused")
    finally:
        alice.close()


def test_the_secret_page_works_without_javascript(
    chromium: Any, gunicorn_server: GunicornServer, artifacts: Path
) -> None:
    """No script: the copy buttons stay hidden and every value is a selectable read-only field."""
    olivia = Person(chromium, gunicorn_server, OPERATOR, artifacts, java_script_enabled=False)
    try:
        olivia.visit("/admin/oauth_ext/client/add/")
        olivia.page.get_by_label("Name:", exact=True).fill("Cursor Cloud Agents")
        olivia.page.get_by_label("Redirect URIs").fill("https://www.cursor.com/agents/mcp/oauth/callback")
        olivia.page.get_by_role("button", name="Create and show the secret").click()
        secret = olivia.page.get_by_label("Client secret", exact=True)
        assert secret.is_visible() and secret.get_attribute("readonly") is not None
        assert len(secret.input_value()) >= 32
        gunicorn_server.remember(secret.input_value())
        assert olivia.page.get_by_role("button", name="Copy Client secret").is_hidden()
        olivia.screenshot("10-client-secret-without-javascript")
    finally:
        olivia.close()
