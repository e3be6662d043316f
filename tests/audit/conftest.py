"""Fixtures of the audit tests: the personas and the client of the /mcp tests (tests/mcp_bridge/conftest.py)."""

from tests.mcp_bridge.conftest import (  # noqa: F401  (fixtures)
    alice,
    app_client,
    bob,
    own_connections_closed,
)
