"""Smoke: /mcp answers an authenticated tools/call whoami in-process."""

from __future__ import annotations

import pytest

from tests.mcp_bridge.conftest import bearer, rpc

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_whoami(mcp, alice_token) -> None:
    token = alice_token
    r = await mcp.post("/mcp", json=rpc("tools/call", {"name": "whoami", "arguments": {}}), headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["structuredContent"]["email"] == "alice@example.com"
    r = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(token))
    assert [t["name"] for t in r.json()["result"]["tools"]] == ["add_note", "list_notes", "whoami"]
    r = await mcp.post(
        "/mcp", json=rpc("tools/call", {"name": "add_note", "arguments": {"text": "x"}}), headers=bearer(token)
    )
    assert r.status_code == 403, r.text
    print(r.headers["www-authenticate"], r.text)
