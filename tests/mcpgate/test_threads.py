"""in_worker_thread: sync database work from async code hands its pooled connection back when it returns."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from mcpgate.threads import in_worker_thread
from oauth_ext.models import User


def test_the_function_runs_off_the_event_loop_thread_and_its_result_comes_back() -> None:
    caller = threading.get_ident()

    def where(tag: str) -> tuple[str, int]:
        return tag, threading.get_ident()

    tag, thread = asyncio.run(in_worker_thread(where)("ok"))

    assert tag == "ok" and thread != caller


def test_an_exception_reaches_the_awaiting_coroutine() -> None:
    def fail() -> None:
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        asyncio.run(in_worker_thread(fail)())


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_worker_thread_hands_its_pooled_connection_back_when_it_returns() -> None:
    """With the pool, a connection kept by an idle worker thread is one the others wait for (then 503)."""
    assert connection.pool is not None

    def query() -> BaseDatabaseWrapper:
        assert User.objects.exists() is False
        return connections[DEFAULT_DB_ALIAS]  # this thread's own

    async def calls() -> list[BaseDatabaseWrapper]:
        return await asyncio.gather(*(in_worker_thread(query)() for _ in range(4)))

    used = asyncio.run(calls())

    assert [wrapper.connection for wrapper in used] == [None] * 4
