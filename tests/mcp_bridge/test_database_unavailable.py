"""A database outage while /mcp admits a request or runs a tool: 503, Retry-After, a JSON-RPC error, no traceback.

The database is made to fail where /mcp meets it: every SQL statement raises Django's
``OperationalError`` (what psycopg's "connection refused" or SQLite's "database is locked"
become), or a tool's own work does. The worker threads are the ones the site really uses.
Recovery needs nothing but the database back: the next request is served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, ProgrammingError
from django.db.backends.utils import CursorWrapper

from audit import services as audit_services
from audit.models import AuditEvent, AuditKind
from mcp_bridge.context import ToolContext
from mcp_bridge.registry import registry, tool
from mcpgate.asyncdb import AsyncDatabase
from tests.mcp_bridge.conftest import MODERN_VERSION, bearer, call, envelope, modern, rpc

pytestmark = pytest.mark.anyio

REFUSED = "connection to server at 127.0.0.1, port 5432 failed: Connection refused"


def unavailable(id: int | None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32603, "message": "The service is temporarily unavailable; try again in a few seconds."},
    }


@pytest.fixture(autouse=True, params=["worker thread", "event loop"])
def route(request: pytest.FixtureRequest, settings: Any) -> None:
    """Each test by both routes of the database work (on PostgreSQL; on SQLite both are the worker thread)."""
    settings.MCPGATE_MCP_LOOP_DATABASE = request.param == "event loop"


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """``down(True)``: every SQL statement from any thread or the event loop fails as a lost server does;
    ``down(False)``: back."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError(REFUSED)

    async def refuse_on_loop(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError(REFUSED)  # what AsyncDatabase raises for psycopg's (tests/mcpgate/test_asyncdb.py)

    def down(is_down: bool) -> None:
        if is_down:
            monkeypatch.setattr(CursorWrapper, "execute", refuse)
            monkeypatch.setattr(CursorWrapper, "executemany", refuse)
            # On PostgreSQL admission's lookup runs on the event loop's own connections (mcpgate.asyncdb).
            monkeypatch.setattr(AsyncDatabase, "fetchone", refuse_on_loop)
        else:
            monkeypatch.undo()

    yield down
    monkeypatch.undo()


def assert_503(r: Any, id: int | None) -> None:
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == unavailable(id)


def assert_one_warning_no_traceback(caplog: pytest.LogCaptureFixture, doing: str) -> None:
    # Only the request's own warnings: the gateway's periodic reload of upstreams (gateway.runtime) runs on
    # its own clock and may meet the same outage, and says so in its own warning.
    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "database unavailable" in r.getMessage() and r.name != "gateway.runtime"
    ]
    assert [r.getMessage() for r in warnings] == [
        f"database unavailable (OperationalError: {REFUSED}) while {doing}: answered 503"
    ]
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text


async def test_database_away_at_admission_is_503_then_served_again(mcp, alice_token, database_down, caplog) -> None:
    database_down(True)
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))

    assert_503(r, id=None)
    assert_one_warning_no_traceback(caplog, "admitting a /mcp request")

    database_down(False)
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))
    assert r.status_code == 200
    assert r.json()["result"]["isError"] is False


async def test_database_away_at_admission_still_gives_a_tokenless_request_its_401(mcp, alice, database_down) -> None:
    """No token, no lookup: the challenge needs no database."""
    database_down(True)
    r = await mcp.post("/mcp", json=rpc("ping"), headers={"Content-Type": "application/json"})

    assert r.status_code == 401


@pytest.fixture
def database_tool() -> Iterator[None]:
    """A tool whose own query meets the outage (the connection died after admission)."""

    @tool()
    def ledger(ctx: ToolContext) -> str:
        """Reads the ledger."""
        raise OperationalError(REFUSED)

    yield
    registry.remove("ledger")


@pytest.mark.parametrize("version", ["2025-06-18", MODERN_VERSION])
async def test_database_away_while_a_tool_runs_is_503_with_the_request_id(
    mcp, alice_token, database_tool, version, caplog
) -> None:
    if version == MODERN_VERSION:
        r = await mcp.post(
            "/mcp",
            json=rpc("tools/call", envelope({"name": "ledger", "arguments": {}}), id=7),
            headers=modern(alice_token, "tools/call", name="ledger"),
        )
    else:
        r = await mcp.post("/mcp", json=call("ledger", id=7), headers=bearer(alice_token, version))

    assert_503(r, id=7)
    assert_one_warning_no_traceback(caplog, "calling the tool 'ledger'")
    # Not recorded as the tool's own failure: the audit could not be written either way.
    assert not await sync_to_async(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).exists)()


@pytest.fixture
def audit_row_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit row's INSERT fails as a lost server does, by either route: a worker thread's connection,
    or the event loop's (mcpgate.asyncdb, PostgreSQL), where the token lookup before it still succeeds."""

    def refuse(instance: Any) -> None:
        raise OperationalError(REFUSED)

    fetchone = AsyncDatabase.fetchone

    async def refuse_inserts(self: AsyncDatabase, sql: str, params: Any) -> Any:
        if sql.startswith("INSERT"):
            raise OperationalError(REFUSED)
        return await fetchone(self, sql, params)

    monkeypatch.setattr(audit_services, "_insert_row", refuse)
    monkeypatch.setattr(AsyncDatabase, "fetchone", refuse_inserts)


async def test_database_away_for_the_audit_row_is_503(mcp, alice_token, audit_row_refused, caplog) -> None:
    r = await mcp.post("/mcp", json=call("whoami", id=3), headers=bearer(alice_token))

    assert_503(r, id=3)
    assert_one_warning_no_traceback(caplog, "calling the tool 'whoami'")


async def test_database_away_for_an_unknown_tools_audit_row_is_503(mcp, alice_token, audit_row_refused) -> None:
    r = await mcp.post("/mcp", json=call("nope", id=4), headers=bearer(alice_token))

    assert_503(r, id=4)


async def test_database_away_for_a_scope_refusals_audit_row_is_503(mcp, alice_token, audit_row_refused) -> None:
    r = await mcp.post("/mcp", json=call("add_note", {"text": "x"}), headers=bearer(alice_token))

    assert_503(r, id=None)


async def test_a_programming_error_is_not_an_outage(mcp, alice_token) -> None:
    """Only what passes with time is a 503: a broken query is still the generic tool failure."""

    @tool()
    def broken(ctx: ToolContext) -> str:
        """Has a bug."""
        raise ProgrammingError("relation does not exist")

    try:
        r = await mcp.post("/mcp", json=call("broken"), headers=bearer(alice_token))
    finally:
        registry.remove("broken")

    assert r.status_code == 200
    assert r.json()["result"]["isError"] is True
    assert r.json()["result"]["content"][0]["text"] == "The tool broken failed; the error has been logged."
