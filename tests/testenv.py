"""Environment of the test suite, set before Django reads its settings (loaded with ``-p``)."""

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
}

for key, value in TEST_ENV.items():
    os.environ.setdefault(key, value)

# The tests clear the cache before each test (tests/conftest.py): always this run's own directory,
# never a cache directory or a Redis the shell points at.
os.environ["MCPGATE_CACHE_DIR"] = str(CACHE_DIR)
for key in ("CACHE_URL", "CACHE_URL_FILE"):
    os.environ.pop(key, None)


def pytest_unconfigure() -> None:
    """Remove this run's cache directory (the servers that used it are stopped by now)."""
    shutil.rmtree(CACHE_DIR, ignore_errors=True)
