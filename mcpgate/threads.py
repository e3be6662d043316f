"""Synchronous database work called from async code: in a worker thread, its connections handed back after."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")


def in_worker_thread(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """``fn`` as a coroutine function that runs in the event loop's worker threads, bracketed as Django
    brackets a request: the thread's obsolete or broken connections are closed before and after.

    With the connection pool (``CONN_MAX_AGE`` 0) that hands the connection back to the pool as soon
    as ``fn`` returns. Closing only before, as a request's start does, left every worker thread
    holding an idle pooled connection between calls: with more threads than ``MCPGATE_DB_POOL_SIZE``
    (the default executor has up to 32, by cores) the others waited for one and answered 503. Not
    thread-sensitive: these calls share no state with the request's own thread.
    """

    def bracketed(*args: P.args, **kwargs: P.kwargs) -> T:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(bracketed, thread_sensitive=False)
