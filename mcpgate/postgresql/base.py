"""Django's PostgreSQL backend (``ENGINE = "mcpgate.postgresql"``), its pool checking connections only when idle.

Django's pool (psycopg_pool, ``OPTIONS["pool"]``) checks every connection it hands out when
``CONN_HEALTH_CHECKS`` is on (``ConnectionPool.check_connection``: an empty query, one round trip),
so that one the server dropped (a restart, a failover) is replaced before a request meets it. On
the /mcp hot path each worker-thread hop takes a connection and hands it back (``mcpgate.threads``),
so a busy worker paid that round trip on every hop, for connections used a millisecond before:
about 13 % of a worker's throughput at 16 connections (BENCHMARKS.md, "Before and after").

Here a connection is checked only when it was last taken more than ``IDLE_BEFORE_CHECK`` ago,
as the event loop's pool does (``mcpgate.asyncdb``). One dropped within that second fails its
statement: answered as any database error (503 with ``Retry-After``), and discarded by the pool.
After a restart, psycopg_pool's own check loop waits between connections that fail their check (its
reconnection backoff: about 1 s, then 2 s), so with two or more dropped connections idle in the pool
the request that met them answered 503 when the pool's 2 s timeout ran out; Django's own backend does
the same (measured with every session of the database terminated, 3 December). So the first failed
check here also has the pool check the rest of its idle connections at once, in a thread of its own
(``ConnectionPool.check``, public): the dropped ones are replaced before that request tries again, and
the connection it gets is a new one. A connection lost under a statement (within
its idle second) starts the same sweep when Django hands it back, so one such request, not one per
pooled connection, meets the restart.
This is Django's documented way to change a backend (subclassing it); only the pool's ``check``
differs from what ``django.db.backends.postgresql.base.DatabaseWrapper.pool`` builds, and ``_close``
starts the sweep before handing a connection back as Django does.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, cast

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

IDLE_BEFORE_CHECK = 1.0  # seconds


class RecentlyTaken:
    """When each connection of a pool was last taken: whether it is due a check when taken again."""

    def __init__(self) -> None:
        self._taken: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # the synchronous pool's check runs in each requesting thread

    def due(self, connection: Any, idle: float) -> bool:
        """True when ``connection`` is new here or was last taken more than ``idle`` seconds ago.

        Taken, not handed back: a connection handed back was in use since it was taken, so "taken
        less than a second ago" also means "worked less than a second ago"."""
        now = time.monotonic()
        with self._lock:
            last = self._taken.get(connection)
            self._taken[connection] = now
        return last is None or now - last > idle


class CheckWhenIdle:
    """A pool's ``check``: a connection taken within ``IDLE_BEFORE_CHECK`` of its last take passes unchecked; one
    that fails its check (or, ``DatabaseWrapper._close``, is lost under a statement) has the pool check all its
    idle connections, one sweep at a time, in the background."""

    def __init__(self) -> None:
        self.taken = RecentlyTaken()
        self.pool: ConnectionPool | None = None
        self._sweeping = threading.Lock()

    def __call__(self, connection: Any) -> None:
        if not self.taken.due(connection, IDLE_BEFORE_CHECK):
            return
        try:
            ConnectionPool.check_connection(connection)
        except Exception:
            self.sweep()
            raise

    def sweep(self) -> None:
        """Check the pool's idle connections now, in a thread of its own (unless a sweep is under way)."""
        pool = self.pool
        if pool is None or not self._sweeping.acquire(blocking=False):
            return  # one sweep at a time: the first failure after a restart starts it, the others ride on it

        def sweep() -> None:
            try:
                pool.check()
            except Exception as exc:  # a pool closing under it (shutdown, tests): nothing left to sweep
                logger.info("pool check after a failed connection stopped: %s", exc)
            finally:
                self._sweeping.release()

        threading.Thread(target=sweep, name="mcpgate-pool-sweep", daemon=True).start()


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's, but its pool's check is ``CheckWhenIdle``."""

    @property
    def pool(self) -> ConnectionPool | None:
        # django-stubs do not describe the PostgreSQL wrapper's pool attributes (Django 5.1+).
        django: Any = super()
        pools: dict[str, ConnectionPool] = type(self)._connection_pools  # type: ignore[attr-defined]
        options = self.settings_dict["OPTIONS"].get("pool")
        if (
            isinstance(options, dict)
            and self.alias != NO_DB_ALIAS
            and self.alias not in pools
            and self.settings_dict["CONN_HEALTH_CHECKS"]
            and self.settings_dict.get("CONN_MAX_AGE", 0) == 0  # else Django's own refusal, below
        ):
            # What Django's ``pool`` builds, with this check: see the module's docstring.
            check = CheckWhenIdle()
            kwargs = self.get_connection_params()
            kwargs["autocommit"] = True  # as Django's: it sets the real mode on each connection
            pool = ConnectionPool(
                kwargs=kwargs, open=False, configure=django._configure_connection, check=check, **options
            )
            check.pool = pools.setdefault(self.alias, pool)
            _checks[check.pool] = check
        return cast(ConnectionPool | None, django.pool)

    def _close(self) -> None:
        # A connection lost under a statement (taken within its idle second, so unchecked) goes back to
        # the pool, which discards it; its idle siblings were most likely lost with it: sweep them too.
        connection: Any = self.connection
        if connection is not None and connection.broken:
            pool = getattr(connection, "_pool", None)  # set by psycopg_pool on the connections it makes
            check = _checks.get(pool) if pool is not None else None
            if check is not None:
                check.sweep()
        django: Any = super()  # django-stubs do not describe ``_close``
        django._close()


# Each pool's check, for ``DatabaseWrapper._close`` (weak: tests close and replace pools).
_checks: weakref.WeakKeyDictionary[ConnectionPool, CheckWhenIdle] = weakref.WeakKeyDictionary()
