"""Fixtures for real-browser tests: Playwright driving Debian's Chromium against mcpgate under gunicorn.

The server is the end-to-end harness's (tests/e2e/server.py), on the test database, so tests are
transactional (``@pytest.mark.django_db(transaction=True)``), as the e2e tests are.
Playwright's own browser download does not work here: the browser is /usr/bin/chromium
(``apt-get install chromium``). Without it (or without the playwright package) the tests are
skipped on a developer's machine and fail in CI (tests/e2e/tools.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import REPO, GunicornServer, ServerFailed, database_env, gunicorn
from tests.e2e.tools import unavailable

CHROMIUM = Path(os.environ.get("MCPGATE_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "browser"
OPERATOR = "olivia@example.com"


@pytest.fixture(scope="module")
def gunicorn_server(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """mcpgate under gunicorn (tests/e2e's harness) with Olivia as its operator.

    On teardown its log must hold none of the credentials the tests saw, and no traceback.
    """
    from django.db import connection

    with django_db_blocker.unblock():
        db_env = database_env(connection.settings_dict)
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    try:
        with gunicorn(db_env=db_env, log_path=log_path, overrides={"MCPGATE_OPERATOR_EMAILS": OPERATOR}) as server:
            yield server
    except ServerFailed as failure:
        pytest.fail(str(failure))
    leaked = server.leaked()
    assert not leaked, f"gunicorn's log ({log_path}) contains credentials the tests saw: {leaked}"
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Chromium from Debian, driven by Playwright: one per test.

    Per test, not per module: Playwright's sync API runs its event loop in a greenlet, and
    while it is up Django's connection lookups (context-local) can land on another connection
    object than the test database's, so the flush after a test would not be done as the test
    asked. Started after, and stopped before, the database fixture, it never overlaps it.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed: pip install -r requirements.txt")
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    # Playwright's sync API keeps an asyncio loop in this thread, which Django takes for an async
    # context and so refuses the ORM (the database flush between tests included). Nothing here
    # runs Django code inside that loop; allow it while the browser is open, and only then.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
