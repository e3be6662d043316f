"""Tools through real HTTP: listing (L3), calling (L4), scope step-up (R4), the built-in and example tools.

Alice is in group "eng", Bob in "sales". Besides the installed tools (whoami, list_notes, add_note),
tests declare throw-away tools with the same ``@tool`` decorator an organisation uses.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import pytest
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mcp_bridge.context import ToolContext
from mcp_bridge.registry import registry, tool
from tests.mcp_bridge.conftest import MODERN_VERSION, bearer, call, envelope, modern, rpc, stored_token
from tests.personas import ALICE

pytestmark = pytest.mark.anyio

INSTALLED = ["add_note", "list_notes", "whoami"]
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")  # MCP tools spec, "Tool names"


@pytest.fixture
def test_tools() -> Iterator[None]:
    """An engineers-only tool, one that refuses with a message, one that crashes."""

    @tool(title="Deploy status", groups=("eng",))
    def eng_status(ctx: ToolContext) -> str:
        """What is deployed where (engineers only)."""
        return "all green"

    @tool()
    def refuse(ctx: ToolContext) -> str:
        """Always says no, politely."""
        raise ToolError("The deploy window is closed until Monday.")

    @tool()
    def crash(ctx: ToolContext, n: int = 1) -> str:
        """Always fails, impolitely."""
        raise RuntimeError("connection to 10.0.0.5:5432 refused, password=hunter2")

    yield
    for name in ("eng_status", "refuse", "crash"):
        registry.remove(name)


@pytest.fixture
def alice_writer(alice, make_token) -> str:
    """A token of Alice's with the notes:write scope."""
    return make_token(alice, scope="mcp notes:write")


@pytest.fixture
def alice_token_row(alice_token) -> Any:
    return stored_token(alice_token)


async def tools_of(mcp: Any, token: str) -> dict[str, dict[str, Any]]:
    r = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(token))
    assert r.status_code == 200, r.text
    return {t["name"]: t for t in r.json()["result"]["tools"]}


async def result_of(mcp: Any, token: str, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await mcp.post("/mcp", json=call(name, arguments), headers=bearer(token))
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


def failure(text: str) -> dict[str, Any]:
    """A tool's own failure as MCP reports it: a result, not a JSON-RPC error (L4)."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


# -- L3: tools/list ------------------------------------------------------------------------------


async def test_tools_list_names_and_schemas(mcp, alice_token) -> None:
    tools = await tools_of(mcp, alice_token)

    assert sorted(tools) == INSTALLED
    for name, listed in tools.items():
        assert TOOL_NAME.match(name)
        assert listed["inputSchema"]["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(listed["inputSchema"])
        jsonschema.Draft202012Validator.check_schema(listed["outputSchema"])
        assert listed["description"]


async def test_whoami_listing(mcp, alice_token) -> None:
    listed = (await tools_of(mcp, alice_token))["whoami"]

    assert listed["title"] == "Who am I?"
    assert listed["description"] == (
        "Tell who this connection acts as: your email and groups, the application, its scopes and token expiry."
    )
    assert listed["inputSchema"] == {"type": "object", "properties": {}, "title": "whoamiArguments"}
    assert listed["outputSchema"]["required"] == [
        "email",
        "groups",
        "client_name",
        "client_id",
        "scopes",
        "token_expires_at",
        "host",
    ]


async def test_input_schema_comes_from_the_type_hints(mcp, alice_token) -> None:
    listed = (await tools_of(mcp, alice_token))["list_notes"]

    assert listed["inputSchema"] == {
        "type": "object",
        "title": "list_notesArguments",
        "properties": {
            "limit": {"default": 20, "maximum": 100, "minimum": 1, "title": "Limit", "type": "integer"},
        },
    }


async def test_group_tools_are_listed_for_members(mcp, alice_token, test_tools) -> None:
    tools = await tools_of(mcp, alice_token)

    assert sorted(tools) == ["add_note", "crash", "eng_status", "list_notes", "refuse", "whoami"]
    assert tools["eng_status"]["title"] == "Deploy status"


async def test_group_tools_are_hidden_from_others(mcp, bob_token, test_tools) -> None:
    tools = await tools_of(mcp, bob_token)

    assert sorted(tools) == ["add_note", "crash", "list_notes", "refuse", "whoami"]


async def test_group_tools_are_unknown_to_others(mcp, bob_token, test_tools) -> None:
    r = await mcp.post("/mcp", json=call("eng_status"), headers=bearer(bob_token))

    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool: eng_status"}}


async def test_group_tools_work_for_members(mcp, alice_token, test_tools) -> None:
    result = await result_of(mcp, alice_token, "eng_status")

    assert result["isError"] is False
    assert result["content"] == [{"type": "text", "text": "all green"}]


async def test_tools_needing_a_missing_scope_stay_listed(mcp, alice_token, alice_token_row) -> None:
    """So that calling one yields 403 insufficient_scope and the client can step up."""
    assert alice_token_row.scope == "mcp"

    assert "add_note" in await tools_of(mcp, alice_token)


# -- L4: tools/call ------------------------------------------------------------------------------


async def test_whoami(mcp, alice_token, alice_token_row, app_client) -> None:
    result = await result_of(mcp, alice_token, "whoami")

    assert result["isError"] is False
    assert result["structuredContent"] == {
        "email": ALICE,
        "groups": ["eng"],
        "client_name": "Claude Code",
        "client_id": app_client.client_id,
        "scopes": ["mcp"],
        "token_expires_at": alice_token_row.expires.isoformat(),
        "host": "internal",
    }


@pytest.mark.parametrize(
    ("name", "arguments"),
    [("whoami", {}), ("list_notes", {"limit": 5}), ("add_note", {"text": "Water the plants"})],
)
async def test_content_and_structured_content_matching_the_output_schema(mcp, alice_writer, name, arguments) -> None:
    output_schema = (await tools_of(mcp, alice_writer))[name]["outputSchema"]

    result = await result_of(mcp, alice_writer, name, arguments)

    assert result["isError"] is False
    jsonschema.validate(result["structuredContent"], output_schema)
    # content is required; for structured results it carries the same JSON as text (MCP tools spec).
    assert [c["type"] for c in result["content"]] == ["text"]
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("list_notes", {"limit": "many"}, "Invalid arguments: limit must be an integer"),
        ("list_notes", {"limit": 0}, "Invalid arguments: limit must be at least 1"),
        ("add_note", {}, "Invalid arguments: text is required"),
        ("add_note", {"text": "x" * 2001}, "Invalid arguments: text must be at most 2000 characters long"),
    ],
)
async def test_bad_arguments_are_a_tool_error_result(mcp, alice_writer, name, arguments, message) -> None:
    """Named by argument and rule, in words: never pydantic's text (which quotes the input)."""
    assert await result_of(mcp, alice_writer, name, arguments) == failure(message)


class Window(BaseModel):
    start: int = Field(ge=0)
    tags: list[str] = Field(max_length=2)


@pytest.fixture
def strict_tool() -> Iterator[None]:
    """A tool with nested and enumerated arguments."""

    @tool()
    def schedule(ctx: ToolContext, window: Window, mode: Literal["dry", "live"], ticket: str) -> str:
        """Schedules something."""
        return "ok"

    yield
    registry.remove("schedule")


async def test_every_bad_argument_is_named_by_its_path_without_the_input(mcp, alice_token, strict_tool) -> None:
    arguments = {"window": {"start": -5, "tags": ["a", 7]}, "mode": "chaos"}

    result = await result_of(mcp, alice_token, "schedule", arguments)

    assert result == failure(
        "Invalid arguments: window.start must be at least 0; window.tags[1] must be a string; "
        "mode must be 'dry' or 'live'; ticket is required"
    )
    text = json.dumps(result)
    assert "chaos" not in text and "-5" not in text and "pydantic" not in text and "Input should" not in text


async def test_too_many_items_is_named_with_the_limit(mcp, alice_token, strict_tool) -> None:
    arguments = {"window": {"start": 0, "tags": ["a", "b", "c"]}, "mode": "dry", "ticket": "T-1"}

    result = await result_of(mcp, alice_token, "schedule", arguments)

    assert result == failure("Invalid arguments: window.tags must have at most 2 items")


async def test_unknown_tool_is_a_jsonrpc_error(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=call("x"), headers=bearer(alice_token))

    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool: x"}}


async def test_unknown_tool_at_2026_is_400(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp",
        json=rpc("tools/call", envelope({"name": "x", "arguments": {}})),
        headers=modern(alice_token, "tools/call", name="x"),
    )

    assert r.status_code == 400
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool: x"}}


async def test_tool_error_message_reaches_the_person(mcp, alice_token, test_tools) -> None:
    assert await result_of(mcp, alice_token, "refuse") == failure("The deploy window is closed until Monday.")


async def test_validation_error_in_a_tool_is_its_message(mcp, alice_writer) -> None:
    """add_note turns the model's ValidationError into a ToolError carrying its message."""
    result = await result_of(mcp, alice_writer, "add_note", {"text": "   "})

    assert result == failure("A note cannot be empty.")


async def test_crash_is_a_generic_error_and_a_logged_traceback(mcp, alice_token, test_tools, caplog) -> None:
    caplog.set_level(logging.INFO)

    result = await result_of(mcp, alice_token, "crash", {"n": 2})

    assert result == failure("The tool crash failed; the error has been logged.")
    assert "hunter2" not in json.dumps(result)
    [record] = [r for r in caplog.records if r.name == "mcp_bridge.server"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "tool crash failed"
    assert record.exc_info is not None
    assert "RuntimeError: connection to 10.0.0.5:5432 refused" in caplog.text
    assert "Traceback" in caplog.text


# -- R4: scope step-up ---------------------------------------------------------------------------


async def test_tool_needing_a_missing_scope_is_403_insufficient_scope(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=call("add_note", {"text": "Call Bob"}), headers=bearer(alice_token))

    assert r.status_code == 403
    assert r.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope",scope="mcp notes:write",'
        'error_description="This tool needs the scope(s): notes:write.",'
        'resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"'
    )
    assert r.json() == {
        "error": "insufficient_scope",
        "error_description": "This tool needs the scope(s): notes:write.",
    }


async def test_the_same_at_2026(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp",
        json=rpc("tools/call", envelope({"name": "add_note", "arguments": {"text": "Call Bob"}})),
        headers=modern(alice_token, "tools/call", name="add_note"),
    )

    assert r.status_code == 403
    assert r.headers["www-authenticate"].startswith('Bearer error="insufficient_scope",scope="mcp notes:write",')


async def test_with_the_scope_the_call_works(mcp, alice_writer) -> None:
    result = await result_of(mcp, alice_writer, "add_note", {"text": "Call Bob"})

    assert result["isError"] is False
    assert result["structuredContent"]["text"] == "Call Bob"


@pytest.fixture
def notes_only_token(alice, make_token) -> str:
    """A token granted notes:write but not the basic mcp scope."""
    return make_token(alice, scope="notes:write")


async def test_token_without_the_basic_scope_steps_up_for_every_tool(mcp, notes_only_token) -> None:
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(notes_only_token))

    assert r.status_code == 403
    assert 'scope="mcp notes:write"' in r.headers["www-authenticate"]


# -- The notes example: per person ---------------------------------------------------------------


@pytest.fixture
def bob_reader(bob, make_token) -> str:
    return make_token(bob)


async def test_notes_are_per_person(mcp, alice_writer, bob_reader) -> None:
    added = await result_of(mcp, alice_writer, "add_note", {"text": "  Alice's plan  "})
    assert added["structuredContent"]["text"] == "Alice's plan"

    alices = await result_of(mcp, alice_writer, "list_notes")
    bobs = await result_of(mcp, bob_reader, "list_notes")

    assert [n["text"] for n in alices["structuredContent"]["notes"]] == ["Alice's plan"]
    assert alices["structuredContent"]["notes"][0]["id"] == added["structuredContent"]["id"]
    assert bobs["structuredContent"] == {"notes": []}


async def test_notes_newest_first_and_limited(mcp, alice_writer) -> None:
    for text in ("first", "second", "third"):
        await result_of(mcp, alice_writer, "add_note", {"text": text})

    listed = await result_of(mcp, alice_writer, "list_notes", {"limit": 2})

    assert [n["text"] for n in listed["structuredContent"]["notes"]] == ["third", "second"]


def test_modern_version_constant() -> None:
    assert MODERN_VERSION == "2026-07-28"
