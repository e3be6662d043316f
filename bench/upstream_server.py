"""The upstream of the gateway benchmark: the ``mcp`` SDK's MCPServer with one ``echo`` tool behind a bearer check.

Stands for an organisation's existing MCP server that has a static credential of its own (the
``Authorization: Bearer …`` header an operator gives ``add_upstream --header``). Stateless, JSON
responses, no database. Run as ``uvicorn bench.upstream_server:app`` with ``BENCH_UPSTREAM_TOKEN``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TOKEN = os.environ.get("BENCH_UPSTREAM_TOKEN", "upstreamtoken456")

server = MCPServer("bench-upstream")


@server.tool()
def echo(text: str) -> str:
    """Return the text as given."""
    return text


mcp_app = server.streamable_http_app(
    json_response=True,
    stateless_http=True,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The MCP app behind one constant-time check of ``Authorization: Bearer TOKEN`` (401 otherwise)."""
    if scope["type"] == "http":
        expected = f"Bearer {TOKEN}".encode()
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, expected):
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
    await mcp_app(scope, receive, send)
