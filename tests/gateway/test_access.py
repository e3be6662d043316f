"""Who reaches an upstream (groups, scopes), and what an upstream gets from mcpgate: its own credentials, nothing else.

Alice is in "eng", Bob in "sales" (tests/mcp_bridge/conftest.py). The upstreams are real processes:
server-everything over stdio, and a Streamable HTTP server of our own that reports the headers it got.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.gateway.fixtures import (  # noqa: F401  (fixtures)
    EVERYTHING_COMMAND,
    LOCAL_TOOLS,
    add_upstream,
    headers_server_fixture,
    upstream_keys_fixture,
)
from tests.mcp_bridge.conftest import bearer, call, rpc

pytestmark = pytest.mark.anyio

README = "demo://resource/static/document/architecture.md"


async def test_an_upstream_limited_to_a_group_is_invisible_and_unknown_to_everyone_else(
    site, mcp, alice_token, bob_token
) -> None:
    await add_upstream("every", EVERYTHING_COMMAND, groups=["eng"])

    async def listed(token: str, method: str, key: str) -> list[Any]:
        r = await mcp.post("/mcp", json=rpc(method), headers=bearer(token))
        assert r.status_code == 200
        items: list[Any] = r.json()["result"][key]
        return items

    alice_tools = [t["name"] for t in await listed(alice_token, "tools/list", "tools")]
    assert "every__echo" in alice_tools
    assert await listed(alice_token, "prompts/list", "prompts")
    assert await listed(alice_token, "resources/list", "resources")
    r = await mcp.post("/mcp", json=call("every__echo", {"message": "hi"}), headers=bearer(alice_token))
    assert r.json()["result"]["content"] == [{"type": "text", "text": "Echo: hi"}]

    assert [t["name"] for t in await listed(bob_token, "tools/list", "tools")] == LOCAL_TOOLS
    assert await listed(bob_token, "prompts/list", "prompts") == []
    assert await listed(bob_token, "resources/list", "resources") == []
    assert await listed(bob_token, "resources/templates/list", "resourceTemplates") == []
    r = await mcp.post("/mcp", json=call("every__echo", {"message": "hi"}), headers=bearer(bob_token))
    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool: every__echo"}}
    r = await mcp.post("/mcp", json=rpc("prompts/get", {"name": "every__simple-prompt"}), headers=bearer(bob_token))
    assert r.json()["error"] == {"code": -32602, "message": "Unknown prompt: every__simple-prompt"}
    r = await mcp.post("/mcp", json=rpc("resources/read", {"uri": README}), headers=bearer(bob_token))
    assert r.json()["error"] == {"code": -32002, "message": "Resource not found", "data": {"uri": README}}


SCOPED_REQUESTS = (
    call("every__echo", {"message": "hi"}),
    rpc("prompts/get", {"name": "every__simple-prompt"}),
    rpc("resources/read", {"uri": README}),
)


async def test_an_upstream_needing_a_scope_answers_403_insufficient_scope_without_it_and_serves_with_it(
    settings, site, mcp, alice, make_token
) -> None:
    # Read at call time (oauth_ext.scopes.all_scopes): the upstream may then require it.
    settings.MCPGATE_SCOPES = {**settings.MCPGATE_SCOPES, "db:read": "Read the database"}
    await add_upstream("every", EVERYTHING_COMMAND, scopes=["db:read"])
    without = await sync_to_async(make_token)(alice)
    with_scope = await sync_to_async(make_token)(alice, scope="mcp db:read")

    for message in SCOPED_REQUESTS:  # tools/call, prompts/get, resources/read
        refused = await mcp.post("/mcp", json=message, headers=bearer(without))
        served = await mcp.post("/mcp", json=message, headers=bearer(with_scope))

        assert refused.status_code == 403, message
        challenge = refused.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ")
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="db:read mcp"' in challenge
        assert refused.json()["error"] == "insufficient_scope"
        assert "db:read" in refused.json()["error_description"]
        assert served.status_code == 200
        assert "result" in served.json(), served.json()


async def test_a_stdio_upstream_gets_its_configured_environment_and_none_of_mcpgates_secrets(
    monkeypatch, upstream_keys, site, mcp, alice_token
) -> None:
    monkeypatch.setenv("SECRET_KEY", "django-secret-of-mcpgate")
    monkeypatch.setenv("DATABASE_URL", "postgres://mcpgate:pw@db/mcpgate")
    monkeypatch.setenv("MCPGATE_UPSTREAM_KEYS", upstream_keys)
    monkeypatch.setenv("MCPGATE_ANYTHING", "internal")
    await add_upstream("every", EVERYTHING_COMMAND, env={"EVERY_FLAVOUR": "mint"})

    r = await mcp.post("/mcp", json=call("every__get-env"), headers=bearer(alice_token))

    environment = json.loads(r.json()["result"]["content"][0]["text"])
    assert environment["EVERY_FLAVOUR"] == "mint"
    assert "PATH" in environment
    leaked = sorted(
        name for name in environment if name in ("SECRET_KEY", "DATABASE_URL") or name.startswith("MCPGATE")
    )
    assert leaked == []
    assert "django-secret-of-mcpgate" not in r.text


async def test_an_http_upstream_gets_its_configured_authorization_and_never_the_callers_token(
    upstream_keys, headers_server, site, mcp, alice_token
) -> None:
    await add_upstream("hdr", url=headers_server, headers={"Authorization": "Bearer upstream-secret"})

    r = await mcp.post("/mcp", json=call("hdr__headers"), headers=bearer(alice_token))

    assert r.json()["result"]["isError"] is False, r.text
    received = json.loads(r.json()["result"]["content"][0]["text"])
    assert received["authorization"] == "Bearer upstream-secret"
    assert alice_token not in json.dumps(received)
