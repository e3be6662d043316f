"""Environment of the test suite, set before Django reads its settings (loaded with ``-p``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
