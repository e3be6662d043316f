"""/mcp's per-token count on PostgreSQL: kept by the token lookup's own statement (mcp_bridge.tokens, TokenCalls).

Windows are django-ratelimit's (mcpgate.ratelimit.window), so the limit means on PostgreSQL what it means in
the cache; the count starts again in the next window; a replica whose clock is behind counts into the current
window rather than resetting it; the row goes with its token; and the table is UNLOGGED.
"""

from __future__ import annotations

import hashlib
from typing import Any

import django_ratelimit.core
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from mcp_bridge import tokens
from mcp_bridge.models import TokenCalls
from mcpgate import ratelimit
from tests.conftest import RateLimitClock
from tests.mcp_bridge.conftest import bearer, rpc, stored_token

LIMIT = 3


@given(
    now=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
    key=st.text(min_size=1, max_size=64),
    rate=st.sampled_from(["1/s", "10/s", "30/m", "600/m", "100/5m", "3/h", "1000/d"]),
)
def test_a_window_is_the_one_django_ratelimit_counts_the_same_key_in(now: int, key: str, rate: str) -> None:
    clock = RateLimitClock()
    clock.now = now + 0.5
    limit = ratelimit.Limit("mcp", ratelimit.KeyKind.ACCESS_TOKEN, "MCPGATE_RATE_LIMIT_MCP", "requests")
    saved = ratelimit.time, django_ratelimit.core.time
    ratelimit.time = django_ratelimit.core.time = clock  # type: ignore[assignment]
    try:
        with override_settings(MCPGATE_RATE_LIMIT_MCP=rate):
            window = ratelimit.window(limit, key)
            count, period = django_ratelimit.core._split_rate(rate)
            expected_end = django_ratelimit.core._get_window(key, period)
    finally:
        ratelimit.time, django_ratelimit.core.time = saved
    assert (window.limit, window.end, window.left) == (count, expected_end, max(1, expected_end - now))


def calls_of(raw: str) -> list[tuple[int, int]]:
    token = stored_token(raw)
    return list(TokenCalls.objects.filter(token_id=token.pk).values_list("window_end", "calls"))


@pytest.fixture
def three_per_hour() -> Any:
    with override_settings(MCPGATE_RATE_LIMIT_MCP=f"{LIMIT}/h"):
        yield


@pytest.mark.postgresql
@pytest.mark.anyio
async def test_the_next_window_starts_the_count_again(
    three_per_hour, mcp, alice_token, ratelimit_clock: RateLimitClock
) -> None:
    statuses = [(await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    [(first_end, calls)] = await sync_to_async(calls_of)(alice_token)
    assert calls == 4

    ratelimit_clock.advance(3600)
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    assert r.status_code == 200
    assert await sync_to_async(calls_of)(alice_token) == [(first_end + 3600, 1)]


@pytest.mark.postgresql
@pytest.mark.anyio
async def test_a_replica_whose_clock_is_behind_counts_into_the_current_window(
    three_per_hour, mcp, alice_token, ratelimit_clock: RateLimitClock
) -> None:
    ratelimit_clock.advance(3600)
    for _ in range(2):
        assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code == 200
    [(end, _)] = await sync_to_async(calls_of)(alice_token)

    ratelimit_clock.advance(-3600)  # the previous window, as a replica a little behind sees it
    assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code == 200
    assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code == 429

    assert await sync_to_async(calls_of)(alice_token) == [(end, 4)]


@pytest.mark.postgresql
@pytest.mark.anyio
async def test_a_token_that_does_not_exist_leaves_no_count(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token + "x"))

    assert r.status_code == 401
    assert await sync_to_async(TokenCalls.objects.count)() == 0


@pytest.mark.postgresql
@pytest.mark.anyio
async def test_a_tokens_count_goes_with_the_token(mcp, alice_token) -> None:
    assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code == 200
    token = await sync_to_async(stored_token)(alice_token)
    assert await sync_to_async(TokenCalls.objects.filter(token_id=token.pk).count)() == 1

    await sync_to_async(token.delete)()  # as revocation deletes it

    assert await sync_to_async(TokenCalls.objects.count)() == 0


@pytest.mark.postgresql
def test_the_count_table_is_unlogged(transactional_db: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relpersistence FROM pg_class WHERE relname = %s", [TokenCalls._meta.db_table])
        assert cursor.fetchone() == ("u",)


@pytest.mark.postgresql
def test_peek_reads_the_count_without_counting(alice_token) -> None:
    token = stored_token(alice_token)
    checksum = hashlib.sha256(alice_token.encode()).hexdigest()
    window = ratelimit.window(ratelimit.MCP, checksum)
    for _ in range(2):
        tokens.load_and_count(checksum, window_end=window.end)

    first, second = tokens.peek_calls(token), tokens.peek_calls(token)

    assert first == second == ratelimit.Verdict(count=2, limit=window.limit, retry_after=window.left)
