"""Fixtures of tests/mcpgate: the /mcp harness of tests/mcp_bridge, for the metrics, tracing and log tests."""

from __future__ import annotations

# The ASGI site with its lifespan, Alice and her token, as tests/mcp_bridge uses them.
from tests.mcp_bridge.conftest import (  # noqa: F401  (fixtures)
    alice,
    alice_token,
    anyio_backend,
    app_client,
    make_token,
    mcp,
    site,
)
