"""Two upstreams that list the same resource URIs: each URI is listed once, and the first upstream by name serves it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gateway.runtime import hub
from tests.mcp_bridge.conftest import bearer, rpc

from .fixtures import EVERYTHING_COMMAND, add_upstream

pytestmark = pytest.mark.anyio


async def test_a_uri_two_upstreams_list_is_listed_once_and_read_from_the_first_by_name(
    mcp: Any, alice_token: str
) -> None:
    await add_upstream("zeta", EVERYTHING_COMMAND)
    await add_upstream("alpha", EVERYTHING_COMMAND)

    resources = (await mcp.post("/mcp", json=rpc("resources/list"), headers=bearer(alice_token))).json()["result"]
    templates = (await mcp.post("/mcp", json=rpc("resources/templates/list"), headers=bearer(alice_token))).json()
    uris = Counter(resource["uri"] for resource in resources["resources"])
    patterns = Counter(template["uriTemplate"] for template in templates["result"]["resourceTemplates"])

    assert uris and set(uris.values()) == {1}
    assert patterns and set(patterns.values()) == {1}
    first = next(iter(uris))
    link = hub.resource(first, frozenset())
    assert link is not None and link.config.name == "alpha"
    read = await mcp.post("/mcp", json=rpc("resources/read", {"uri": first}), headers=bearer(alice_token))
    assert read.json()["result"]["contents"][0]["uri"] == first
