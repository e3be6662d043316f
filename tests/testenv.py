"""Environment of the test suite, set before Django reads its settings (loaded with ``-p``).

The suite runs with exactly this configuration, whatever the developer's shell or ``.env`` says:
every setting the tests rely on is set here (not defaulted), every other mcpgate, database, cache
and OpenTelemetry variable is removed, and no ``.env`` file is loaded. Two inputs are kept on
purpose: ``MCPGATE_TEST_*`` variables, which configure the suite itself (``MCPGATE_TEST_CHROMIUM``),
and ``MCPGATE_TEST_DATABASE_URL``, which ``python -m tests.pgcluster`` sets to run the suite on
PostgreSQL and which becomes DATABASE_URL here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# The rate limits' counters (diskcache files), one directory per test run. gunicorn servers started
# by the tests share it (tests/e2e/server.py), so clearing it before each test resets theirs too.
CACHE_DIR = Path(tempfile.gettempdir()) / f"mcpgate-test-{os.getpid()}-cache"

TEST_ENV = {
    "SECRET_KEY": "test-secret-key-not-for-production-0123456789abcdef",
    "DEBUG": "False",
    "MCPGATE_PUBLIC_URL": "https://mcp.example.com",
    "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8000",
    # Tests act as oauth2-proxy by sending REMOTE_ADDR=10.9.9.9.
    "MCPGATE_TRUSTED_PROXIES": "10.9.9.9/32",
    "MCPGATE_EMAIL_DOMAINS": "example.com",
    "MCPGATE_SQLITE_PATH": str(Path(tempfile.gettempdir()) / f"mcpgate-test-{os.getpid()}.sqlite3"),
    # The tests clear the cache before each test (tests/conftest.py): always this run's own
    # directory, never a cache directory or a Redis the shell points at.
    "MCPGATE_CACHE_DIR": str(CACHE_DIR),
    # The in-process tests read a tool call's audit row as soon as the call returns: written in the request.
    # tests/audit/test_batch.py runs the batches, and the servers of tests/e2e run the default.
    "MCPGATE_AUDIT_BATCH_SECONDS": "0",
    # Never the checkout's .env (mcpgate.env.load_env_file): a developer's local settings stay out.
    "MCPGATE_ENV_FILE": os.devnull,
}

# Variables the settings or the libraries they configure read, which the shell must not bring in.
_CLEARED_PREFIXES = ("MCPGATE_", "DATABASE_URL", "CACHE_URL", "SECRET_KEY", "OTEL_")
_CLEARED = frozenset({"DEBUG"})
# Inputs of the suite itself, not settings of the app.
_KEPT_PREFIX = "MCPGATE_TEST_"


def clean_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Make ``environ`` the suite's: TEST_ENV set, the rest of the app's configuration removed."""
    database_url = environ.get("MCPGATE_TEST_DATABASE_URL", "")
    for key in list(environ):
        if (key.startswith(_CLEARED_PREFIXES) or key in _CLEARED) and not key.startswith(_KEPT_PREFIX):
            del environ[key]
    environ.update(TEST_ENV)
    if database_url:
        environ["DATABASE_URL"] = database_url


clean_environment(os.environ)


def pytest_unconfigure() -> None:
    """Remove this run's cache directory (the servers that used it are stopped by now)."""
    shutil.rmtree(CACHE_DIR, ignore_errors=True)
