"""The audit trail of tool calls: one row per tools/call, with who, what, how it went, and no argument values."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from mcp.server.mcpserver.exceptions import ToolError

from audit.models import AuditEvent, AuditKind
from mcp_bridge.context import ToolContext
from mcp_bridge.registry import registry, tool
from notes.models import Note
from tests.mcp_bridge.conftest import HANDSHAKE_VERSION, PEER, bearer, call, rpc
from tests.mcp_bridge.test_transport import initialize
from tests.personas import ALICE

pytestmark = pytest.mark.anyio

# Looks like what people paste into notes by mistake: it must never reach the audit or the log.
SECRET = "sk-live-4f9c2a7e1b0d-DO-NOT-LOG"


@sync_to_async
def tool_calls() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).select_related("user", "client").order_by("pk"))


@sync_to_async
def all_audit_text() -> str:
    """Every field of every audit row, as text."""
    rows = AuditEvent.objects.values()
    return json.dumps(list(rows), default=str)


def sha256_of(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture
def failing_tools() -> Iterator[None]:
    @tool()
    def refuse(ctx: ToolContext) -> str:
        """Always says no."""
        raise ToolError("Not today.")

    @tool()
    def crash(ctx: ToolContext) -> str:
        """Always fails."""
        raise RuntimeError("boom")

    yield
    registry.remove("refuse")
    registry.remove("crash")


@pytest.fixture
def alice_writer(alice, make_token) -> str:
    return make_token(alice, scope="mcp notes:write")


async def test_a_tool_call_writes_one_audit_row(mcp, alice, app_client, alice_token) -> None:
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))
    assert r.status_code == 200

    [event] = await tool_calls()

    assert (event.user, event.client) == (alice, app_client)
    assert (event.email, event.client_label, event.host, event.ip) == (
        ALICE,
        "Claude Code",
        "internal",
        PEER[0],
    )
    assert sorted(event.detail) == ["arguments_sha256", "duration_ms", "outcome", "tool"]
    assert event.detail["tool"] == "whoami"
    assert event.detail["outcome"] == "ok"
    assert isinstance(event.detail["duration_ms"], float)
    assert 0 <= event.detail["duration_ms"] < 10_000
    assert event.detail["arguments_sha256"] == sha256_of({})


async def test_every_call_is_its_own_row(mcp, alice_token) -> None:
    for limit in (1, 2, 3):
        await mcp.post("/mcp", json=call("list_notes", {"limit": limit}), headers=bearer(alice_token))

    events = await tool_calls()

    assert [e.detail["tool"] for e in events] == ["list_notes"] * 3
    assert [e.detail["arguments_sha256"] for e in events] == [sha256_of({"limit": n}) for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("name", "arguments", "outcome"),
    [
        ("refuse", {}, "error"),
        ("crash", {}, "error"),
        ("list_notes", {"limit": "lots"}, "invalid_arguments"),
    ],
)
async def test_outcome_of_failed_calls(mcp, alice_token, failing_tools, name, arguments, outcome) -> None:
    r = await mcp.post("/mcp", json=call(name, arguments), headers=bearer(alice_token))
    assert r.json()["result"]["isError"] is True

    [event] = await tool_calls()

    assert event.detail["tool"] == name
    assert event.detail["outcome"] == outcome
    assert event.detail["arguments_sha256"] == sha256_of(arguments)


async def test_other_requests_write_no_audit_row(mcp, alice_token) -> None:
    """The audit write belongs to tools/call only: listing and pinging stay read-only."""
    for message in (rpc("ping"), rpc("tools/list")):
        r = await mcp.post("/mcp", json=message, headers=bearer(alice_token))
        assert r.status_code == 200

    assert await tool_calls() == []


async def test_client_address_from_the_trusted_proxy(via_proxy, alice_token) -> None:
    headers = bearer(alice_token, **{"X-Forwarded-For": "198.51.100.23"})
    r = await via_proxy.post("/mcp", json=call("whoami"), headers=headers)
    assert r.status_code == 200

    [event] = await tool_calls()

    assert event.ip == "198.51.100.23"


async def test_client_address_claimed_by_anyone_else_is_ignored(mcp, alice_token) -> None:
    headers = bearer(alice_token, **{"X-Forwarded-For": "198.51.100.23"})
    r = await mcp.post("/mcp", json=call("whoami"), headers=headers)
    assert r.status_code == 200

    [event] = await tool_calls()

    assert event.ip == PEER[0]


async def test_argument_values_and_tokens_are_never_recorded_or_logged(mcp, alice_writer, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # as verbose as an operator can make it (MCPGATE_LOG_LEVEL=DEBUG)

    r = await mcp.post("/mcp", json=call("add_note", {"text": SECRET}), headers=bearer(alice_writer))
    assert r.json()["result"]["isError"] is False
    # initialize is served by the SDK's own transport, which logs at DEBUG (mcp_bridge.fastpath, which
    # served the call, logs nothing): the check below has something to look at.
    await mcp.post("/mcp", json=initialize(HANDSHAKE_VERSION), headers=bearer(alice_writer))

    # The call did store it, where it belongs.
    assert await sync_to_async(Note.objects.filter(text=SECRET).count)() == 1
    [event] = await tool_calls()
    assert event.detail["arguments_sha256"] == sha256_of({"text": SECRET})
    audit = await all_audit_text()
    assert SECRET not in audit
    assert alice_writer not in audit
    assert caplog.records  # the check below looked at something
    assert SECRET not in caplog.text
    assert alice_writer not in caplog.text


async def test_unknown_tool_call_is_audited(mcp, alice_token) -> None:
    response = await mcp.post("/mcp", json=call("no_such_tool"), headers=bearer(alice_token))

    assert response.json()["error"]["code"] == -32602
    [row] = await tool_calls()
    assert row.detail == {"tool": "no_such_tool", "outcome": "unknown_tool", "duration_ms": 0.0}


async def test_call_refused_for_scope_is_audited(mcp, alice_token) -> None:
    response = await mcp.post("/mcp", json=call("add_note", {"text": SECRET}), headers=bearer(alice_token))

    assert response.status_code == 403
    assert response.headers["cache-control"] == "no-store"
    [row] = await tool_calls()
    assert row.detail == {"tool": "add_note", "outcome": "insufficient_scope", "duration_ms": 0.0}
    assert SECRET not in await all_audit_text()
