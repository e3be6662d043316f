"""An upstream that dies, hangs, answers garbage or is down from the start: a tool error for its calls, no more.

The upstreams are small servers of our own (tests/gateway/fixtures) run by the real hub; /mcp is the
real ASGI app in-process. Every failure must come back within the upstream's timeout, written for
the person, audited with its outcome, while local tools and other upstreams keep answering.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from gateway.models import Upstream, UpstreamStatus
from gateway.runtime import hub
from gateway.services import target_from, upstream_create
from tests.gateway.fixtures import LOCAL_TOOLS, add_upstream, eventually, fixture_command, tool_calls
from tests.mcp_bridge.conftest import bearer, call, rpc

pytestmark = pytest.mark.anyio


async def call_tool(mcp: httpx2.AsyncClient, token: str, name: str, arguments: dict[str, Any] | None = None) -> Any:
    """tools/call through /mcp: the JSON-RPC body (200 expected), and how long it took."""
    started = time.monotonic()
    r = await mcp.post("/mcp", json=call(name, arguments), headers=bearer(token))
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert "Traceback" not in r.text
    return r.json(), elapsed


def tool_error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


async def outcomes() -> list[tuple[str, str]]:
    return [(row["tool"], row["outcome"]) for row in await sync_to_async(tool_calls)()]


async def test_an_upstream_whose_process_died_is_unavailable_at_once_others_answer_and_it_comes_back(
    site, mcp, alice_token
) -> None:
    await add_upstream("tools", fixture_command("raw_server.py", "tools"), timeout=10)
    await add_upstream("other", fixture_command("raw_server.py", "tools"), timeout=10)
    body, _ = await call_tool(mcp, alice_token, "tools__pid")
    pid = int(body["result"]["content"][0]["text"])

    os.kill(pid, signal.SIGKILL)
    body, elapsed = await call_tool(mcp, alice_token, "tools__ping_back", {"text": "hello"})

    assert body["result"] == tool_error("The upstream tools is unavailable; try again later.")
    assert elapsed < 2  # far within its 10 s timeout
    whoami, _ = await call_tool(mcp, alice_token, "whoami")
    assert whoami["result"]["isError"] is False
    other, _ = await call_tool(mcp, alice_token, "other__ping_back", {"text": "still here"})
    assert other["result"]["content"] == [{"type": "text", "text": "still here"}]

    async def back() -> bool:
        body, _ = await call_tool(mcp, alice_token, "tools__pid")
        return body["result"]["isError"] is False

    # Reconnected after its backoff (1 s for a first failure), in a new process.
    await eventually(back, within=8, step=0.25)
    body, _ = await call_tool(mcp, alice_token, "tools__pid")
    assert int(body["result"]["content"][0]["text"]) != pid
    assert ("tools__ping_back", "upstream_unavailable") in await outcomes()


async def test_a_slow_upstream_tool_is_a_timeout_error_within_the_upstream_timeout(site, mcp, alice_token) -> None:
    await add_upstream("slowpoke", fixture_command("raw_server.py", "tools"), timeout=1)

    body, elapsed = await call_tool(mcp, alice_token, "slowpoke__slow", {"seconds": 5})

    assert body == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": tool_error("The upstream slowpoke did not answer within 1 seconds."),
    }
    assert 0.9 < elapsed < 1.5
    assert await outcomes() == [("slowpoke__slow", "upstream_timeout")]


async def test_an_answer_that_is_not_valid_mcp_is_a_tool_error_and_audited_as_invalid(site, mcp, alice_token) -> None:
    await add_upstream("junk", fixture_command("raw_server.py", "garbage"), timeout=5)

    body, elapsed = await call_tool(mcp, alice_token, "junk__garble")

    assert body == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": tool_error("The upstream junk gave an answer that is not valid MCP; the error has been logged."),
    }
    assert elapsed < 2
    assert await outcomes() == [("junk__garble", "upstream_invalid_response")]


async def test_the_upstreams_own_jsonrpc_error_passes_on_unchanged(site, mcp, alice_token) -> None:
    await add_upstream("junk", fixture_command("raw_server.py", "garbage"), timeout=5)

    body, _ = await call_tool(mcp, alice_token, "junk__reject", {"widget": 7})

    assert body == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32602, "message": "Widget 7 does not exist", "data": {"widget": 7}},
    }
    assert await outcomes() == [("junk__reject", "upstream_error")]


async def test_an_upstream_down_at_startup_is_left_out_of_tools_list_which_never_waits_for_it(
    site, mcp, alice_token
) -> None:
    # It reads its stdin and never answers: connecting would wait for its 30 s timeout.
    await add_upstream("mute", fixture_command("raw_server.py", "silent"), timeout=30, connect=False)
    await hub.reload()

    started = time.monotonic()
    r = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(alice_token))
    elapsed = time.monotonic() - started

    assert r.status_code == 200
    assert [tool["name"] for tool in r.json()["result"]["tools"]] == LOCAL_TOOLS
    assert elapsed < 1
    body, _ = await call_tool(mcp, alice_token, "mute__anything")
    assert body["error"] == {"code": -32602, "message": "Unknown tool: mute__anything"}


STORED_CATALOG = {
    "tools": [{"name": "lookup", "description": "Find a thing.", "inputSchema": {"type": "object"}}],
    "prompts": [],
    "resources": [],
    "resource_templates": [],
}


def create_with_stored_catalog() -> None:
    """The upstream as an earlier run left it: its last good catalog stored, in the same transaction
    (the hub reloads when it commits, and must find the catalog then)."""
    with transaction.atomic():
        upstream = upstream_create(
            name="mute", target=target_from(url=None, command=fixture_command("raw_server.py", "silent")), timeout=30
        )
        UpstreamStatus.objects.create(upstream=upstream, catalog=STORED_CATALOG, server_name="mute")


async def test_an_upstream_down_at_startup_serves_its_stored_catalog_and_its_calls_fail_fast(
    site, mcp, alice_token
) -> None:
    await sync_to_async(create_with_stored_catalog)()
    await hub.reload()

    started = time.monotonic()
    r = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(alice_token))
    listed = time.monotonic() - started
    body, elapsed = await call_tool(mcp, alice_token, "mute__lookup")

    assert r.json()["result"]["tools"][3:] == [
        {"name": "mute__lookup", "description": "Find a thing.", "inputSchema": {"type": "object"}}
    ]
    assert listed < 1
    assert body["result"] == tool_error("The upstream mute is unavailable; try again later.")
    assert elapsed < 1
    assert await outcomes() == [("mute__lookup", "upstream_unavailable")]
    assert await sync_to_async(Upstream.objects.count)() == 1
