"""Per-call headers on a shared upstream session: each request carries its own caller's, and no other's."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.percall import call_headers, with_call_headers
from tests.gateway.fixtures import headers_server_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.anyio


async def seen(client: Client) -> dict[str, str]:
    """The HTTP headers headers_server.py got for one tools/call."""
    result = await client.call_tool("headers", {})
    assert result.is_error is False
    received: dict[str, str] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return received


def session(url: str, **headers: str) -> Client:
    http = httpx2.AsyncClient(headers=headers)
    return Client(with_call_headers(streamable_http_client(url, http_client=http)), mode="auto", cache=None)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_call_carries_its_headers_over_the_sessions_and_the_next_call_does_not(
    headers_server: str, mode: str
) -> None:
    http = httpx2.AsyncClient(headers={"X-Operator": "shared"})
    transport = with_call_headers(streamable_http_client(headers_server, http_client=http))
    async with Client(transport, mode=mode, cache=None) as client:  # type: ignore[arg-type]
        with call_headers({"X-Person": "alice", "X-Operator": "per-call"}):
            during = await seen(client)
        after = await seen(client)

    assert (during["x-person"], during["x-operator"]) == ("alice", "per-call")
    assert "x-person" not in after and after["x-operator"] == "shared"
    # The SDK's own per-message headers are still there.
    assert "mcp-protocol-version" in during


async def test_concurrent_calls_on_one_session_each_carry_only_their_own_callers_headers(headers_server: str) -> None:
    results: dict[str, list[dict[str, str]]] = {"alice": [], "bob": []}

    async def calls(client: Client, person: str) -> None:
        for _ in range(10):
            with call_headers({"X-Person": person}):
                results[person].append(await seen(client))

    async with session(headers_server) as client, anyio.create_task_group() as group:
        group.start_soon(calls, client, "alice")
        group.start_soon(calls, client, "bob")

    assert [r["x-person"] for r in results["alice"]] == ["alice"] * 10
    assert [r["x-person"] for r in results["bob"]] == ["bob"] * 10
