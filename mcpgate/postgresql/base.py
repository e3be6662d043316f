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
the request that meets them answers 503 when the pool's 2 s timeout runs out; the requests after it
get new connections. Django's own backend does the same (measured with every session of the
database terminated, 3 December).
This is Django's documented way to change a backend (subclassing it); only the pool's ``check``
differs from what ``django.db.backends.postgresql.base.DatabaseWrapper.pool`` builds.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, cast

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

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


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's, but its pool's check is ``check_if_idle``."""

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
            taken = RecentlyTaken()

            def check_if_idle(connection: Any) -> None:
                if taken.due(connection, IDLE_BEFORE_CHECK):
                    ConnectionPool.check_connection(connection)

            kwargs = self.get_connection_params()
            kwargs["autocommit"] = True  # as Django's: it sets the real mode on each connection
            pool = ConnectionPool(
                kwargs=kwargs, open=False, configure=django._configure_connection, check=check_if_idle, **options
            )
            pools.setdefault(self.alias, pool)
        return cast(ConnectionPool | None, django.pool)
