"""mcp-remote (what Cursor and other stdio-only clients use) against /mcp under gunicorn (issue 3).

mcp-remote runs its own OAuth flow: dynamic registration as a native client with a loopback
redirect on ``--host 127.0.0.1``, PKCE, and the authorization URL opened through ``BROWSER``.
Here ``BROWSER`` is a script that plays Alice signed in at oauth2-proxy (tests/e2e/browser.py):
it consents and then requests the loopback callback, where mcp-remote is waiting. The test is
the MCP client on mcp-remote's stdio side (the ``mcp`` SDK's stdio client), as an editor would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.client import Client
from mcp_types import CallToolResult
from oauth2_provider.models import get_access_token_model

from oauth_ext.models import Client as OAuthClient
from tests.ports import free_port

from .mcpremote import browser_script, browser_visits, mcp_remote_params, run_mcp_remote, stored_tokens
from .oauthclient import ALICE
from .server import GunicornServer
from .tools import NodeTools, node_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return node_tools()


def test_mcp_remote_authorizes_itself_and_calls_a_tool(
    tools: NodeTools, gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    """mcp-remote: 401 → discovery → registration → browser → callback → token; then whoami over stdio."""
    url = gunicorn_server.internal + "/mcp"
    config_dir = tmp_path / "mcp-auth"
    config_dir.mkdir()
    browser, record = browser_script(tmp_path, "tests.e2e.browser")
    callback_port = free_port()
    stderr_path = tmp_path / "mcp-remote.stderr"
    params = mcp_remote_params(
        tools,
        url,
        callback_port,
        config_dir=config_dir,
        browser=browser,
        env={"E2E_BROWSER_RECORD": str(record), "E2E_BROWSER_HEADERS": json.dumps(ALICE)},
    )
    results: dict[str, CallToolResult] = {}
    listed: list[str] = []

    async def steps(client: Client) -> None:
        listed.extend(sorted(tool.name for tool in (await client.list_tools()).tools))
        results["whoami"] = await client.call_tool("whoami", {})

    run_mcp_remote(params, steps, stderr_path=stderr_path, record=record)

    # The browser script went through consent and delivered the code to mcp-remote's callback.
    visits = browser_visits(record)
    assert len(visits) == 1, visits
    assert "error" not in visits[0], visits[0]["error"]
    redirect = visits[0]["redirect"]
    gunicorn_server.remember(redirect["code"])
    assert visits[0]["callback_status"] == 200
    assert redirect["iss"] == gunicorn_server.internal

    # Tokens mcp-remote kept (never to appear in gunicorn's log either).
    for access_token, refresh_token in stored_tokens(config_dir):
        gunicorn_server.remember(access_token, refresh_token)

    assert listed == ["add_note", "list_notes", "whoami"]
    result = results["whoami"]
    assert not result.is_error, result
    identity = result.structured_content
    assert identity is not None
    assert identity["email"] == "alice@example.com"
    assert identity["scopes"] == ["mcp"]

    # What the server recorded: a native public client with mcp-remote's loopback callback.
    registered = OAuthClient.objects.get(client_id=identity["client_id"])
    assert registered.token_endpoint_auth_method == "none"
    assert registered.redirect_uris.split() == [f"http://127.0.0.1:{callback_port}/oauth/callback"]
    token = get_access_token_model().objects.get(application=registered, user__isnull=False)
    assert token.user.email == "alice@example.com"
    assert token.resource == [url]
