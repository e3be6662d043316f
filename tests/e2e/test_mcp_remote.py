"""mcp-remote (what Cursor and other stdio-only clients use) against /mcp under gunicorn (issue 3).

mcp-remote runs its own OAuth flow: dynamic registration as a native client with a loopback
redirect on ``--host 127.0.0.1``, PKCE, and the authorization URL opened through ``BROWSER``.
Here ``BROWSER`` is a script that plays Alice signed in at oauth2-proxy (tests/e2e/browser.py):
it consents and then requests the loopback callback, where mcp-remote is waiting. The test is
the MCP client on mcp-remote's stdio side (the ``mcp`` SDK's stdio client), as an editor would be.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult
from oauth2_provider.models import get_access_token_model

from oauth_ext.models import Client as OAuthClient

from .oauthclient import ALICE
from .server import REPO, GunicornServer, free_port
from .tools import NodeTools, node_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return node_tools()


def browser_script(directory: Path) -> tuple[Path, Path]:
    """A ``BROWSER`` command that runs tests.e2e.browser in the background; and its record file."""
    record = directory / "browser.jsonl"
    log = directory / "browser.log"
    script = directory / "browser.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(REPO))} || exit 1\n"
        f'{shlex.quote(sys.executable)} -m tests.e2e.browser "$1" </dev/null >>{shlex.quote(str(log))} 2>&1 &\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script, record


def test_mcp_remote_authorizes_itself_and_calls_a_tool(
    tools: NodeTools, gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    """mcp-remote: 401 → discovery → registration → browser → callback → token; then whoami over stdio."""
    url = gunicorn_server.internal + "/mcp"
    config_dir = tmp_path / "mcp-auth"
    config_dir.mkdir()
    browser, record = browser_script(tmp_path)
    callback_port = free_port()
    stderr_path = tmp_path / "mcp-remote.stderr"
    params = StdioServerParameters(
        command=str(tools.node),
        args=[
            str(tools.mcp_remote),
            url,
            str(callback_port),
            "--host",
            "127.0.0.1",
            "--allow-http",
            "--transport",
            "http-only",
            "--auth-timeout",
            "60",
        ],
        env={
            "MCP_REMOTE_CONFIG_DIR": str(config_dir),
            "BROWSER": str(browser),
            "E2E_BROWSER_RECORD": str(record),
            "E2E_BROWSER_HEADERS": json.dumps(ALICE),
        },
    )
    results: dict[str, CallToolResult] = {}
    listed: list[str] = []

    async def main() -> None:
        with stderr_path.open("w") as errlog, anyio.fail_after(RUN_TIMEOUT):
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                listed.extend(sorted(tool.name for tool in (await client.list_tools()).tools))
                results["whoami"] = await client.call_tool("whoami", {})

    try:
        anyio.run(main)
    except BaseException as exc:
        browsed = record.read_text() if record.exists() else "(the browser was never opened)"
        raise AssertionError(
            f"mcp-remote failed\n--- stderr:\n{stderr_path.read_text()}\n--- browser:\n{browsed}"
        ) from exc

    # The browser script went through consent and delivered the code to mcp-remote's callback.
    visits = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(visits) == 1, visits
    assert "error" not in visits[0], visits[0]["error"]
    redirect = visits[0]["redirect"]
    gunicorn_server.remember(redirect["code"])
    assert visits[0]["callback_status"] == 200
    assert redirect["iss"] == gunicorn_server.internal

    # Tokens mcp-remote kept (never to appear in gunicorn's log either).
    for stored in config_dir.rglob("*_tokens.json"):
        saved = json.loads(stored.read_text())
        gunicorn_server.remember(saved.get("access_token"), saved.get("refresh_token"))

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
