"""/mcp through the gateway: server-everything (npm) behind it, answered in-process by the real ASGI app and hub.

Each behaviour is checked for a 2025-06-18 request (no session: the server is stateless) and a
2026-07-28 one (envelope in ``_meta``, Mcp-Method / Mcp-Name headers). What server-everything
offers is read with a direct SDK ``Client`` to the same command, so the comparison is exact.
The query budget of an upstream call, and changes taking effect while the site runs (a changed
tool list, an upstream removed or added), use the hand-written fixtures/raw_server.py.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

from audit.models import AuditEvent, AuditKind
from gateway.services import target_from, upstream_create
from mcp_bridge.server import arguments_digest
from tests.gateway.fixtures import (
    EVERYTHING_COMMAND,
    LOCAL_TOOLS,
    add_upstream,
    eventually,
    fixture_command,
    process_gone,
    remove_upstream,
)
from tests.mcp_bridge.conftest import (
    HANDSHAKE_VERSION,
    MODERN_VERSION,
    bearer,
    call,
    envelope,
    modern,
    rpc,
    thread_statements,
)
from tests.personas import ALICE

pytestmark = pytest.mark.anyio

VERSIONS = (HANDSHAKE_VERSION, MODERN_VERSION)


async def ask(
    mcp: httpx2.AsyncClient,
    token: str,
    version: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    name: str | None = None,
) -> httpx2.Response:
    """One JSON-RPC request as a client of ``version`` sends it (2026-07-28: envelope and routing headers)."""
    if version == MODERN_VERSION:
        return await mcp.post("/mcp", json=rpc(method, envelope(params)), headers=modern(token, method, name))
    return await mcp.post("/mcp", json=rpc(method, params), headers=bearer(token, version))


def result_of(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "error" not in body, body
    result: dict[str, Any] = body["result"]
    return result


def plain(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what the SDK adds for 2026-07-28 (``resultType``, ``_meta``)."""
    return {k: v for k, v in result.items() if k not in ("resultType", "_meta")}


def dumped(item: Any, *, version: str = HANDSHAKE_VERSION) -> dict[str, Any]:
    """An SDK object as JSON on the wire to a client of ``version``: ``resultType`` and ``_meta`` left out
    (the SDK adds or drops them by version), and for 2026-07-28 the 2025-11-25 tasks field ``execution``
    (the SDK's server leaves it out of 2026-07-28 answers whoever the tool belongs to)."""
    data: dict[str, Any] = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    dropped = {"resultType", "_meta"} | ({"execution"} if version == MODERN_VERSION else set())
    return {k: v for k, v in data.items() if k not in dropped}


@dataclass(frozen=True)
class Direct:
    """What server-everything answers a client of its own (no gateway in between)."""

    tools: list[Any]
    resources: list[Any]
    templates: list[Any]
    prompts: list[Any]
    calls: dict[str, Any]
    first_read: Any
    prompt: Any


SUM = {"a": 2, "b": 40}
WEATHER = {"location": "New York"}
CITY = {"city": "Lisbon", "state": "Lisboa"}
TEMPLATED = "demo://resource/dynamic/text/3"


async def _ask_directly() -> Direct:
    program, *args = EVERYTHING_COMMAND
    async with Client(StdioServerParameters(command=program, args=args), mode="auto") as client:
        resources = (await client.list_resources()).resources
        return Direct(
            tools=(await client.list_tools()).tools,
            resources=resources,
            templates=(await client.list_resource_templates()).resource_templates,
            prompts=(await client.list_prompts()).prompts,
            calls={
                "get-sum": await client.call_tool("get-sum", SUM),
                "get-tiny-image": await client.call_tool("get-tiny-image", {}),
                "get-structured-content": await client.call_tool("get-structured-content", WEATHER),
            },
            first_read=await client.read_resource(str(resources[0].uri)),
            prompt=await client.get_prompt("args-prompt", CITY),
        )


@pytest.fixture(scope="module")
def direct() -> Direct:
    """Asked once for the module: server-everything's answers do not depend on who asks."""
    return anyio.run(_ask_directly)


@pytest.fixture
async def every(site: Any, transactional_db: Any) -> None:
    """server-everything behind the gateway as ``every`` (stdio, no credentials)."""
    await add_upstream("every", EVERYTHING_COMMAND)


async def test_tools_list_shows_local_tools_then_the_upstream_tools_with_schemas_and_annotations_unchanged(
    every, mcp, alice_token, direct
) -> None:
    for version in VERSIONS:
        tools = result_of(await ask(mcp, alice_token, version, "tools/list"))["tools"]

        names = [tool["name"] for tool in tools]
        assert names[:3] == LOCAL_TOOLS
        assert names[3:] == [f"every__{tool.name}" for tool in direct.tools]
        assert {"every__echo", "every__get-sum", "every__get-tiny-image"} <= set(names)
        for seen, tool in zip(tools[3:], direct.tools, strict=True):
            assert seen == {**dumped(tool, version=version), "name": f"every__{tool.name}"}
        echo = tools[names.index("every__echo")]
        assert echo["annotations"]["readOnlyHint"] is True
        assert echo["inputSchema"]["properties"]["message"]["type"] == "string"


async def test_calling_upstream_echo_and_get_sum_answers_as_the_upstream_does(every, mcp, alice_token, direct) -> None:
    for version in VERSIONS:
        echo = await ask(
            mcp,
            alice_token,
            version,
            "tools/call",
            {"name": "every__echo", "arguments": {"message": "hi"}},
            name="every__echo",
        )
        total = await ask(
            mcp,
            alice_token,
            version,
            "tools/call",
            {"name": "every__get-sum", "arguments": SUM},
            name="every__get-sum",
        )

        assert plain(result_of(echo)) == {"content": [{"type": "text", "text": "Echo: hi"}], "isError": False}
        assert plain(result_of(total)) == {"isError": False, **dumped(direct.calls["get-sum"])}
        assert "42" in result_of(total)["content"][0]["text"]


async def test_upstream_image_and_structured_content_pass_unchanged(every, mcp, alice_token, direct) -> None:
    for version in VERSIONS:
        image = await ask(
            mcp, alice_token, version, "tools/call", {"name": "every__get-tiny-image"}, name="every__get-tiny-image"
        )
        weather = await ask(
            mcp,
            alice_token,
            version,
            "tools/call",
            {"name": "every__get-structured-content", "arguments": WEATHER},
            name="every__get-structured-content",
        )

        content = result_of(image)["content"]
        assert content == dumped(direct.calls["get-tiny-image"])["content"]
        png = next(item for item in content if item["type"] == "image")
        assert png["mimeType"] == "image/png"
        assert base64.b64decode(png["data"]).startswith(b"\x89PNG")
        structured = result_of(weather)
        assert plain(structured) == {"isError": False, **dumped(direct.calls["get-structured-content"])}
        assert structured["structuredContent"]["temperature"] == 33


async def test_upstream_resources_are_listed_and_read_by_listed_and_templated_uri(
    every, mcp, alice_token, direct
) -> None:
    uri = str(direct.resources[0].uri)
    assert uri.startswith("demo://")
    for version in VERSIONS:
        resources = result_of(await ask(mcp, alice_token, version, "resources/list"))["resources"]
        templates = result_of(await ask(mcp, alice_token, version, "resources/templates/list"))["resourceTemplates"]
        read = result_of(await ask(mcp, alice_token, version, "resources/read", {"uri": uri}, name=uri))
        dynamic = result_of(await ask(mcp, alice_token, version, "resources/read", {"uri": TEMPLATED}, name=TEMPLATED))

        assert resources == [dumped(resource) for resource in direct.resources]
        assert templates == [dumped(template) for template in direct.templates]
        assert read["contents"] == dumped(direct.first_read)["contents"]
        # The dynamic resource's text carries the time it was made: the rest is compared.
        assert [{**c, "text": c["text"].split(" created at ")[0]} for c in dynamic["contents"]] == [
            {"uri": TEMPLATED, "mimeType": "text/plain", "text": "Resource 3: This is a plaintext resource"}
        ]


async def test_upstream_prompts_are_listed_prefixed_and_got_with_arguments(every, mcp, alice_token, direct) -> None:
    for version in VERSIONS:
        prompts = result_of(await ask(mcp, alice_token, version, "prompts/list"))["prompts"]
        prompt = await ask(
            mcp,
            alice_token,
            version,
            "prompts/get",
            {"name": "every__args-prompt", "arguments": CITY},
            name="every__args-prompt",
        )

        assert prompts == [{**dumped(p), "name": f"every__{p.name}"} for p in direct.prompts]
        assert plain(result_of(prompt)) == dumped(direct.prompt)
        assert "Lisbon" in result_of(prompt)["messages"][0]["content"]["text"]


async def test_completion_of_an_upstream_prompt_argument_is_routed_to_it(every, mcp, alice_token) -> None:
    params = {
        "ref": {"type": "ref/prompt", "name": "every__completable-prompt"},
        "argument": {"name": "department", "value": "E"},
    }
    for version in VERSIONS:
        r = await ask(mcp, alice_token, version, "completion/complete", params)

        assert result_of(r)["completion"]["values"] == ["Engineering"]


async def test_each_upstream_call_writes_one_audit_row_naming_the_upstream_never_the_argument_values(
    every, mcp, alice_token
) -> None:
    r = await mcp.post("/mcp", json=call("every__echo", {"message": "s3cr3t-value"}), headers=bearer(alice_token))
    assert result_of(r)["isError"] is False

    rows = await sync_to_async(list)(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).select_related("user"))

    assert len(rows) == 1
    detail = rows[0].detail
    assert set(detail) == {"tool", "upstream", "outcome", "duration_ms", "arguments_sha256"}
    assert (detail["tool"], detail["upstream"], detail["outcome"]) == ("every__echo", "every", "ok")
    assert detail["arguments_sha256"] == arguments_digest({"message": "s3cr3t-value"})
    assert "s3cr3t-value" not in json.dumps(detail)
    assert rows[0].user.username == ALICE


@pytest.fixture
def quiet_hub(settings: Any) -> None:
    """The hub's poll held off for the test (requested before ``site``, so before the hub starts)."""
    settings.MCPGATE_UPSTREAM_POLL_SECONDS = 3600


async def test_an_upstream_tools_call_costs_at_most_two_sql_statements_on_the_request_path(
    quiet_hub, site, mcp, alice_token, loop_statements
) -> None:
    """Admission's token lookup and the audit row, nothing per upstream.

    The request's database work runs in the event loop's default executor, which the ``site``
    fixture makes one thread: its connection is the request path's, and a wrapper on it counts
    every statement; on PostgreSQL the lookup is sent from the event loop (``loop_statements``).
    The hub's own queries (its poll, its health writes) go through the same
    executor, so they are held off for the test: the poll period is an hour (``quiet_hub``),
    and health is only written by the poll loop; the loop's last turn (after the upstream was
    added) is over once the upstream is connected.
    """
    await add_upstream("tools", fixture_command("raw_server.py", "tools"))
    async with thread_statements() as statements:
        r = await mcp.post("/mcp", json=call("tools__ping_back", {"text": "hi"}), headers=bearer(alice_token))

    assert result_of(r)["content"] == [{"type": "text", "text": "hi"}]
    statements += loop_statements
    assert len(statements) <= 2, statements
    assert any("oauth2_provider_accesstoken" in sql for sql in statements)
    assert any(sql.startswith("INSERT INTO") and "auditevent" in sql for sql in statements)


async def test_an_upstream_that_announces_a_changed_tool_list_has_the_new_tool_listed_within_seconds(
    site, mcp, alice_token
) -> None:
    await add_upstream("tools", fixture_command("raw_server.py", "tools"))

    r = await mcp.post("/mcp", json=call("tools__grow", {"name": "sprout"}), headers=bearer(alice_token))
    assert result_of(r)["content"] == [{"type": "text", "text": "added sprout"}]

    async def listed() -> bool:
        r = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(alice_token))
        return "tools__sprout" in [tool["name"] for tool in result_of(r)["tools"]]

    await eventually(listed, within=2)
    r = await mcp.post("/mcp", json=call("tools__sprout"), headers=bearer(alice_token))
    assert result_of(r)["isError"] is False


async def test_a_removed_upstream_vanishes_from_tools_list_and_its_process_exits(site, mcp, alice_token) -> None:
    await add_upstream("tools", fixture_command("raw_server.py", "tools"))
    r = await mcp.post("/mcp", json=call("tools__pid"), headers=bearer(alice_token))
    pid = int(result_of(r)["content"][0]["text"])

    await remove_upstream("tools")

    async def vanished() -> bool:
        r = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(alice_token))
        return [tool["name"] for tool in result_of(r)["tools"]] == LOCAL_TOOLS

    async def exited() -> bool:
        return process_gone(pid)

    await eventually(vanished, within=3)
    await eventually(exited, within=5)


async def test_an_upstream_added_while_running_is_served_without_a_restart(settings, site, mcp, alice_token) -> None:
    """No ``hub.reload()`` here: the change reaches the hub by its own means (this process's
    announcement on commit, else the poll), within the poll period and the time to connect."""
    await sync_to_async(upstream_create)(
        name="late", target=target_from(url=None, command=fixture_command("raw_server.py", "tools"))
    )

    async def served() -> bool:
        r = await mcp.post("/mcp", json=call("late__ping_back", {"text": "here"}), headers=bearer(alice_token))
        body = r.json()
        return "result" in body and body["result"]["content"] == [{"type": "text", "text": "here"}]

    await eventually(served, within=settings.MCPGATE_UPSTREAM_POLL_SECONDS + 5, step=0.1)
