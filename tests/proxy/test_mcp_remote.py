"""mcp-remote (Cursor's shim for stdio-only clients) through oauth2-proxy: its own OAuth flow, with
the browser sent to the provider's sign-in by oauth2-proxy, then whoami over its stdio side."""

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

from tests.e2e.server import free_port
from tests.e2e.tools import NodeTools, node_tools

from . import credentials, mockoidc
from .deployment import REPO, Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return node_tools()


def browser_script(directory: Path) -> tuple[Path, Path]:
    """A ``BROWSER`` command that runs tests.proxy.browser_cli in the background; and its record file."""
    record = directory / "browser.jsonl"
    log = directory / "browser.log"
    script = directory / "browser.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(REPO))} || exit 1\n"
        f'{shlex.quote(sys.executable)} -m tests.proxy.browser_cli "$1" </dev/null >>{shlex.quote(str(log))} 2>&1 &\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script, record


def test_mcp_remote_signs_in_through_oauth2_proxy_and_calls_whoami(
    tools: NodeTools, deployed: Deployment, tmp_path: Path
) -> None:
    config_dir = tmp_path / "mcp-auth"
    config_dir.mkdir()
    browser, record = browser_script(tmp_path)
    callback_port = free_port()
    stderr_path = tmp_path / "mcp-remote.stderr"
    sign_ins_before = len(deployed.mock.sign_ins)
    params = StdioServerParameters(
        command=str(tools.node),
        args=[
            str(tools.mcp_remote),
            deployed.internal + "/mcp",
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
            "PROXY_BROWSER_RECORD": str(record),
            "PROXY_BROWSER_HEADERS": json.dumps(
                {mockoidc.PERSON_HEADER: "alice@example.com", mockoidc.GROUPS_HEADER: "eng"}
            ),
        },
    )
    results: dict[str, CallToolResult] = {}

    async def main() -> None:
        with stderr_path.open("w") as errlog, anyio.fail_after(RUN_TIMEOUT):
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                results["whoami"] = await client.call_tool("whoami", {})

    try:
        anyio.run(main)
    except BaseException as exc:
        browsed = record.read_text() if record.exists() else "(the browser was never opened)"
        raise AssertionError(
            f"mcp-remote failed\n--- stderr:\n{stderr_path.read_text()}\n--- browser:\n{browsed}"
        ) from exc

    visits = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(visits) == 1 and "error" not in visits[0], visits
    assert visits[0]["callback_status"] == 200
    credentials.remember(visits[0]["redirect"]["code"])
    for stored in config_dir.rglob("*_tokens.json"):
        saved = json.loads(stored.read_text())
        credentials.remember(saved.get("access_token"), saved.get("refresh_token"))

    identity = results["whoami"].structured_content
    assert identity is not None, results["whoami"]
    assert (identity["email"], identity["groups"], identity["host"]) == ("alice@example.com", ["eng"], "internal")
    assert deployed.mock.sign_ins[sign_ins_before:] == ["alice@example.com"]
