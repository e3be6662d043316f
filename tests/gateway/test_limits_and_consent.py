"""The bound on stdio processes per worker, and upstream scopes on the consent page."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from gateway.models import Transport, UpstreamStatus
from gateway.runtime import hub
from gateway.services import Target, upstream_create
from oauth_ext.models import Client
from tests.conftest import PKCE, Flow, authorize_params
from tests.mcp_bridge.conftest import bearer, rpc

from .fixtures import add_upstream, eventually, fixture_command

SCOPES = {"mcp": "Use the organisation's MCP tools as you", "db:read": "Read the reporting databases"}


@pytest.mark.anyio
async def test_a_worker_starts_no_more_stdio_upstreams_than_its_bound(
    mcp: Any, alice_token: str, settings: Any
) -> None:
    """MCPGATE_UPSTREAM_STDIO_MAX: the first upstreams by id run; the next is not started, and says why."""
    settings.MCPGATE_UPSTREAM_STDIO_MAX = 1
    await add_upstream("first", fixture_command("raw_server.py", "tools"))
    await add_upstream("second", fixture_command("raw_server.py", "tools"))

    listed = (await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(alice_token))).json()["result"]["tools"]
    names = {tool["name"] for tool in listed}
    assert "first__pid" in names
    assert not any(name.startswith("second__") for name in names)
    [second] = [link for link in hub.links.values() if link.config.name == "second"]
    assert second.client is None
    why = "not started: this worker already runs MCPGATE_UPSTREAM_STDIO_MAX (1) stdio upstreams"

    async def recorded() -> bool:
        status = await UpstreamStatus.objects.filter(upstream__name="second").afirst()
        return status is not None and status.last_error == why

    await eventually(recorded, within=15)


@override_settings(MCPGATE_SCOPES=SCOPES)
def test_the_consent_page_names_the_upstreams_a_scope_unlocks(flow: Flow, public_client: Client) -> None:
    upstream_create(
        name="reports", target=Target(Transport.STREAMABLE_HTTP, url="http://127.0.0.1:9/mcp"), scopes=["db:read"]
    )
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make(), scope="mcp db:read"))

    assert page.status_code == 200
    assert page.context["scope_rows"][1] == ("db:read", "Read the reporting databases", ["reports (all its tools)"])
    assert "Tools: reports (all its tools)" in page.content.decode()
