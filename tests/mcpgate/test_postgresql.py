"""mcpgate.postgresql: Django's pool checks a connection when it was idle, not every time it is taken."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from django.db import OperationalError, connection, connections
from psycopg_pool import ConnectionPool

from mcpgate.postgresql import base
from mcpgate.threads import in_worker_thread

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each ``check_connection`` the pool makes (the real one runs)."""
    made: list[int] = []
    check = ConnectionPool.check_connection

    def counted(conn: Any) -> None:
        made.append(1)
        check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return made


def backend() -> int:
    """This thread's pooled connection's server process (the hot path's hops take one each)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def hops(n: int) -> list[int]:
    """``n`` worker-thread hops one after the other, as /mcp makes them: each takes a pooled connection
    and hands it back."""

    async def main() -> list[int]:
        return [await in_worker_thread(backend)() for _ in range(n)]

    return asyncio.run(main())


def test_the_settings_use_this_backend_and_its_pool() -> None:
    assert type(connections["default"]).__module__ == "mcpgate.postgresql.base"
    assert connections["default"].pool is not None


def test_a_connection_taken_a_moment_ago_is_not_checked_again(checks: list[int]) -> None:
    time.sleep(base.IDLE_BEFORE_CHECK + 0.1)  # earlier tests' use of the pool's connections is over a second ago

    backends = hops(20)

    # Each connection is checked once, when first taken here (the pool hands them out in turn).
    assert len(set(backends)) < 20
    assert len(checks) == len(set(backends))


POOLED = 6  # connections the restart tests have the pool hold at once (the test settings allow 8)


def backends_held_at_once(n: int) -> set[int]:
    """``n`` hops that hold their connections at the same time: ``n`` distinct pooled connections."""
    together = threading.Barrier(n, timeout=10)

    def held() -> int:
        pid = backend()
        together.wait()
        return pid

    async def main() -> list[int]:
        return list(await asyncio.gather(*(in_worker_thread(held)() for _ in range(n))))

    pids = set(asyncio.run(main()))
    assert len(pids) == n
    return pids


def terminate(pids: set[int]) -> None:
    """End these server processes, as a restart or a failover ends every session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid", [sorted(pids)])
        assert cursor.fetchone()[0] == len(pids)
    time.sleep(0.1)  # the sessions are gone before anyone takes their connections


def outcomes(n: int) -> list[int | None]:
    """``n`` hops one after the other: each one's server process, or None where it failed."""

    async def main() -> list[int | None]:
        results: list[int | None] = []
        for _ in range(n):
            try:
                results.append(await in_worker_thread(backend)())
            except OperationalError:
                results.append(None)
        return results

    return asyncio.run(main())


def test_after_a_restart_the_first_hop_past_the_idle_second_is_served_on_a_new_connection() -> None:
    """A failed check has the pool check its other idle connections at once: without that, psycopg_pool's
    backoff between failed checks made the first hop give up after the pool's 2 s (Django's backend too)."""
    dropped = backends_held_at_once(POOLED)
    terminate(dropped)
    time.sleep(base.IDLE_BEFORE_CHECK + 0.1)

    started = time.monotonic()
    served = outcomes(20)

    assert None not in served
    assert not dropped & set(served)  # type: ignore[operator]
    assert time.monotonic() - started < 2.0


def test_connections_lost_within_their_idle_second_fail_only_the_first_hops_that_meet_them() -> None:
    """Unchecked (taken within the second), a lost connection fails its hop; handed back broken, it has the
    pool check the others, so the restart costs one or two hops, not one per pooled connection."""
    dropped = backends_held_at_once(POOLED)
    terminate(dropped)

    served = outcomes(20)

    # The pool hands its idle connections out in turn, live ones from earlier tests among them.
    last_failure = len(served) - 1 - served[::-1].index(None)
    assert 1 <= served.count(None) < POOLED
    assert None not in served[last_failure + 1 :]
    assert not dropped & set(served[last_failure + 1 :])  # type: ignore[operator]


def test_taken_recently_is_per_connection_and_measured_from_the_last_take() -> None:
    taken = base.RecentlyTaken()
    first, second = object.__new__(type("C", (), {})), object.__new__(type("C", (), {}))

    assert taken.due(first, 60) is True  # new here
    assert taken.due(first, 60) is False
    assert taken.due(second, 60) is True
    assert taken.due(first, 0.0) is True  # idle longer than no time at all
