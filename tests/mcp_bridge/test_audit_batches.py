"""/mcp with its tool-call rows batched (audit.batch, the production default): written when the worker stops, and
a call refused before it runs once the rows cannot be written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from audit import batch
from audit.models import AuditEvent, AuditKind
from mcp_bridge.context import ToolContext
from mcp_bridge.registry import registry, tool
from tests.mcp_bridge.conftest import bearer, call, http_client, serving
from tests.mcp_bridge.test_database_unavailable import assert_503

pytestmark = pytest.mark.anyio

NEVER = 60.0  # seconds: no batch is written by the clock during these tests


@sync_to_async
def tool_call_rows() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).order_by("pk"))


@pytest.fixture
def batches(settings: Any) -> None:
    """Batches on, at an interval no test waits out. Request it before ``site``/``mcp``: their lifespan reads it."""
    settings.MCPGATE_AUDIT_BATCH_SECONDS = NEVER


@pytest.fixture
def counted_tool() -> Iterator[list[str]]:
    """A tool that records each run."""
    runs: list[str] = []

    @tool()
    def tally(ctx: ToolContext) -> str:
        """Counts its runs."""
        runs.append(ctx.user.email)
        return "counted"

    yield runs
    registry.remove("tally")


async def test_tool_calls_rows_are_held_by_the_worker_and_all_written_when_it_stops(
    batches, transactional_db, alice, alice_token, own_connections_closed
) -> None:
    async with serving() as app, http_client(app) as mcp:
        for n in range(3):
            r = await mcp.post("/mcp", json=call("whoami", id=n), headers=bearer(alice_token))
            assert r.status_code == 200 and not r.json()["result"].get("isError")
        assert batch.current() is not None and batch.current().pending == 3
        assert await tool_call_rows() == []

    rows = await tool_call_rows()
    assert [(row.user_id, row.detail["tool"], row.detail["outcome"]) for row in rows] == [
        (alice.pk, "whoami", "ok")
    ] * 3


async def test_a_call_when_the_rows_cannot_be_written_is_refused_503_before_the_tool_runs(
    batches, monkeypatch, counted_tool, mcp, alice_token, caplog
) -> None:
    batcher = batch.current()
    assert batcher is not None
    monkeypatch.setattr(batcher, "max_pending", 1)
    r = await mcp.post("/mcp", json=call("tally", id=1), headers=bearer(alice_token))
    assert r.status_code == 200 and counted_tool == ["alice@example.com"]

    r = await mcp.post("/mcp", json=call("tally", id=2), headers=bearer(alice_token))

    assert_503(r, id=2)
    assert counted_tool == ["alice@example.com"]
    assert batcher.pending == 1
    [warning] = [rec.getMessage() for rec in caplog.records if "database unavailable" in rec.getMessage()]
    assert warning == (
        "database unavailable (AuditBacklogFull: 1 audit rows are waiting for the database) "
        "while calling the tool 'tally': answered 503"
    )


@pytest.mark.postgresql
async def test_on_the_loop_route_a_batched_row_is_not_sent_from_the_event_loop(
    batches, loop_database, loop_statements, transactional_db, alice, alice_token, own_connections_closed
) -> None:
    async with serving() as app, http_client(app) as mcp:
        r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))
        assert r.status_code == 200
        assert not [sql for sql in loop_statements if sql.startswith("INSERT")]
        assert len(loop_statements) == 1  # the token lookup

    [row] = await tool_call_rows()
    assert row.detail["tool"] == "whoami"
