"""Asynchronous PostgreSQL statements for the /mcp hot path: a psycopg pool connected and configured as Django's.

Django's ORM is synchronous, so each database step of an async request runs in a worker thread:
a hop to the executor and back, with the GIL handed over twice. For the one statement every /mcp
request makes before anything else, the token lookup (``mcp_bridge.tokens``), that hop cost more
than the statement (issue 11, BENCHMARKS.md "Before and after"). Here that statement is sent from
the event loop itself, on psycopg's ``AsyncConnection`` from a ``psycopg_pool.AsyncConnectionPool``
of its own, which is built from what Django would connect with:

- ``DatabaseWrapper.get_connection_params()``: the same server, database (the test database under
  tests), credentials, ``OPTIONS`` and adapters (``context``: Django's timestamptz loader on its
  time zone, jsonb and inet left as text), so rows load exactly as the ORM loads them; server-side
  binding and ``prepare_threshold`` as configured (``mcpgate.env.envdatabase``), the synchronous
  cursor class swapped for its asynchronous twin;
- the session set up as Django sets up each new connection (``_configure_connection``: its time
  zone, ``assume_role``);
- the pool's limits as Django's pool has them (``mcpgate.env.envdatabase``): at most
  ``MCPGATE_DB_POOL_SIZE`` connections, a 2 s wait for one, reconnection given up after 2 s;
- a connection checked when taken (``check_connection``: an empty query) so that one the server
  dropped is replaced before a request meets it, but only when it was last taken more than
  ``IDLE_BEFORE_CHECK`` ago, as Django's pool does here (``mcpgate.postgresql``): checking every
  time doubled the round trips of a busy worker's lookups;
- errors raised as Django's (``DatabaseWrapper.wrap_database_errors``): an outage is Django's
  ``OperationalError``, which every caller already answers with 503 (``mcpgate.errors``).

It is opt-in (``MCPGATE_MCP_LOOP_DATABASE``): in the soak's mixed load, OAuth requests served by the same
workers, /mcp's p50 grew several-fold with it (docs/reliability.md), though /mcp alone got faster
(BENCHMARKS.md). It exists only on PostgreSQL with Django's pool (``MCPGATE_DB_POOL_SIZE=0`` turns both off), and only
while the ASGI application's lifespan runs (``mcp_bridge.endpoint.MCPEndpoint.lifespan``): a pool
belongs to one event loop. Elsewhere (SQLite, no lifespan) the hot path keeps its worker-thread route.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import psycopg
from django.conf import settings
from django.db import connections
from psycopg_pool import AsyncConnectionPool

from mcpgate.observability import tracing
from mcpgate.postgresql.base import IDLE_BEFORE_CHECK, RecentlyTaken


class AsyncDatabase:
    """A pool of asynchronous connections to one of Django's PostgreSQL databases (``alias``)."""

    def __init__(self, alias: str) -> None:
        wrapper = connections[alias]
        self.alias = alias
        self._taken = RecentlyTaken()
        params = wrapper.get_connection_params()
        # Django's cursor classes are synchronous; the asynchronous ones bind the same way.
        client_side = issubclass(params.pop("cursor_factory", psycopg.ClientCursor), psycopg.ClientCursor)
        params["cursor_factory"] = psycopg.AsyncClientCursor if client_side else psycopg.AsyncCursor
        params["autocommit"] = True  # one statement, one transaction: nothing is held between calls
        pool_options = wrapper.settings_dict["OPTIONS"]["pool"]
        self.pool = AsyncConnectionPool(
            kwargs=params,
            open=False,
            configure=self._configure,
            check=self._check_if_idle,
            min_size=1,
            max_size=pool_options["max_size"],
            timeout=pool_options["timeout"],
            reconnect_timeout=pool_options["reconnect_timeout"],
            name=f"mcpgate-async-{alias}",
        )

    async def _check_if_idle(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """The pool's ``check`` callback: ``check_connection`` unless the connection was taken a moment ago.

        One broken within that second fails its statement: answered as any database error (503),
        and discarded by the pool."""
        if self._taken.due(connection, IDLE_BEFORE_CHECK):
            await AsyncConnectionPool.check_connection(connection)

    async def _configure(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """What Django's ``_configure_connection`` does to a new connection: its time zone and role."""
        wrapper = connections[self.alias]
        timezone_name = wrapper.timezone_name
        if timezone_name and connection.info.parameter_status("TimeZone") != timezone_name:
            await connection.execute(wrapper.ops.set_time_zone_sql(), [timezone_name])
        role = wrapper.settings_dict["OPTIONS"].get("assume_role")
        if role:
            await connection.execute(cast(Any, wrapper.ops).compose_sql("SET ROLE %s", [role]))

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """Run one statement and return its first row (None if it has none); a span when tracing is on."""
        wrapper = connections[self.alias]
        with wrapper.wrap_database_errors, tracing.query_span(wrapper.vendor, sql):
            async with self.pool.connection() as connection:
                cursor = await connection.execute(sql, params)
                return await cursor.fetchone()


def available(alias: str) -> bool:
    """Whether to serve ``alias`` from the event loop: ``MCPGATE_MCP_LOOP_DATABASE`` is on (off by default),
    and it is a PostgreSQL database (the only backend with an asynchronous driver here) with Django's pool
    (``MCPGATE_DB_POOL_SIZE`` is not 0)."""
    wrapper = connections[alias]
    return (
        settings.MCPGATE_MCP_LOOP_DATABASE
        and wrapper.vendor == "postgresql"
        and bool(wrapper.settings_dict["OPTIONS"].get("pool"))
    )


@contextlib.asynccontextmanager
async def serving(alias: str) -> AsyncIterator[AsyncDatabase | None]:
    """An ``AsyncDatabase`` for ``alias`` while the block runs (None on a backend without one).

    The pool connects in the background: a database that is away at start-up delays nothing, and
    the first statement waits for a connection like any later one (2 s at most, then 503).
    """
    if not available(alias):
        yield None
        return
    database = AsyncDatabase(alias)
    await database.pool.open(wait=False)
    try:
        yield database
    finally:
        await database.pool.close()
