"""MCP security best practices, "Session Hijacking": a session id is never an authenticator, and none is issued."""

from __future__ import annotations

from typing import Any

import pytest

from tests.mcp_bridge.conftest import (  # noqa: F401 - fixtures
    MCP_HEADERS,
    alice,
    alice_token,
    anyio_backend,
    app_client,
    bearer,
    make_token,
    mcp,
    rpc,
    site,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("session_id", ["0" * 32, "a1b2c3d4e5f6", "../../etc/passwd"])
async def test_a_session_id_without_a_token_is_not_an_authenticator(mcp: Any, alice: Any, session_id: str) -> None:  # noqa: F811
    """MCP security best practices, "Session Hijacking": sessions never authenticate; /mcp is stateless.

    Whatever Mcp-Session-Id a caller sends, without a bearer token it gets the 401 challenge.
    """
    r = await mcp.post(
        "/mcp",
        json=rpc("tools/call", {"name": "whoami", "arguments": {}}),
        headers={**MCP_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-06-18"},
    )

    assert r.status_code == 401
    assert r.json() == {"error": "invalid_request", "error_description": "A bearer token is required."}


async def test_initialize_hands_out_no_session_id_to_hijack(mcp: Any, alice_token: str) -> None:  # noqa: F811
    """Stateless operation: no Mcp-Session-Id is ever issued, so there is none to steal or guess."""
    r = await mcp.post(
        "/mcp",
        json=rpc(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        ),
        headers=bearer(alice_token),
    )

    assert r.status_code == 200
    assert "mcp-session-id" not in r.headers
