"""mcp_bridge.fastpath answers exactly as the SDK's own transport would: a corpus through both, byte for byte.

The same requests go to the site with the fast path and to one without it (every request through the
SDK's StreamableHTTPSessionManager), one after the other on the same database, with the same token;
status, every header and the body must be identical. The corpus covers what the fast path takes (each
2025 version and none, ids of both kinds, every method mcpgate serves, errors of the handlers, of
validation and of the dispatcher) and what it must leave to the SDK (initialize, notifications,
2026-07-28, a wrong Accept or Content-Type).
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import HANDSHAKE_VERSIONS, MCP_HEADERS, bearer, call, envelope, http_client, modern, rpc, serving
from .test_transport import initialize

pytestmark = pytest.mark.anyio

Request = tuple[dict[str, Any] | bytes, dict[str, str]]
COMPLETION = {"ref": {"type": "ref/prompt", "name": "x"}, "argument": {"name": "a", "value": "b"}}


def corpus(token: str) -> list[Request]:
    """(body, headers) pairs; a dict body is sent as JSON."""
    requests: list[Request] = []
    for version in (*HANDSHAKE_VERSIONS, None):
        headers = bearer(token, version)
        requests += [
            (rpc("tools/list"), headers),
            (rpc("tools/list", id="a-string-id"), headers),
            (call("whoami"), headers),
            (call("list_notes"), headers),
            (call("list_notes", {"limit": 0}), headers),
            (call("list_notes", {"limit": "many"}), headers),
            (call("no_such_tool"), headers),
            (rpc("tools/call", {"arguments": {}}), headers),
            (rpc("tools/call"), headers),
            (rpc("prompts/list"), headers),
            (rpc("prompts/get", {"name": "nope"}), headers),
            (rpc("resources/list"), headers),
            (rpc("resources/templates/list"), headers),
            (rpc("resources/read", {"uri": "demo://nowhere"}), headers),
            (
                rpc(
                    "completion/complete",
                    {"ref": {"type": "ref/prompt", "name": "x"}, "argument": {"name": "a", "value": "b"}},
                ),
                headers,
            ),
            (rpc("ping"), headers),
            (rpc("logging/setLevel", {"level": "debug"}), headers),
            (rpc("no/such/method"), headers),
            (rpc("tools/list", {"cursor": 5}), headers),
            (rpc("tools/list", {"_meta": {"progressToken": "p1"}}), headers),
        ]
    handshake = bearer(token)
    requests += [
        (initialize("2025-06-18"), handshake),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, handshake),
        ({"jsonrpc": "2.0", "id": 7, "result": {}}, handshake),
        (rpc("tools/call", envelope({"name": "whoami", "arguments": {}})), modern(token, "tools/call", "whoami")),
        (rpc("tools/list", envelope()), modern(token, "tools/list")),
        (call("whoami"), {**handshake, "Accept": "text/event-stream"}),
        (call("whoami"), {**handshake, "Accept": "application/json"}),
        (call("whoami"), {**handshake, "Content-Type": "application/json; charset=utf-8"}),
        (call("whoami"), {**handshake, "Content-Type": "text/plain"}),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"', handshake),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}', handshake),
    ]
    return requests


async def answers(app: Any, requests: list[Request]) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    replies = []
    async with http_client(app) as client:
        for body, headers in requests:
            if isinstance(body, bytes):
                response = await client.post("/mcp", content=body, headers=headers)
            else:
                response = await client.post("/mcp", json=body, headers=headers)
            replies.append((response.status_code, sorted(response.headers.multi_items()), response.content))
    return replies


async def test_the_fast_path_answers_byte_for_byte_as_the_sdk(transactional_db: Any, alice_token: str) -> None:
    requests = corpus(alice_token)
    async with serving(fast_path=False) as sdk_site:
        through_sdk = await answers(sdk_site, requests)
    async with serving(fast_path=True) as fast_site:
        through_fast = await answers(fast_site, requests)

    assert len(through_fast) == len(requests) > 80
    for (body, headers), sdk, fast in zip(requests, through_sdk, through_fast, strict=True):
        assert fast == sdk, (body, headers.get("MCP-Protocol-Version"))
    # The corpus reaches the handlers, not only refusals.
    assert sum(status == 200 and b'"result"' in content for status, _, content in through_fast) > 40


async def test_the_fast_path_serves_a_2025_request_without_the_sdks_transport(
    transactional_db: Any, alice_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proof that the comparison above compared two paths: with the fast path, the session manager is
    not reached for a 2025-era tools/call, and is for initialize."""
    async with serving(fast_path=True) as site:
        reached: list[str] = []
        original = site.mcp_endpoint.manager.handle_request

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            reached.append("sdk")
            await original(scope, receive, send)

        monkeypatch.setattr(site.mcp_endpoint.manager, "handle_request", spy)
        async with http_client(site) as client:
            called = await client.post("/mcp", json=call("whoami"), headers=bearer(alice_token))
            assert reached == []
            started = await client.post("/mcp", json=initialize("2025-06-18"), headers=bearer(alice_token))
            assert reached == ["sdk"]
    assert called.status_code == started.status_code == 200
    assert MCP_HEADERS["Accept"]  # the harness's own Accept, as a real client sends it
