"""The bound on stdio processes per worker, upstream scopes on the consent page, upstream calls in /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from gateway.models import Transport, UpstreamStatus
from gateway.runtime import hub
from gateway.services import Target, upstream_create
from oauth_ext.models import Client
from tests.conftest import PKCE, Flow, authorize_params
from tests.mcp_bridge.conftest import bearer, call, rpc
from tests.mcpgate.test_metrics import grew, scrape_site

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


@pytest.mark.anyio
async def test_an_upstream_tool_call_is_counted_by_its_name_and_its_upstream(
    site: Any, mcp: Any, alice_token: str
) -> None:
    """/metrics: a routed upstream tool keeps its name as the tool label (the operator's upstreams bound
    those names); the request to the upstream is counted under the upstream."""
    await add_upstream("raw", fixture_command("raw_server.py", "tools"))
    before = await scrape_site(site)

    answer = await mcp.post("/mcp", json=call("raw__ping_back", {"text": "hi"}), headers=bearer(alice_token))
    after = await scrape_site(site)

    assert answer.json()["result"]["isError"] is False
    assert grew(before, after, "mcpgate_tool_calls_total", tool="raw__ping_back", outcome="ok") == 1
    assert grew(before, after, "mcpgate_tool_call_duration_seconds_count", tool="raw__ping_back") == 1
    assert grew(before, after, "mcpgate_tool_calls_total", tool="_unknown", outcome="ok") == 0
    assert grew(before, after, "mcpgate_upstream_call_duration_seconds_count", upstream="raw", outcome="ok") == 1
