"""audit.batch: tool-call rows queued and written by a thread, in order, through outages, and all of them on stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from audit import batch
from audit.batch import AuditBacklogFull, AuditBatcher, write_rows
from audit.models import AuditEvent, AuditKind
from audit.services import audit_record
from audit.signals import event_recorded
from oauth_ext.models import Client, User
from tests.personas import ALICE, BOB

# The writer thread has a connection of its own: the rows it references must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

# Long enough that nothing is written by the clock during a test that counts on the batch bound or a stop.
NEVER = 60.0


def tool_call(user: User, client: Client | None, n: int) -> AuditEvent:
    """The row ``audit_record`` builds for a tools/call (mcp_bridge.server.tool_call_event)."""
    return AuditEvent(
        event=AuditKind.TOOL_CALL,
        user=user,
        client=client,
        email=user.email,
        client_label=client.name if client else "",
        host="internal",
        ip="127.0.0.1",
        detail={"tool": f"tool{n}", "outcome": "ok", "duration_ms": 0.1},
    )


def written() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).order_by("pk"))


def wait_for(condition: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def running() -> Iterator[Callable[..., AuditBatcher]]:
    """Start batchers; each is stopped after the test (and must have lost nothing unless the test says so)."""
    started: list[AuditBatcher] = []

    def start(**kwargs: Any) -> AuditBatcher:
        batcher = AuditBatcher(**kwargs)
        batcher.start()
        started.append(batcher)
        return batcher

    yield start
    for batcher in started:
        batcher.stop(timeout=1.0)


def test_queued_rows_are_written_within_the_interval_in_the_order_they_came(running, alice, app_client) -> None:
    batcher = running(interval=0.05)
    for n in range(3):
        batcher.submit(tool_call(alice, app_client, n))

    assert wait_for(lambda: len(written()) == 3)
    rows = written()
    assert [row.detail["tool"] for row in rows] == ["tool0", "tool1", "tool2"]
    assert {(row.user_id, row.client_id, row.email) for row in rows} == {(alice.pk, app_client.pk, ALICE)}
    assert batcher.pending == 0


def test_a_full_batch_is_written_at_once_not_at_the_interval(running, alice, app_client) -> None:
    batcher = running(interval=NEVER, max_batch=4)
    for n in range(4):
        batcher.submit(tool_call(alice, app_client, n))

    assert wait_for(lambda: len(written()) == 4, within=5.0)


def test_stop_writes_every_queued_row_before_it_returns(alice, app_client) -> None:
    batcher = AuditBatcher(interval=NEVER)
    batcher.start()
    for n in range(5):
        batcher.submit(tool_call(alice, app_client, n))
    assert written() == []

    assert batcher.stop() == 0

    assert [row.detail["tool"] for row in written()] == [f"tool{n}" for n in range(5)]


def test_rows_the_database_refused_are_kept_in_order_and_written_when_it_returns(
    alice, app_client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refusals = iter([OperationalError("connection refused"), OperationalError("connection refused")])

    def flaky(rows: list[AuditEvent]) -> None:
        refusal = next(refusals, None)
        if refusal is not None:
            raise refusal
        write_rows(rows)

    monkeypatch.setattr(batch, "write_rows", flaky)
    batcher = AuditBatcher(interval=0.01)
    for n in range(3):
        batcher.submit(tool_call(alice, app_client, n))
    with caplog.at_level(logging.WARNING, logger="audit.batch"):
        batcher.start()
        try:
            assert wait_for(lambda: len(written()) == 3)
        finally:
            assert batcher.stop() == 0

    assert [row.detail["tool"] for row in written()] == ["tool0", "tool1", "tool2"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "audit.batch"]
    assert len(warnings) == 2
    assert warnings[0] == "audit rows not written yet, 3 waiting (OperationalError: connection refused); trying again"


def test_a_full_backlog_refuses_the_next_row_as_a_database_outage(alice, app_client) -> None:
    batcher = AuditBatcher(interval=NEVER, max_pending=2)  # not started: nothing is written
    batcher.submit(tool_call(alice, app_client, 0))
    batcher.submit(tool_call(alice, app_client, 1))

    with pytest.raises(AuditBacklogFull, match="2 audit rows are waiting for the database"):
        batcher.submit(tool_call(alice, app_client, 2))

    assert isinstance(AuditBacklogFull("x"), OperationalError)  # answered 503 wherever a database outage is
    assert batcher.pending == 2


def test_rows_still_refused_when_the_worker_stops_are_counted_and_logged_as_lost(
    alice, app_client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(rows: list[AuditEvent]) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(batch, "write_rows", refused)
    batcher = AuditBatcher(interval=NEVER)
    batcher.start()
    for n in range(3):
        batcher.submit(tool_call(alice, app_client, n))

    with caplog.at_level(logging.ERROR, logger="audit.batch"):
        assert batcher.stop(timeout=0.3) == 3
    assert batcher._thread is not None and not batcher._thread.is_alive()  # gone: it writes nothing later

    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == (
        "3 tool-call audit rows lost: the database did not take them before the worker stopped"
    )
    assert written() == []


def test_a_person_and_client_deleted_before_the_write_leave_their_row_with_the_names_kept(
    alice, bob, app_client
) -> None:
    gone = Client.objects.create(
        name="Gone", client_type=Client.CLIENT_PUBLIC, authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE
    )
    rows = [tool_call(alice, app_client, 0), tool_call(bob, gone, 1), tool_call(alice, gone, 2)]
    # Deleted elsewhere (another request, the console): the rows still hold the instances they were given.
    User.objects.filter(pk=bob.pk).delete()
    Client.objects.filter(pk=gone.pk).delete()

    write_rows(rows)

    stored = [(r.user_id, r.client_id, r.email, r.client_label) for r in written()]
    assert stored == [
        (alice.pk, app_client.pk, ALICE, "Claude Code"),
        (None, None, BOB, "Gone"),
        (alice.pk, None, ALICE, "Gone"),
    ]
    assert [row.pk for row in rows] == [row.pk for row in written()]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_while_batching_only_tool_calls_are_queued_and_leaving_writes_them(
    alice, app_client, settings, own_connections_closed
) -> None:
    """``batching`` as the ASGI lifespan enters and leaves it, in one event loop."""
    recorded: list[AuditEvent] = []

    def receiver(sender: Any, event: AuditEvent, **kwargs: Any) -> None:
        recorded.append(event)

    settings.MCPGATE_AUDIT_BATCH_SECONDS = NEVER
    event_recorded.connect(receiver)
    try:
        async with batch.batching() as batcher:
            assert batch.current() is batcher is not None
            record = sync_to_async(audit_record)
            queued = await record(event=AuditKind.TOOL_CALL, user=alice, client=app_client, detail={"tool": "whoami"})
            signed_in = await record(event=AuditKind.SIGN_IN, user=alice)

            assert queued is not None and queued.pk is None and await sync_to_async(written)() == []
            assert signed_in is not None and signed_in.pk is not None
            # Observers (the metrics) hear of a queued row at once.
            assert recorded == [queued, signed_in]
    finally:
        event_recorded.disconnect(receiver)

    assert batch.current() is None
    [row] = await sync_to_async(written)()
    assert (row.user_id, row.client_id, row.detail) == (alice.pk, app_client.pk, {"tool": "whoami"})


@pytest.mark.anyio
async def test_with_batches_off_a_tool_calls_row_is_written_in_its_request(
    alice, app_client, settings, own_connections_closed
) -> None:
    settings.MCPGATE_AUDIT_BATCH_SECONDS = 0
    async with batch.batching() as batcher:
        assert batcher is None and batch.current() is None
        event = await sync_to_async(audit_record)(
            event=AuditKind.TOOL_CALL, user=alice, client=app_client, detail={"tool": "whoami"}
        )
        assert event is not None and event.pk is not None
        assert [row.pk for row in await sync_to_async(written)()] == [event.pk]


@pytest.mark.anyio
async def test_ensure_room_refuses_only_while_the_backlog_is_full(
    alice, app_client, settings, monkeypatch, own_connections_closed
) -> None:
    settings.MCPGATE_AUDIT_BATCH_SECONDS = NEVER
    monkeypatch.setattr(batch, "MAX_PENDING", 1)
    async with batch.batching() as batcher:
        assert batcher is not None
        batch.ensure_room()
        batcher.submit(tool_call(alice, app_client, 0))

        with pytest.raises(AuditBacklogFull, match="1 audit rows are waiting for the database"):
            batch.ensure_room()
    batch.ensure_room()  # no batcher, no backlog: rows are written in their requests


def test_a_row_the_database_refuses_for_good_is_dropped_alone_and_the_thread_goes_on(
    alice, app_client, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (an IntegrityError: an email that is NULL, here): the batch's other rows are written one by one,
    the bad one is logged and dropped, and later rows are written as usual."""
    bad = tool_call(alice, app_client, 1)
    bad.email = None  # type: ignore[assignment]  # audit_record never writes this: the database refuses it always
    batcher = AuditBatcher(interval=0.01)
    for row in (tool_call(alice, app_client, 0), bad, tool_call(alice, app_client, 2)):
        batcher.submit(row)
    with caplog.at_level(logging.ERROR, logger="audit.batch"):
        batcher.start()
        try:
            assert wait_for(lambda: len(written()) == 2)
            batcher.submit(tool_call(alice, app_client, 3))
            assert wait_for(lambda: len(written()) == 3)
        finally:
            assert batcher.stop() == 0

    assert [row.detail["tool"] for row in written()] == ["tool0", "tool2", "tool3"]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("a tool-call audit row was refused by the database and dropped (IntegrityError: ")
