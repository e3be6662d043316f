"""Tool-call audit rows written in batches: a /mcp call queues its row, one thread per worker INSERTs them.

The row of a tools/call is the one write on /mcp's hot path. Written in the request, each costs a
statement, a round trip and a commit in the worker that serves the call; queued here, a thread of
the same worker writes every ``MCPGATE_AUDIT_BATCH_SECONDS`` (or as soon as ``MAX_BATCH`` rows wait)
what has gathered, in one transaction. Issue 11 allows this "with a bounded, documented loss
window and a flush on shutdown"; the bounds (docs/reliability.md, "The audit trail's batches"):

- A worker that stops as it should (SIGTERM, gunicorn's reload or ``max_requests``) writes what is
  queued before it exits: the ASGI lifespan's shutdown runs ``AuditBatcher.stop``.
- A worker that is killed (SIGKILL, the OOM killer, the machine lost) loses the rows of its last
  ``MCPGATE_AUDIT_BATCH_SECONDS``, and no more than ``MAX_BATCH`` behind a write in flight.
- While the database is away the rows wait and are retried; once ``MAX_PENDING`` wait, a call is
  refused (``AuditBacklogFull``, a 503 like any database outage) rather than served unaudited.

Only tool calls are batched. Every other event is written at once, in the request: each happens at
most once per sign-in, grant, token or refusal window, and the flows that cause them read them back.
``MCPGATE_AUDIT_BATCH_SECONDS=0`` writes tool calls at once too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable

import anyio
from django.conf import settings
from django.db import IntegrityError, OperationalError, close_old_connections, router, transaction

from mcpgate.errors import TRANSIENT_DATABASE_ERRORS

from .models import AuditEvent

logger = logging.getLogger(__name__)

# Rows written in one INSERT; a thread woken early once this many wait.
MAX_BATCH = 500
# Rows a worker holds while the database is away (about 10 s of a busy worker's calls); beyond, calls are refused.
MAX_PENDING = 10_000
# The longest wait between tries while the database refuses the rows.
MAX_RETRY_SECONDS = 5.0
# How long a stopping worker keeps trying to write what is queued.
STOP_SECONDS = 10.0


class AuditBacklogFull(OperationalError):
    """``MAX_PENDING`` rows are waiting for a database that is away: the call is refused, not served unaudited.

    An ``OperationalError``, so that every /mcp path answers it as it answers an unavailable database
    (503, ``Retry-After``, a JSON-RPC error body) and the metrics count it as one.
    """


class AuditBatcher:
    """The queue of one worker's tool-call rows and the thread that writes them (``start``, ``submit``, ``stop``)."""

    def __init__(self, *, interval: float, max_batch: int = MAX_BATCH, max_pending: int = MAX_PENDING) -> None:
        self.interval = interval
        self.max_batch = max_batch
        self.max_pending = max_pending
        # deque's append and popleft are atomic: the request threads append, only the writer pops.
        self._rows: deque[AuditEvent] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._deadline = 0.0  # set by stop(): until when the rows left are tried

    @property
    def pending(self) -> int:
        """Rows queued and not yet written."""
        return len(self._rows)

    @property
    def full(self) -> bool:
        return len(self._rows) >= self.max_pending

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-batcher", daemon=True)
        self._thread.start()

    def submit(self, record: AuditEvent) -> None:
        """Queue ``record`` to be written; ``AuditBacklogFull`` when ``max_pending`` rows already wait."""
        if self.full:
            raise AuditBacklogFull(f"{len(self._rows)} audit rows are waiting for the database")
        self._rows.append(record)
        if len(self._rows) >= self.max_batch:
            self._wake.set()

    def stop(self, timeout: float | None = None) -> int:
        """Write what is queued (trying for ``timeout`` seconds, ``STOP_SECONDS`` by default, while the
        database refuses), stop the thread, and return how many rows could not be written (logged as lost)."""
        self._deadline = time.monotonic() + (STOP_SECONDS if timeout is None else timeout)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            # A write in flight when the deadline passes is given a moment to finish.
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + 5.0)
        lost = len(self._rows)
        if lost:
            logger.error("%d tool-call audit rows lost: the database did not take them before the worker stopped", lost)
        return lost

    def _run(self) -> None:
        delay = self.interval
        try:
            while True:
                self._wake.wait(delay)
                self._wake.clear()
                written = self._write_pending()
                # While the database refuses, try less often (up to MAX_RETRY_SECONDS), then as usual.
                delay = self.interval if written else min(max(delay, self.interval) * 2, MAX_RETRY_SECONDS)
                if self._stopping.is_set():
                    left = self._deadline - time.monotonic()
                    if written or left <= 0:
                        return
                    delay = min(delay, left)
        finally:
            close_old_connections()

    def _write_pending(self) -> bool:
        """Write the queue, a batch at a time; False when the database is away (the rows are put back, in order)."""
        while self._rows:
            batch = [self._rows.popleft() for _ in range(min(len(self._rows), self.max_batch))]
            try:
                write_rows(batch)
            except TRANSIENT_DATABASE_ERRORS as exc:
                self._put_back(batch, exc)
                return False
            except Exception:
                # Not an outage: some row the database will never take.
                if not self._write_singly(batch):
                    return False
            finally:
                # Hand the connection back to the pool (and drop a broken one) between batches.
                close_old_connections()
        return True

    def _write_singly(self, batch: list[AuditEvent]) -> bool:
        """Write ``batch`` row by row, dropping (and logging) only what the database refuses for good: one bad
        row must neither take the others with it nor stop the thread. False when the database went away."""
        _as_new(batch)
        for n, row in enumerate(batch):
            try:
                write_rows([row])
            except TRANSIENT_DATABASE_ERRORS as exc:
                self._put_back(batch[n:], exc)
                return False
            except Exception as exc:
                # The database's message may quote a value of the row: rows hold no token, code or secret.
                logger.error(
                    "a tool-call audit row was refused by the database and dropped (%s: %s)", type(exc).__name__, exc
                )
            finally:
                close_old_connections()
        return True

    def _put_back(self, rows: list[AuditEvent], exc: BaseException) -> None:
        self._rows.extendleft(reversed(rows))
        logger.warning(
            "audit rows not written yet, %d waiting (%s: %s); trying again", len(self._rows), type(exc).__name__, exc
        )


def write_rows(rows: list[AuditEvent]) -> None:
    """INSERT ``rows`` in one transaction, their primary keys set.

    A person or client deleted between a call and its row's write no longer satisfies the row's
    foreign key: such a row is written with the reference cleared, as ``on_delete=SET_NULL`` would
    have cleared it had the row been written first (the email and client label stay in the row).
    """
    database = router.db_for_write(AuditEvent)
    try:
        with transaction.atomic(using=database):
            AuditEvent.objects.using(database).bulk_create(rows)
    except IntegrityError:
        _clear_vanished_references(rows, database)
        with transaction.atomic(using=database):
            AuditEvent.objects.using(database).bulk_create(rows)


def _clear_vanished_references(rows: Iterable[AuditEvent], database: str) -> None:
    for field in ("user", "client"):
        model = AuditEvent._meta.get_field(field).related_model
        assert model is not None and not isinstance(model, str)
        attname = f"{field}_id"
        wanted = {getattr(row, attname) for row in rows} - {None}
        present = set(model._default_manager.using(database).filter(pk__in=wanted).values_list("pk", flat=True))
        for row in rows:
            if getattr(row, attname) not in present:
                setattr(row, field, None)
    _as_new(rows)


def _as_new(rows: Iterable[AuditEvent]) -> None:
    """Unnumber ``rows``: a failed INSERT may have numbered them before its transaction was rolled back."""
    for row in rows:
        row.pk = None
        row._state.adding = True


_batcher: AuditBatcher | None = None


def current() -> AuditBatcher | None:
    """The batcher of this worker while it serves (``batching``), else None: rows are written at once."""
    return _batcher


def ensure_room() -> None:
    """``AuditBacklogFull`` when this worker's batcher cannot take another row: checked before a tool runs,
    so that a call the trail could not record is refused rather than run."""
    batcher = _batcher
    if batcher is not None and batcher.full:
        raise AuditBacklogFull(f"{batcher.pending} audit rows are waiting for the database")


@contextlib.asynccontextmanager
async def batching() -> AsyncIterator[AuditBatcher | None]:
    """Batch this worker's tool-call rows while the ASGI lifespan runs (``MCPGATE_AUDIT_BATCH_SECONDS`` > 0);
    on the way out, write what is queued (in a thread: it may wait for the database)."""
    global _batcher
    interval = settings.MCPGATE_AUDIT_BATCH_SECONDS
    if interval <= 0:
        yield None
        return
    # The module's bounds, read now (the tests lower them).
    batcher = AuditBatcher(interval=interval, max_batch=MAX_BATCH, max_pending=MAX_PENDING)
    batcher.start()
    _batcher = batcher
    try:
        yield batcher
    finally:
        # Rows of calls still running now are written at once, by their requests.
        _batcher = None
        await anyio.to_thread.run_sync(batcher.stop)


__all__ = ["AuditBacklogFull", "AuditBatcher", "batching", "current", "ensure_room", "write_rows"]
