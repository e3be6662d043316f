"""The hot path's database budget: an authenticated tools/call costs at most 2 SQL queries besides the tool's own.

Through HTTP the work runs in worker threads whose connections ``django_assert_num_queries``
cannot see, so the two steps of a call are run here in the test thread: admission (the token,
its user and its client in one SELECT) and the tool run (the audit row in one INSERT).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.db import connection

from mcp_bridge.endpoint import admit
from mcp_bridge.registry import registry
from mcp_bridge.server import run_tool
from mcp_bridge.tokens import admission_sql, load_access_token, lookup_sql
from tests.asgi import http_scope
from tests.mcp_bridge.conftest import PEER, bearer, call, thread_statements
from tests.personas import ALICE


def scope_for(token: str | None) -> dict[str, Any]:
    """The ASGI scope of a POST /mcp to the internal host, as the server hands it over (admission reads no body)."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"accept", b"application/json, text/event-stream"),
        (b"content-type", b"application/json"),
        (b"mcp-protocol-version", b"2025-06-18"),
    ]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = http_scope("POST", "/mcp", headers, client=PEER)
    return scope


def test_authenticated_tools_call_costs_two_queries(alice_token, django_assert_num_queries) -> None:
    scope = scope_for(alice_token)
    whoami = registry.get("whoami")
    assert whoami is not None

    with django_assert_num_queries(2) as captured:
        admission = admit(scope)
        assert admission.refusal is None and admission.context is not None
        result = run_tool(whoami, admission.context, {})

    assert result.is_error is False
    lookup, insert = (q["sql"] for q in captured.captured_queries)
    assert "oauth2_provider_accesstoken" in lookup
    # On PostgreSQL the same statement counts the request against the token's rate limit (mcp_bridge.tokens);
    # elsewhere the cache counts it.
    counting = lookup.startswith("WITH found AS (SELECT") and 'INSERT INTO "mcp_bridge_tokencalls"' in lookup
    assert counting == (connection.vendor == "postgresql"), lookup
    assert insert.startswith("INSERT INTO") and "oauth_ext_auditevent" in insert


def test_admitting_any_other_request_costs_one_query(alice_token, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        admission = admit(scope_for(alice_token))

    assert admission.context is not None


def test_refusing_a_request_without_token_costs_nothing(alice, django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        admission = admit(scope_for(None))

    assert admission.refusal is not None
    assert admission.refusal.status_code == 401


@pytest.mark.postgresql
def test_the_token_lookup_runs_as_a_prepared_statement_on_postgresql(alice_token) -> None:
    """Planned once per connection, not per call (mcpgate.env.envdatabase: server-side binding, and psycopg
    prepares a statement on its fifth run)."""
    checksum = hashlib.sha256(alice_token.encode()).hexdigest()

    for _ in range(6):  # on this thread's connection, as admission and the DRF class run them
        assert admit(scope_for(alice_token)).context is not None
        assert load_access_token(checksum) is not None

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = {row[0] for row in cursor.fetchall()}
    assert {admission_sql("default"), lookup_sql("default")} <= {
        s.replace("$1", "%s").replace("$2", "%s") for s in prepared
    }, prepared


@pytest.mark.postgresql
@pytest.mark.anyio
async def test_on_postgresql_a_tools_call_sends_its_two_statements_from_the_event_loop(
    loop_database: None, mcp: Any, alice_token: str, loop_statements: list[str]
) -> None:
    """Through HTTP: the lookup and the audit row on the loop's own connections (mcpgate.asyncdb); the
    worker thread that runs the tool (the ``site`` fixture's one executor thread, whose statements a
    wrapper counts) sends none for ``whoami``."""
    async with thread_statements() as in_thread:
        r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))

    assert r.status_code == 200 and r.json()["result"]["structuredContent"]["email"] == ALICE
    lookup, insert = loop_statements
    assert lookup == admission_sql("default")
    assert insert.startswith("INSERT INTO") and "oauth_ext_auditevent" in insert
    # The gateway's poll of the upstream list (its own, every few seconds) may share the thread meanwhile.
    assert [sql for sql in in_thread if "gateway_upstream" not in sql] == []
