"""/mcp is rate-limited per access token (MCPGATE_RATE_LIMIT_MCP), after authentication, before the body.

A refusal is 429 with Retry-After and a JSON-RPC error; nothing behind it runs (no tool, no audit
row of a tool call). The first refusal of a window is audited once, and every refusal is logged
as one warning line naming the route and the key kind, never the token.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings

from audit.models import AuditEvent
from mcp_bridge import tokens
from mcp_bridge.models import TokenCalls
from mcpgate import ratelimit
from tests.mcp_bridge.conftest import MCP_HEADERS, bearer, call, rpc, stored_token

pytestmark = pytest.mark.anyio

LIMIT = 3


@pytest.fixture(autouse=True)
def three_per_hour() -> Any:
    # The window does not end during a test: django-ratelimit's clock is stopped (tests/conftest.py).
    with override_settings(MCPGATE_RATE_LIMIT_MCP=f"{LIMIT}/h"):
        yield


def refused_after(seconds: int) -> dict[str, Any]:
    wait = "1 second" if seconds == 1 else f"{seconds} seconds"
    return {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32029, "message": f"Too many requests with this access token; try again in {wait}."},
    }


@sync_to_async
def rows(event: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=event).order_by("pk"))


async def test_a_token_over_its_limit_gets_429_and_its_tool_does_not_run(mcp, alice_token, caplog) -> None:
    for n in range(LIMIT):
        r = await mcp.post("/mcp", json=call("whoami", id=n), headers=bearer(alice_token))
        assert r.status_code == 200, n

    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))

    assert r.status_code == 429
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert r.json() == refused_after(retry_after)
    assert r.headers["content-type"] == "application/json"
    assert len(await rows("tool_call")) == LIMIT
    token = await sync_to_async(stored_token)(alice_token)
    [refusal] = await rows("rate_limited")
    assert (refusal.user_id, refusal.client_id) == (token.user_id, token.application_id)
    assert refusal.detail == {"route": "mcp", "key": "access_token", "rate": "3/h"}
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mcpgate.ratelimit"]
    assert logged == [(logging.WARNING, "rate limited: route=mcp key=access_token rate=3/h")]
    assert alice_token not in caplog.text


async def test_only_the_first_refusal_of_a_window_is_audited(mcp, alice_token) -> None:
    for _ in range(LIMIT + 5):
        await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    assert len(await rows("rate_limited")) == 1
    verdict = await sync_to_async(tokens.peek_calls)(await sync_to_async(stored_token)(alice_token))
    assert verdict is not None and verdict.count == LIMIT + 5


async def test_another_token_of_the_same_person_has_its_own_budget(mcp, alice, make_token) -> None:
    first, second = await sync_to_async(make_token)(alice), await sync_to_async(make_token)(alice)
    for _ in range(LIMIT + 1):
        await mcp.post("/mcp", json=rpc("ping"), headers=bearer(first))

    assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(first))).status_code == 429
    assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(second))).status_code == 200


async def test_requests_without_a_valid_token_do_not_count(mcp, alice_token) -> None:
    """Nobody can spend a token's budget without holding it."""
    for _ in range(LIMIT + 2):
        assert (await mcp.post("/mcp", json=rpc("ping"), headers=MCP_HEADERS)).status_code == 401
        assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token + "x"))).status_code == 401

    assert (await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code == 200


async def test_a_refused_request_is_not_read(mcp, alice_token) -> None:
    """Over the limit, even an oversized body gets the 429, not the 413: the body is never read."""
    for _ in range(LIMIT):
        await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    r = await mcp.post("/mcp", content=b" " * (5 * 1024 * 1024), headers=bearer(alice_token))

    assert r.status_code == 429


async def test_a_broken_cache_admits_and_says_so(mcp, alice_token, monkeypatch, caplog, settings) -> None:
    """A cache outage must not become an outage of /mcp (mcpgate.ratelimit). On PostgreSQL /mcp's count
    is not in the cache at all (mcp_bridge.tokens): it goes on, and nothing is said."""

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr("mcpgate.ratelimit.get_usage", unreachable)
    statuses = [(await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))).status_code for _ in range(4)]

    errors = [r.getMessage() for r in caplog.records if r.name == "mcpgate.ratelimit" and r.levelno == logging.ERROR]
    if connection.vendor == "postgresql":
        assert statuses == [200] * LIMIT + [429]
        assert errors == []
    else:
        assert statuses == [200] * (LIMIT + 1)
        assert errors[0] == (
            "rate limit mcpgate.mcp.access_token not counted (ConnectionError: Error 111 connecting to redis:6379. "
            "Connection refused.); request admitted"
        )


async def test_the_count_is_the_token_lookups_on_postgresql_and_the_caches_elsewhere(
    mcp, alice_token, monkeypatch
) -> None:
    """On PostgreSQL the token lookup counts the request in the same statement (mcp_bridge.tokens, TokenCalls,
    shared by every worker and replica); on SQLite the cache counts it (mcpgate.ratelimit.hit)."""
    hits: list[str] = []
    hit = ratelimit.hit

    def recorded(limit: ratelimit.Limit, *args: Any, **kwargs: Any) -> Any:
        hits.append(limit.group)
        return hit(limit, *args, **kwargs)

    monkeypatch.setattr(ratelimit, "hit", recorded)
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))

    assert r.status_code == 200
    token = await sync_to_async(stored_token)(alice_token)
    stored = await sync_to_async(lambda: list(TokenCalls.objects.values_list("token_id", "calls")))()
    if connection.vendor == "postgresql":
        assert (hits, stored) == ([], [(token.pk, 1)])
    else:
        assert (hits, stored) == (["mcpgate.mcp.access_token"], [])
