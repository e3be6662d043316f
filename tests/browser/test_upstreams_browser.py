"""Upstreams in the console in a real browser (issue 10): added through the form, secrets shown once, health.

Olivia adds an HTTP upstream with an ``Authorization: Bearer …`` header, pointing at a local port
nothing listens on; mcpgate under gunicorn (its workers' upstream hub running) tries it, fails, and
the list and the overview say so within a few seconds. The header's value appears on no page after
saving (only its name does) and not in gunicorn's log. Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests import personas
from tests.e2e.server import GunicornServer, ServerFailed, database_env, gunicorn
from tests.gateway.fixtures import serving

from .conftest import OPERATOR
from .test_admin_browser import Person

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "Bearer upstream-credential-" + "7f3a9c2e5b1d4086"
# The hub reconnects with backoff from 1 s and writes health every ~3 s; polling the DB every 2 s.
HEALTH_WITHIN = 20.0


@pytest.fixture(scope="module")
def gateway_server(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """mcpgate under gunicorn with Olivia as operator and a key to seal upstream credentials with."""
    from django.db import connection

    with django_db_blocker.unblock():
        db_env = database_env(connection.settings_dict)
    log_path = tmp_path_factory.mktemp("gunicorn-upstreams") / "gunicorn.log"
    overrides = {"MCPGATE_OPERATOR_EMAILS": OPERATOR, "MCPGATE_UPSTREAM_KEYS": Fernet.generate_key().decode()}
    try:
        with gunicorn(db_env=db_env, log_path=log_path, overrides=overrides) as server:
            server.remember(SECRET, overrides["MCPGATE_UPSTREAM_KEYS"])
            yield server
    except ServerFailed as failure:
        pytest.fail(str(failure))
    leaked = server.leaked()
    assert not leaked, f"gunicorn's log ({log_path}) contains credentials the tests saw: {leaked}"
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def olivia(chromium: Any, gateway_server: GunicornServer, artifacts: Path) -> Iterator[Person]:
    person = Person(chromium, gateway_server, OPERATOR, artifacts)
    yield person
    person.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_of(olivia: Person, name: str) -> str:
    row = olivia.page.locator("#result_list tbody tr", has_text=name)
    return str(row.locator("td.field-health").inner_text()).strip()


def test_operator_adds_an_upstream_its_secret_is_never_shown_again_and_its_health_shows(olivia: Person) -> None:
    olivia.visit("/admin/")
    olivia.page.get_by_role("link", name="Add an upstream").click()
    olivia.check_page()
    page = olivia.page
    page.get_by_label("Name:", exact=True).fill("closed")
    page.get_by_label("Transport:").select_option("streamable_http")
    page.get_by_label("URL:", exact=True).fill(f"http://127.0.0.1:{closed_port()}/mcp")
    page.get_by_label("Timeout (seconds):").fill("5")
    page.get_by_label("Headers:", exact=True).fill(f"Authorization: {SECRET}")
    olivia.screenshot("11-add-upstream")
    page.get_by_role("button", name="Save").click()

    # Back on the list: saved, and the value is nowhere in the page.
    assert "Added the upstream closed" in page.inner_text(".messagelist"), page.inner_text("#content-main")
    olivia.check_page()
    assert SECRET not in page.content()
    assert health_of(olivia, "closed") == "never connected" or "failing" in health_of(olivia, "closed")

    # The change page names the stored header, with an empty field to replace it.
    page.locator("#result_list").get_by_role("link", name="closed").click()
    olivia.check_page()
    assert SECRET not in page.content()
    assert "Stored: Authorization." in page.inner_text(".field-headers")
    assert page.get_by_label("Headers:", exact=True).input_value() == ""
    olivia.screenshot("12-upstream-change-page")

    # The hub of the worker that saved it is told at once, the other polls; both fail to connect.
    deadline = time.monotonic() + HEALTH_WITHIN
    while True:
        olivia.visit("/admin/gateway/upstream/")
        health = health_of(olivia, "closed")
        if health.startswith("failing") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert re.match(r"failing since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \w+", health), health
    assert SECRET not in page.content()
    olivia.screenshot("13-upstream-failing")

    olivia.visit("/admin/")
    failing = page.locator(".mcpgate-failing-upstreams")
    assert "closed" in failing.inner_text()
    failing.get_by_role("link", name="closed").click()
    assert "failing since" in page.inner_text(".mcpgate-upstream-health")
    olivia.screenshot("14-overview-failing-upstream")


def test_a_person_connects_their_account_through_the_upstreams_own_sign_in_in_a_real_browser(
    chromium: Any, gateway_server: GunicornServer, artifacts: Path
) -> None:
    """Issue 12, per-person OAuth, in Chromium: /connect/, the upstream's page, Continue (a form whose answer is
    a redirect to the upstream's authorization server, which the page's CSP ``form-action`` must allow), the
    upstream's own sign-in (tests/gateway/fixtures/oauth_server.py), and back to /connect/, connected. mcpgate
    registered itself there (RFC 7591: no --client-id). No console error on mcpgate's pages."""
    callback = gateway_server.internal + "/connect/tickets/callback"
    with contextmanager(serving)("oauth_server.py", "3600", callback) as url:
        gateway_server.manage(
            "add_upstream", "tickets", "--url", url, "--per-person-oauth", "--upstream-scopes", "tickets"
        )
        alice = Person(chromium, gateway_server, personas.ALICE, artifacts)
        try:
            page = alice.page
            alice.visit("/connect/")
            assert "not connected" in page.locator("table.connections").inner_text()
            page.get_by_role("link", name="Connect").click()
            alice.check_page()
            assert "You sign in at" in page.inner_text("main")
            alice.screenshot("20-connect-upstream")

            page.get_by_role("button", name="Continue to tickets").click()
            page.wait_for_url(re.compile(re.escape(url.removesuffix("/mcp")) + "/login"))
            page.locator("input[name=account]").fill("alice-at-tickets")
            page.get_by_role("button", name="Sign in").click()

            page.wait_for_url(gateway_server.internal + "/connect/")
            alice.check_page()
            assert re.search(r"connected \d+ \w+ \d{4}", page.locator("table.connections").inner_text())
            alice.screenshot("21-connected")
        finally:
            alice.close()
            gateway_server.manage("remove_upstream", "tickets")
