"""Fixtures for end-to-end tests: mcpgate under a real gunicorn, on the test database.

The server reads and writes pytest-django's test database, so tests that talk to it must use the
database transactionally: ``@pytest.mark.django_db(transaction=True)``, so that what either side
writes is committed where the other can see it. Rows seeded by migrations (the redirect allowlist)
are put back before each such test by an autouse fixture in tests/conftest.py.

A module may override ``gunicorn_env`` (module scope) to start its server with other settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .server import GunicornServer, ServerFailed, database_env, gunicorn


@pytest.fixture(scope="module")
def gunicorn_env() -> dict[str, str]:
    """Settings for this module's server, on top of the production-like defaults."""
    return {}


@pytest.fixture(scope="module")
def gunicorn_server(
    django_db_setup: None,
    django_db_blocker: Any,
    gunicorn_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GunicornServer]:
    """gunicorn with deploy/gunicorn.conf.py on the test database: the ASGI site, two uvicorn workers, DEBUG off.

    Module-scoped: started once, stopped (and its database connections closed) before
    pytest-django drops the test database. On teardown its log must hold none of the tokens,
    codes or secrets the tests saw, and no traceback.
    """
    from django.db import connection

    with django_db_blocker.unblock():
        db_env = database_env(connection.settings_dict)
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    try:
        with gunicorn(db_env=db_env, log_path=log_path, overrides=gunicorn_env) as server:
            yield server
    except ServerFailed as failure:
        pytest.fail(str(failure))
    leaked = server.leaked()
    assert not leaked, f"gunicorn's log ({log_path}) contains credentials the tests saw: {leaked}"
    log = server.log()
    assert "Traceback" not in log, log
