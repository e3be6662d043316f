"""Fixtures of tests/gateway: the /mcp harness of tests/mcp_bridge (the site with its lifespan, personas, tokens)."""

from __future__ import annotations

from tests.mcp_bridge.conftest import (  # noqa: F401  (fixtures)
    alice,
    alice_token,
    anyio_backend,
    app_client,
    bob,
    bob_token,
    loop_statements,
    make_token,
    mcp,
    site,
)
