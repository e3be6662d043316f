"""mcp-remote (Cursor's shim for stdio-only clients) through oauth2-proxy: its own OAuth flow, with
the browser sent to the provider's sign-in by oauth2-proxy, then whoami over its stdio side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.client import Client
from mcp_types import CallToolResult

from tests.e2e.mcpremote import browser_script, browser_visits, mcp_remote_params, run_mcp_remote, stored_tokens
from tests.e2e.tools import NodeTools, node_tools
from tests.ports import free_port

from . import credentials, mockoidc
from .deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return node_tools()


def test_mcp_remote_signs_in_through_oauth2_proxy_and_calls_whoami(
    tools: NodeTools, deployed: Deployment, tmp_path: Path
) -> None:
    config_dir = tmp_path / "mcp-auth"
    config_dir.mkdir()
    browser, record = browser_script(tmp_path, "tests.proxy.browser_cli")
    callback_port = free_port()
    stderr_path = tmp_path / "mcp-remote.stderr"
    sign_ins_before = len(deployed.mock.sign_ins)
    params = mcp_remote_params(
        tools,
        deployed.internal + "/mcp",
        callback_port,
        config_dir=config_dir,
        browser=browser,
        env={
            "PROXY_BROWSER_RECORD": str(record),
            "PROXY_BROWSER_HEADERS": json.dumps(
                {mockoidc.PERSON_HEADER: "alice@example.com", mockoidc.GROUPS_HEADER: "eng"}
            ),
        },
    )
    results: dict[str, CallToolResult] = {}

    async def steps(client: Client) -> None:
        results["whoami"] = await client.call_tool("whoami", {})

    run_mcp_remote(params, steps, stderr_path=stderr_path, record=record)

    visits = browser_visits(record)
    assert len(visits) == 1 and "error" not in visits[0], visits
    assert visits[0]["callback_status"] == 200
    credentials.remember(visits[0]["redirect"]["code"])
    for access_token, refresh_token in stored_tokens(config_dir):
        credentials.remember(access_token, refresh_token)

    identity = results["whoami"].structured_content
    assert identity is not None, results["whoami"]
    assert (identity["email"], identity["groups"], identity["host"]) == ("alice@example.com", ["eng"], "internal")
    assert deployed.mock.sign_ins[sign_ins_before:] == ["alice@example.com"]
