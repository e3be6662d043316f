"""AsyncDatabase: the hot path's connections load rows as the ORM does, prepare, check, and fail as Django's."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError, connection, connections
from psycopg_pool import AsyncConnectionPool

from mcp_bridge.tokens import aload_access_token, load_access_token
from mcpgate import asyncdb
from mcpgate.threads import in_worker_thread
from tests.conftest import INTERNAL_BASE
from tests.ports import free_port

pytestmark = [pytest.mark.postgresql]


@pytest.fixture(autouse=True)
def switched_on(settings: Any) -> None:
    """MCPGATE_MCP_LOOP_DATABASE is off by default (see ``test_there_is_none_unless_switched_on``)."""
    settings.MCPGATE_MCP_LOOP_DATABASE = True


@pytest.fixture
def checksum(alice_token: str) -> str:
    """Alice's access token as it is looked up (DOT's ``token_checksum``)."""
    return hashlib.sha256(alice_token.encode()).hexdigest()


def run(coroutine_function: Any, *, connected: bool = True) -> Any:
    """Run ``coroutine_function(database)`` with an AsyncDatabase serving, on a loop of its own
    (``connected``: once its first connection is made, so that it is the one every statement gets)."""

    async def main() -> Any:
        async with asyncdb.serving("default") as database:
            assert database is not None
            if connected:
                await database.pool.wait()
            return await coroutine_function(database)

    return asyncio.run(main())


def test_the_lookup_loads_the_token_its_user_and_client_exactly_as_the_orm_does(checksum: str) -> None:
    synchronous = load_access_token(checksum)

    async def lookup(database: asyncdb.AsyncDatabase) -> Any:
        return await aload_access_token(checksum, database=database)

    loaded = run(lookup)

    for model in ("", "user", "application"):
        expected = getattr(synchronous, model) if model else synchronous
        got = getattr(loaded, model) if model else loaded
        fields = [f.attname for f in type(expected)._meta.concrete_fields]
        assert {f: getattr(got, f) for f in fields} == {f: getattr(expected, f) for f in fields}
    # Django's time zone, as the ORM's connection loads it: whoami shows this value.
    assert loaded.expires.isoformat() == synchronous.expires.isoformat()
    assert loaded.resource == [INTERNAL_BASE + "/mcp"] and loaded.user.proxy_groups == ["eng"]


def test_an_unknown_token_is_none(checksum: str) -> None:
    async def lookup(database: asyncdb.AsyncDatabase) -> Any:
        return await aload_access_token(hashlib.sha256(b"nobody").hexdigest(), database=database)

    assert run(lookup) is None


def test_the_lookup_is_a_prepared_statement_on_the_loops_connections(checksum: str) -> None:
    """As on Django's connection (mcpgate.env.envdatabase): planned once per connection."""

    async def six_lookups_then_prepared(database: asyncdb.AsyncDatabase) -> list[str]:
        for _ in range(6):
            assert await aload_access_token(checksum, database=database) is not None
        async with database.pool.connection() as conn:  # one at a time: the same connection
            cursor = await conn.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in await cursor.fetchall()]

    prepared = run(six_lookups_then_prepared)

    assert [s for s in prepared if "oauth2_provider_accesstoken" in s and "token_checksum" in s], prepared


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each ``check_connection`` the pool makes (the real one runs)."""
    made: list[int] = []
    check = AsyncConnectionPool.check_connection

    async def counted(conn: Any) -> None:
        made.append(1)
        await check(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    return made


def test_a_connection_in_use_a_moment_ago_is_not_checked_again(checksum: str, checks: list[int]) -> None:
    async def three_lookups(database: asyncdb.AsyncDatabase) -> None:
        for _ in range(3):
            await database.fetchone("SELECT 1", [])

    run(three_lookups)

    assert len(checks) == 1  # the new connection, when first taken


def test_an_idle_connection_the_server_dropped_is_replaced_before_a_statement_meets_it(
    checksum: str, checks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes a database restart cost no request."""

    async def dropped_then_used(database: asyncdb.AsyncDatabase) -> tuple[Any, Any]:
        (first_backend,) = await database.fetchone("SELECT pg_backend_pid()", []) or (None,)
        await in_worker_thread(terminate)(first_backend)
        monkeypatch.setattr(asyncdb, "IDLE_BEFORE_CHECK", 0.0)
        await asyncio.sleep(0.05)
        (second_backend,) = await database.fetchone("SELECT pg_backend_pid()", []) or (None,)
        return first_backend, second_backend

    first, second = run(dropped_then_used)

    assert first != second and second is not None
    assert len(checks) == 3  # when first taken; the dropped one, failing; its replacement


def terminate(backend: int) -> None:
    """End a session from another one, as a database restart ends them all."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])


@pytest.fixture
def nothing_listening() -> Iterator[None]:
    """The default database's settings pointed at a port nobody listens on, for an AsyncDatabase made meanwhile."""
    settings_dict = connections["default"].settings_dict
    saved = dict(settings_dict)
    settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
    try:
        yield
    finally:
        settings_dict.clear()
        settings_dict.update(saved)


def test_a_database_that_is_away_raises_djangos_operational_error_within_the_pools_wait(
    checksum: str, nothing_listening: None
) -> None:
    """What every caller answers with 503 (mcpgate.errors.TRANSIENT_DATABASE_ERRORS), not psycopg's own."""

    async def lookup(database: asyncdb.AsyncDatabase) -> Any:
        return await database.fetchone("SELECT 1", [])

    started = time.monotonic()
    with pytest.raises(OperationalError):
        run(lookup, connected=False)

    assert time.monotonic() - started < 5  # the pool's 2 s wait, plus closing it


def test_there_is_none_without_djangos_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """MCPGATE_DB_POOL_SIZE=0 turns both pools off: admission goes back to its worker thread."""
    options = {k: v for k, v in connections["default"].settings_dict["OPTIONS"].items() if k != "pool"}
    monkeypatch.setitem(connections["default"].settings_dict, "OPTIONS", options)

    assert asyncdb.available("default") is False


def test_there_is_none_unless_switched_on(settings: Any) -> None:
    settings.MCPGATE_MCP_LOOP_DATABASE = False

    assert asyncdb.available("default") is False
