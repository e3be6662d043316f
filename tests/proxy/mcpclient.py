"""The ``mcp`` SDK's client, both with its own OAuth provider and with a bearer token a test already holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult

from tests.e2e.oauthclient import MemoryTokenStorage, authorization_code_result, public_client_metadata

from . import credentials

TIMEOUT = 60.0


@dataclass
class OAuthRun:
    storage: MemoryTokenStorage = field(default_factory=MemoryTokenStorage)
    opened: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    whoami: dict[str, Any] = field(default_factory=dict)


def sdk_oauth_whoami(
    mcp_url: str, *, redirect_uri: str, client_name: str, approve: Callable[[str], dict[str, str]]
) -> OAuthRun:
    """Connect as Claude Code does (DCR, PKCE, loopback redirect), list tools, call whoami.

    ``approve(url)`` plays the person's browser for an authorization URL and returns the redirect's query.
    """
    run = OAuthRun()
    redirects: list[dict[str, str]] = []

    async def redirect_handler(url: str) -> None:
        run.opened.append(url)
        redirects.append(await anyio.to_thread.run_sync(approve, url))

    async def callback_handler() -> AuthorizationCodeResult:
        return authorization_code_result(redirects[-1])

    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=public_client_metadata(client_name, redirect_uri),
        storage=run.storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            async with (
                httpx2.AsyncClient(
                    auth=provider, trust_env=False, timeout=20.0, event_hooks=credentials.async_hooks()
                ) as http,
                Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client,
            ):
                run.tools = sorted(tool.name for tool in (await client.list_tools()).tools)
                result = await client.call_tool("whoami", {})
                assert not result.is_error, result
                assert result.structured_content is not None
                run.whoami = dict(result.structured_content)

    anyio.run(main)
    if run.storage.tokens is not None:
        credentials.remember(run.storage.tokens.access_token, run.storage.tokens.refresh_token)
    return run


def bearer_whoami(mcp_url: str, access_token: str, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Call whoami on ``mcp_url`` with a token obtained elsewhere (a cloud client's side)."""
    identity: dict[str, Any] = {}

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            async with (
                httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {access_token}", **(headers or {})},
                    trust_env=False,
                    timeout=20.0,
                    event_hooks=credentials.async_hooks(),
                ) as http,
                Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client,
            ):
                result = await client.call_tool("whoami", {})
                assert not result.is_error, result
                assert result.structured_content is not None
                identity.update(result.structured_content)

    anyio.run(main)
    return identity


def mcp_status(http: httpx2.Client, access_token: str, path: str = "/mcp") -> int:
    """The HTTP status /mcp gives a ping with ``access_token`` (200 admitted, 401 refused)."""
    credentials.remember(access_token)
    response = http.post(
        path,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-06-18",
        },
    )
    return response.status_code
