"""Reference point (b) of the benchmark: the ``mcp`` SDK's own MCPServer with bearer auth.

A static token verifier (no database) and one ``whoami``-like tool, served stateless with JSON
responses like mcpgate's /mcp. Run as ``uvicorn bench.sdk_server:app``.
"""

from __future__ import annotations

import os
import time

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

BASE = os.environ.get("BENCH_BASE", "http://127.0.0.1:8766")
TOKEN = os.environ.get("BENCH_TOKEN", "benchtoken123")


class StaticVerifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        if token != TOKEN:
            return None
        return AccessToken(
            token=token, client_id="bench", scopes=["mcp"], expires_at=int(time.time()) + 3600, resource=BASE + "/mcp"
        )


server = MCPServer(
    "sdk-reference",
    token_verifier=StaticVerifier(),
    auth=AuthSettings(
        issuer_url=BASE, resource_server_url=BASE + "/mcp", required_scopes=["mcp"], validate_token_resource=True
    ),
)


@server.tool()
def whoami() -> dict[str, str]:
    """Who is calling."""
    return {"email": "alice@example.com"}


app = server.streamable_http_app(
    json_response=True,
    stateless_http=True,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)
