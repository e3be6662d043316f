"""Per-person OAuth (issue 12, mode 2): people connect their own accounts at an upstream with its own OAuth server.

oauth_server.py is an MCP server on the ``mcp`` SDK with the SDK's authorization-server routes: it refuses
every call without an access token it issued, and its tool says which account a token was issued for. People
connect through the real flow (the /connect/ page, the upstream's /authorize and sign-in, the callback), as a
browser signed in at oauth2-proxy; nothing is mocked between /mcp and the upstream.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from audit.models import AuditEvent, AuditKind
from gateway.connections import REFRESH_AHEAD, connections_delete_for_person, listing_credential
from gateway.crypto import unseal
from gateway.models import Connection, Credential, Upstream
from gateway.runtime import hub
from gateway.services import oauth_settings
from oauth_ext.models import User
from tests.conftest import INTERNAL_BASE
from tests.gateway.fixtures import (  # noqa: F401  (fixtures)
    add_upstream,
    eventually,
    serving,
    tool_calls,
    upstream_keys_fixture,
)
from tests.mcp_bridge.conftest import PROXY_PEER, bearer, call, envelope, http_client, modern, rpc
from tests.personas import ALICE, BOB

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

CALLBACK = f"{INTERNAL_BASE}/connect/tickets/callback"
CONNECT_URL = f"{INTERNAL_BASE}/connect/tickets/"
# Access tokens that are due for renewal (REFRESH_AHEAD before expiry) a couple of seconds after they are issued.
SHORT_LIFETIME = int(REFRESH_AHEAD.total_seconds()) + 2


def oauth_upstream(lifetime: int) -> Iterator[str]:
    yield from serving("oauth_server.py", str(lifetime), CALLBACK)


@pytest.fixture
def tickets_server() -> Iterator[str]:
    """oauth_server.py with hour-long access tokens."""
    yield from oauth_upstream(3600)


@pytest.fixture
def short_lived_server() -> Iterator[str]:
    """oauth_server.py whose access tokens are due for renewal ~2 s after they are issued."""
    yield from oauth_upstream(SHORT_LIFETIME)


def base_of(url: str) -> str:
    return url.removesuffix("/mcp")


async def tickets(url: str, **options: Any) -> Upstream:
    """The upstream as an operator adds it: client id and secret, endpoints discovered from its metadata."""
    settings = await sync_to_async(oauth_settings)(
        name="tickets", url=url, client_id="mcpgate", client_secret="tickets-secret", scopes=["tickets"]
    )
    return await add_upstream(
        "tickets", url=url, credential=Credential.PERSON_OAUTH, oauth=settings, connect=False, **options
    )


class Browser:
    """A person's browser, signed in at oauth2-proxy: the site through the trusted proxy (its own cookie jar),
    the upstream directly."""

    def __init__(self, site: Any, email: str, groups: str = "eng") -> None:
        self.site = http_client(site, PROXY_PEER)
        self.headers = {"X-Forwarded-Email": email, "X-Forwarded-Groups": groups}

    async def get(self, path: str) -> httpx2.Response:
        return await self.site.get(path, headers=self.headers)

    async def post(self, path: str, data: dict[str, str]) -> httpx2.Response:
        return await self.site.post(path, data=data, headers=self.headers)

    async def start(self) -> str:
        """Press Continue on /connect/tickets/: where the site sends the browser (the upstream's /authorize)."""
        page = await self.get("/connect/tickets/")
        assert page.status_code == 200, page.text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token
        response = await self.post("/connect/tickets/", {"csrfmiddlewaretoken": token.group(1)})
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    async def sign_in_upstream(self, authorize: str, account: str) -> str:
        """At the upstream: /authorize, its sign-in form as ``account``; returns the callback URL it sends back to."""
        async with httpx2.AsyncClient() as upstream:
            to_login = await upstream.get(authorize)
            assert to_login.status_code == 302, to_login.text
            request = parse_qs(urlsplit(to_login.headers["Location"]).query)["request"][0]
            login = to_login.headers["Location"].split("?")[0]
            back = await upstream.post(login, data={"request": request, "account": account})
            assert back.status_code == 302, back.text
            return str(back.headers["Location"])

    async def connect(self, account: str) -> httpx2.Response:
        """The whole flow; the site's answer to the callback."""
        callback = await self.sign_in_upstream(await self.start(), account)
        assert callback.startswith(CALLBACK + "?")
        return await self.get(callback.removeprefix(INTERNAL_BASE))


async def connected(url: str, site: Any, *people: tuple[str, str, str]) -> None:
    """``tickets`` added for ``url``, each (email, groups, account) of ``people`` connected, and listed."""
    await tickets(url)
    for email, groups, account in people:
        assert (await Browser(site, email, groups).connect(account)).status_code == 302
    await listed(url)


ALICE_AT_TICKETS = (ALICE, "eng", "alice-at-tickets")


async def listed(url: str) -> None:
    upstream = await sync_to_async(Upstream.objects.get)(name="tickets")
    await hub.reload()
    await eventually(lambda: _has_tools(hub.links[upstream.pk]), within=20)


async def _has_tools(link: Any) -> bool:
    return link.catalog is not None and "tickets__whoami" in link.catalog.tools


async def whoami(mcp: httpx2.AsyncClient, token: str) -> dict[str, Any]:
    r = await mcp.post("/mcp", json=call("tickets__whoami"), headers=bearer(token))
    assert r.status_code == 200 and "result" in r.json(), r.text
    result: dict[str, Any] = r.json()["result"]
    return result


def text(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def stats(url: str) -> dict[str, int]:
    async with httpx2.AsyncClient() as http:
        figures: dict[str, int] = (await http.get(base_of(url) + "/stats")).json()
        return figures


async def person(email: str) -> User:
    return await sync_to_async(User.objects.get)(username=email)


async def test_two_people_connect_through_the_real_flow_and_each_call_acts_as_their_own_account(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    await tickets(tickets_server)
    alice_browser, bob_browser = Browser(site, ALICE), Browser(site, BOB, "sales")

    authorize = await alice_browser.start()
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(base_of(tickets_server) + "/authorize?")
    assert {k: v[0] for k, v in query.items() if k not in ("state", "code_challenge")} == {
        "response_type": "code",
        "client_id": "mcpgate",
        "redirect_uri": CALLBACK,
        "code_challenge_method": "S256",
        "resource": tickets_server,
        "scope": "tickets",
    }
    done = await alice_browser.get(
        (await alice_browser.sign_in_upstream(authorize, "alice-at-tickets")).removeprefix(INTERNAL_BASE)
    )
    assert (done.status_code, done.headers["Location"]) == (302, "/connect/")
    assert (await bob_browser.connect("bob-at-tickets")).status_code == 302
    await listed(tickets_server)

    alice_token = await sync_to_async(make_token)(await person(ALICE))
    bob_token = await sync_to_async(make_token)(await person(BOB))
    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"
    assert text(await whoami(mcp, bob_token)) == "bob-at-tickets"
    assert (await stats(tickets_server))["codes"] == 2
    connected = await sync_to_async(list)(
        AuditEvent.objects.filter(event=AuditKind.UPSTREAM_CONNECTED).values_list("user__email", "detail")
    )
    assert sorted(connected) == [
        (ALICE, {"upstream": "tickets", "replaced": False}),
        (BOB, {"upstream": "tickets", "replaced": False}),
    ]


async def test_a_third_person_who_has_not_connected_gets_the_connect_error(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    await connected(tickets_server, site, ALICE_AT_TICKETS)
    carol = await sync_to_async(User.objects.create)(username="carol@example.com", email="carol@example.com")

    result = await whoami(mcp, await sync_to_async(make_token)(carol))

    assert result["isError"] is True
    assert text(result) == (
        "This tool acts as your own tickets account, which you have not connected to mcpgate. "
        f"Connect it at {CONNECT_URL} and call the tool again."
    )


async def test_an_expiring_token_is_renewed_once_for_concurrent_calls_and_the_spent_refresh_token_never_sent_again(
    upstream_keys, short_lived_server, site, mcp, make_token
) -> None:
    await connected(short_lived_server, site, ALICE_AT_TICKETS)
    alice_token = await sync_to_async(make_token)(await person(ALICE))
    before = await sync_to_async(Connection.objects.get)()
    await asyncio.sleep(2.5)  # now within REFRESH_AHEAD of its expiry

    answers = await asyncio.gather(*(whoami(mcp, alice_token) for _ in range(8)))

    assert [text(answer) for answer in answers] == ["alice-at-tickets"] * 8
    figures = await stats(short_lived_server)
    assert (figures["refreshes"], figures["spent_refresh_reused"]) == (1, 0)
    after = await sync_to_async(Connection.objects.get)()
    assert after.expires_at > before.expires_at and after.sealed_credential != before.sealed_credential


async def test_a_refused_renewal_forgets_the_connection_and_asks_to_connect_again(
    upstream_keys, short_lived_server, site, mcp, make_token
) -> None:
    await connected(short_lived_server, site, ALICE_AT_TICKETS)
    alice_token = await sync_to_async(make_token)(await person(ALICE))
    async with httpx2.AsyncClient() as http:
        await http.post(base_of(short_lived_server) + "/revoke-account", content="alice-at-tickets")
    await asyncio.sleep(2.5)

    result = await whoami(mcp, alice_token)

    assert result["isError"] is True
    assert text(result) == (
        "tickets no longer accepts the account you connected, so mcpgate has forgotten it. "
        f"Connect again at {CONNECT_URL} and call the tool again."
    )
    assert not await sync_to_async(Connection.objects.exists)()
    event = await sync_to_async(AuditEvent.objects.get)(event=AuditKind.UPSTREAM_DISCONNECTED)
    assert event.detail == {"upstream": "tickets", "reason": "refused"}


async def test_a_revocation_of_the_grant_at_the_upstream_stops_use_at_once(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    """The upstream revokes everything of the account: its 401 to the call, then its refusal of the renewal."""
    await connected(tickets_server, site, ALICE_AT_TICKETS)
    alice_token = await sync_to_async(make_token)(await person(ALICE))
    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"

    async with httpx2.AsyncClient() as http:
        await http.post(base_of(tickets_server) + "/revoke-account", content="alice-at-tickets")

    result = await whoami(mcp, alice_token)
    assert result["isError"] is True
    assert text(result) == (
        "tickets no longer accepts the account you connected, so mcpgate has forgotten it. "
        f"Connect again at {CONNECT_URL} and call the tool again."
    )
    assert not await sync_to_async(Connection.objects.exists)()
    assert await outcomes() == ["ok", "not_connected"]


async def test_an_access_token_the_upstream_refuses_early_is_renewed_and_the_call_goes_through(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    """Only the access token is revoked (or expired early): one renewal, the call sent again, no reconnection."""
    await connected(tickets_server, site, ALICE_AT_TICKETS)
    alice_token = await sync_to_async(make_token)(await person(ALICE))
    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"

    async with httpx2.AsyncClient() as http:
        await http.post(base_of(tickets_server) + "/revoke-access", content="alice-at-tickets")

    assert text(await whoami(mcp, alice_token)) == "alice-at-tickets"
    assert (await stats(tickets_server))["refreshes"] == 1
    assert await sync_to_async(Connection.objects.exists)()
    assert await outcomes() == ["ok", "ok"]


async def test_disconnect_and_offboarding_each_stop_use_at_once(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    await tickets(tickets_server)
    alice_browser = Browser(site, ALICE)
    await alice_browser.connect("alice-at-tickets")
    await Browser(site, BOB, "sales").connect("bob-at-tickets")
    await listed(tickets_server)
    alice_token = await sync_to_async(make_token)(await person(ALICE))
    bob_token = await sync_to_async(make_token)(await person(BOB))

    page = await alice_browser.get("/connect/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf
    gone = await alice_browser.post("/connect/tickets/disconnect", {"csrfmiddlewaretoken": csrf.group(1)})
    assert gone.status_code == 302
    assert text(await whoami(mcp, alice_token)).startswith("This tool acts as your own tickets account")

    await sync_to_async(connections_delete_for_person)(user=await person(BOB), operator=None)
    assert text(await whoami(mcp, bob_token)).startswith("This tool acts as your own tickets account")


async def test_the_database_and_the_logs_hold_no_upstream_token_in_clear(
    upstream_keys, tickets_server, site, mcp, make_token, caplog
) -> None:
    await connected(tickets_server, site, ALICE_AT_TICKETS)
    await whoami(mcp, await sync_to_async(make_token)(await person(ALICE)))
    connection = await sync_to_async(Connection.objects.get)()
    opened = unseal(connection.sealed_credential)
    assert set(opened) == {"access_token", "refresh_token"}

    def everything_stored() -> str:
        with connections["default"].cursor() as cursor:
            dumped = []
            for model in (Connection, Upstream, AuditEvent):
                cursor.execute(f"SELECT * FROM {model._meta.db_table}")  # noqa: S608 - the models' own tables
                dumped.append(json.dumps(cursor.fetchall(), default=str))
            return "\n".join(dumped)

    stored = await sync_to_async(everything_stored)()
    for secret in (*opened.values(), "tickets-secret"):
        assert secret not in stored and secret not in caplog.text


async def test_a_session_reopened_after_everyones_access_lapsed_renews_the_listing_credential_itself(
    upstream_keys, short_lived_server, site, mcp, make_token
) -> None:
    """Reopening the shared session must not wait for someone's call to renew a token to list with."""
    upstream = await tickets(short_lived_server)
    await Browser(site, ALICE).connect("alice-at-tickets")
    await listed(short_lived_server)
    await asyncio.sleep(2.5)  # Alice's access token is now due

    token = await sync_to_async(listing_credential)(upstream_id=upstream.pk)

    assert (await stats(short_lived_server))["refreshes"] == 1
    connection = await sync_to_async(Connection.objects.get)()
    assert token == unseal(connection.sealed_credential)["access_token"]


async def test_mcpgate_registered_by_itself_connects_people_like_a_given_client(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    """No --client-id: mcpgate registered itself (RFC 7591) with its callbacks, and the flow is the same."""
    settings = await sync_to_async(oauth_settings)(
        name="tickets", url=tickets_server, client_id="", client_secret=None, scopes=["tickets"]
    )
    assert settings.client_id != "mcpgate" and settings.client_secret
    await add_upstream("tickets", url=tickets_server, credential=Credential.PERSON_OAUTH, oauth=settings, connect=False)

    assert (await Browser(site, ALICE).connect("alice-at-tickets")).status_code == 302
    await listed(tickets_server)

    token = await sync_to_async(make_token)(await person(ALICE))
    assert text(await whoami(mcp, token)) == "alice-at-tickets"


def modern_call(params: dict[str, Any], *, url_elicitation: bool) -> dict[str, Any]:
    """A 2026-07-28 tools/call of tickets__whoami, its capabilities declaring URL-mode elicitation or not."""
    body = rpc("tools/call", envelope({"name": "tickets__whoami", "arguments": {}, **params}))
    if url_elicitation:
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = {"elicitation": {"url": {}}}
    return body


async def test_a_client_that_can_show_a_url_is_asked_to_connect_and_its_retry_then_acts_as_the_person(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    """2026-07-28: the connect page comes back as a URL-mode elicitation in an InputRequiredResult; once the
    person has connected, the client's retry (with its answer) is the upstream's result."""
    await tickets(tickets_server)
    alice_browser = Browser(site, ALICE)
    await Browser(site, BOB, "sales").connect("bob-at-tickets")  # so that the upstream is listed
    await listed(tickets_server)
    await alice_browser.get("/connect/")  # Alice's account exists from her first sign-in
    token = await sync_to_async(make_token)(await person(ALICE))
    headers = modern(token, "tools/call", "tickets__whoami")

    asked = await mcp.post("/mcp", json=modern_call({}, url_elicitation=True), headers=headers)

    result = asked.json()["result"]
    assert result["resultType"] == "input_required"
    assert result["inputRequests"] == {
        "connect-tickets": {
            "method": "elicitation/create",
            "params": {
                "mode": "url",
                "message": "This tool acts as your own tickets account, which you have not connected to mcpgate. "
                f"Connect it at {CONNECT_URL} and call the tool again.",
                "url": CONNECT_URL,
            },
        }
    }
    await alice_browser.connect("alice-at-tickets")
    answered = {"inputResponses": {"connect-tickets": {"action": "accept"}}}
    retried = await mcp.post("/mcp", json=modern_call(answered, url_elicitation=True), headers=headers)
    assert retried.json()["result"]["content"][0]["text"] == "alice-at-tickets"
    assert await outcomes() == ["connect_requested", "ok"]


async def test_a_retry_still_not_connected_and_a_client_without_url_elicitation_get_the_tool_error(
    upstream_keys, tickets_server, site, mcp, make_token
) -> None:
    await tickets(tickets_server)
    await Browser(site, BOB, "sales").connect("bob-at-tickets")
    await listed(tickets_server)
    carol = await sync_to_async(User.objects.create)(username="carol@example.com", email="carol@example.com")
    headers = modern(await sync_to_async(make_token)(carol), "tools/call", "tickets__whoami")

    declined = {"inputResponses": {"connect-tickets": {"action": "decline"}}}
    for body in (modern_call(declined, url_elicitation=True), modern_call({}, url_elicitation=False)):
        result = (await mcp.post("/mcp", json=body, headers=headers)).json()["result"]
        assert result["isError"] is True and "Connect it at" in result["content"][0]["text"]
    assert await outcomes() == ["not_connected", "not_connected"]


async def outcomes() -> list[str]:
    return [detail["outcome"] for detail in await sync_to_async(tool_calls)()]
