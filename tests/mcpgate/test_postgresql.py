"""mcpgate.postgresql: Django's pool checks a connection when it was idle, not every time it is taken."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.db import connection, connections
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


def test_taken_recently_is_per_connection_and_measured_from_the_last_take() -> None:
    taken = base.RecentlyTaken()
    first, second = object.__new__(type("C", (), {})), object.__new__(type("C", (), {}))

    assert taken.due(first, 60) is True  # new here
    assert taken.due(first, 60) is False
    assert taken.due(second, 60) is True
    assert taken.due(first, 0.0) is True  # idle longer than no time at all
