"""/mcp to an upstream that acts as each person (issue 12, per-person token): person_server.py knows its people
by their own tokens and says whom each call came as; nothing is mocked between /mcp and it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from audit.models import AuditEvent, AuditKind
from gateway.connections import connection_token_save
from gateway.models import Connection, Credential, Upstream, UpstreamStatus
from gateway.runtime import hub
from oauth_ext.models import User
from tests.conftest import INTERNAL_BASE
from tests.gateway.fixtures import (  # noqa: F401  (fixtures)
    PERSON_TOKENS,
    add_upstream,
    eventually,
    person_server_fixture,
    tool_calls,
    upstream_keys_fixture,
)
from tests.mcp_bridge.conftest import bearer, call, thread_statements

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

CONNECT_URL = f"{INTERNAL_BASE}/connect/tickets/"
NOT_CONNECTED = (
    "This tool acts as your own tickets account, which you have not connected to mcpgate. "
    f"Connect it at {CONNECT_URL} and call the tool again."
)
REFUSED = (
    "tickets refused the credential you connected, so mcpgate has forgotten it. "
    f"Connect again at {CONNECT_URL} and call the tool again."
)


@pytest.fixture
def fast_poll(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_POLL_SECONDS = 0.2


async def connect(user: User, account: str, upstream: str = "tickets") -> None:
    """``user`` pastes ``account``'s token at /connect/ (the service the page calls)."""
    row = await sync_to_async(Upstream.objects.get)(name=upstream)
    await sync_to_async(connection_token_save)(user=user, upstream=row, token=PERSON_TOKENS[account])


async def tickets(url: str, first: User) -> Upstream:
    """The per-person upstream, listed with ``first``'s account (someone must have connected to list it)."""
    upstream = await add_upstream("tickets", url=url, credential=Credential.PERSON_TOKEN, connect=False)
    await connect(first, "alice")
    await hub.reload()
    # Not hub.connected(): the link may have tried (and waited) before the connection was saved.
    await eventually(lambda: _listed(hub.links[upstream.pk]), within=20)
    return upstream


async def whoami(mcp: httpx2.AsyncClient, token: str) -> dict[str, Any]:
    r = await mcp.post("/mcp", json=call("tickets__whoami"), headers=bearer(token))
    assert r.status_code == 200, r.text
    assert "result" in r.json(), r.text
    result: dict[str, Any] = r.json()["result"]
    return result


def text(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def outcomes() -> list[str]:
    return [detail["outcome"] for detail in await sync_to_async(tool_calls)()]


async def test_each_persons_call_acts_as_their_own_account(
    upstream_keys, person_server, site, mcp, alice, bob, make_token
) -> None:
    await tickets(person_server, alice)
    await connect(bob, "bob")
    alice_token, bob_token = await sync_to_async(make_token)(alice), await sync_to_async(make_token)(bob)

    for _ in range(2):
        assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"
        assert text(await whoami(mcp, bob_token)) == "bob-at-tickets"
    assert await outcomes() == ["ok"] * 4


async def test_concurrent_calls_of_two_people_each_go_as_their_own_account(
    upstream_keys, person_server, site, mcp, alice, bob, make_token
) -> None:
    """One session to the upstream is shared by the worker; the credential rides on each request alone."""
    await tickets(person_server, alice)
    await connect(bob, "bob")
    tokens = {
        "alice-at-tickets": await sync_to_async(make_token)(alice),
        "bob-at-tickets": await sync_to_async(make_token)(bob),
    }

    expected = [account for account in tokens for _ in range(10)]
    answers = await asyncio.gather(*(whoami(mcp, tokens[account]) for account in expected))

    assert [text(answer) for answer in answers] == expected


async def test_someone_who_has_not_connected_gets_a_tool_error_naming_where_to_connect(
    upstream_keys, person_server, site, mcp, alice, bob, bob_token
) -> None:
    await tickets(person_server, alice)

    result = await whoami(mcp, bob_token)

    assert result["isError"] is True and text(result) == NOT_CONNECTED
    assert await outcomes() == ["not_connected"]


async def test_an_upstream_nobody_has_connected_is_not_listed_until_someone_connects(
    upstream_keys, fast_poll, person_server, site, mcp, alice, alice_token
) -> None:
    await add_upstream("tickets", url=person_server, credential=Credential.PERSON_TOKEN)
    link = next(iter(hub.links.values()))
    assert "nobody has connected an account at /connect/tickets/ yet" in link.health.last_error
    listed = await mcp.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=bearer(alice_token)
    )
    assert not [t for t in listed.json()["result"]["tools"] if t["name"].startswith("tickets__")]

    await connect(alice, "alice")

    await eventually(lambda: _listed(link), within=5)
    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"


async def _listed(link: Any) -> bool:
    return link.catalog is not None and "tickets__whoami" in link.catalog.tools


async def test_disconnecting_stops_use_at_once(upstream_keys, person_server, site, mcp, alice, alice_token) -> None:
    await tickets(person_server, alice)
    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"

    await sync_to_async(Connection.objects.filter(user=alice).delete)()

    result = await whoami(mcp, alice_token)
    assert result["isError"] is True and text(result) == NOT_CONNECTED


async def test_a_token_the_upstream_revokes_is_forgotten_and_the_person_asked_to_connect_again(
    upstream_keys, person_server, site, mcp, alice, bob, make_token
) -> None:
    """A revocation at the upstream's side: its 401 ends that person's connection, and nobody else's session."""
    await tickets(person_server, alice)
    await connect(bob, "bob")
    alice_token, bob_token = await sync_to_async(make_token)(alice), await sync_to_async(make_token)(bob)
    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"
    session = next(iter(hub.links.values())).client

    async with httpx2.AsyncClient() as http:
        await http.post(person_server.removesuffix("/mcp") + "/revoke", content=PERSON_TOKENS["alice"])

    refused = await whoami(mcp, alice_token)
    assert refused["isError"] is True and text(refused) == REFUSED
    assert not await sync_to_async(Connection.objects.filter(user=alice).exists)()
    again = await whoami(mcp, alice_token)
    assert again["isError"] is True and text(again) == NOT_CONNECTED
    # Bob's calls go on, on the same session: one person's refusal is not the session's failure.
    assert text(await whoami(mcp, bob_token)) == "bob-at-tickets"
    assert next(iter(hub.links.values())).client is session
    assert await outcomes() == ["ok", "credential_refused", "not_connected", "ok"]
    event = await sync_to_async(AuditEvent.objects.select_related("user").get)(event=AuditKind.UPSTREAM_DISCONNECTED)
    assert (event.user.email, event.detail) == (alice.email, {"upstream": "tickets", "reason": "refused"})


async def test_a_forbidden_answer_is_that_persons_tool_error_and_keeps_their_connection(
    upstream_keys, person_server, site, mcp, alice, bob, make_token
) -> None:
    """Bob's token is valid at the upstream but lacks the scope it wants: a 403, not a reason to forget it."""
    await tickets(person_server, alice)
    row = await sync_to_async(Upstream.objects.get)(name="tickets")
    await sync_to_async(connection_token_save)(user=bob, upstream=row, token=PERSON_TOKENS["carol"])
    bob_token = await sync_to_async(make_token)(bob)

    result = await whoami(mcp, bob_token)

    assert result["isError"] is True
    assert text(result) == "tickets refused this request for your account there (HTTP 403)"
    assert await sync_to_async(Connection.objects.filter(user=bob).exists)()
    assert await outcomes() == ["upstream_forbidden"]


async def test_no_token_is_in_the_database_in_clear_nor_in_the_logs(
    upstream_keys, person_server, site, mcp, alice, alice_token, caplog
) -> None:
    await tickets(person_server, alice)
    await whoami(mcp, alice_token)

    def everything_stored() -> str:
        with connections["default"].cursor() as cursor:
            dumped = []
            for model in (Connection, Upstream, UpstreamStatus, AuditEvent):
                cursor.execute(f"SELECT * FROM {model._meta.db_table}")  # noqa: S608 - the models' own tables
                dumped.append(json.dumps(cursor.fetchall(), default=str))
            return "\n".join(dumped)

    stored = await sync_to_async(everything_stored)()
    sealed = await sync_to_async(Connection.objects.values_list("sealed_credential", flat=True).get)()
    assert sealed in stored and "tickets__whoami" in stored  # the rows were read: the connection, the audit trail
    assert PERSON_TOKENS["alice"] not in stored
    assert PERSON_TOKENS["alice"] not in caplog.text


async def test_a_per_person_call_costs_the_lookup_the_connection_and_the_audit_row(
    upstream_keys, person_server, site, mcp, alice, alice_token, loop_statements, settings
) -> None:
    """Three statements, and a fourth (``last_used_at``) at most once a minute per connection."""
    settings.MCPGATE_UPSTREAM_POLL_SECONDS = 3600
    await tickets(person_server, alice)
    async with thread_statements() as statements:
        first = await whoami(mcp, alice_token)
        counted_first = len(statements) + len(loop_statements)
        second = await whoami(mcp, alice_token)

    assert text(first) == text(second) == "alice-at-tickets"
    everything = statements + loop_statements
    assert counted_first <= 4 and len(everything) - counted_first <= 3, everything
    assert sum("UPDATE" in sql and "gateway_connection" in sql for sql in everything) == 1
