"""The ``mcp`` SDK's own OAuth client against /mcp under gunicorn (issue 3, "Done means").

``mcp.client.auth.OAuthClientProvider`` does everything itself: the 401 from /mcp, protected
resource metadata, the authorization server's metadata, dynamic registration, PKCE, the code
exchange with ``resource``, the retry with the token, and (SEP-835) stepping up to a wider
scope on 403 ``insufficient_scope``. The test plays only the person in the browser: in
``redirect_handler`` it opens the authorization URL as Alice signed in at oauth2-proxy, submits
the consent form, and hands the redirect's ``code``, ``state`` and ``iss`` to
``callback_handler``. Nothing listens at the loopback redirect URI.

Both ways the SDK connects: ``mode="legacy"`` (the initialize handshake, 2025-11-25) and the
default ``auto``, which probes ``server/discover`` and speaks 2026-07-28.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult
from mcp_types import CallToolResult
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION
from oauth2_provider.models import get_access_token_model

from notes.models import Note
from oauth_ext.models import Client as OAuthClient

from .oauthclient import (
    ALICE,
    MemoryTokenStorage,
    approve,
    authorization_code_result,
    authorize,
    discover,
    exchange,
    json_of,
    public_client_metadata,
)
from .server import GunicornServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REDIRECT_URI = "http://127.0.0.1:33419/callback"
CONNECT_TIMEOUT = 60.0


@dataclass
class Person:
    """Alice at her browser: each authorization URL the client opens, approved, and the redirect."""

    server: GunicornServer
    consent_text: tuple[str, ...] = ()
    opened: list[str] = field(default_factory=list)
    redirects: list[dict[str, str]] = field(default_factory=list)

    def approve(self, url: str) -> dict[str, str]:
        with self.server.client("internal", headers=ALICE) as browser:
            return approve(browser, url, REDIRECT_URI, consent_text=self.consent_text)

    async def redirect_handler(self, url: str) -> None:
        self.opened.append(url)
        self.redirects.append(await anyio.to_thread.run_sync(self.approve, url))

    async def callback_handler(self) -> AuthorizationCodeResult:
        return authorization_code_result(self.redirects[-1])


@dataclass
class Exchanges:
    """Every HTTP request the SDK's client sent, as (method, path, status)."""

    seen: list[tuple[str, str, int]] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        self.seen.append((response.request.method, response.request.url.path, response.status_code))


@dataclass
class Run:
    person: Person
    storage: MemoryTokenStorage
    exchanges: Exchanges
    protocol_version: str = ""
    tools: list[str] = field(default_factory=list)
    results: dict[str, CallToolResult] = field(default_factory=dict)


def connect_and(
    server: GunicornServer,
    *,
    mode: str,
    client_name: str,
    steps: Callable[[Client, Run], Awaitable[None]],
    consent_text: tuple[str, ...] = (),
) -> Run:
    """Connect the SDK's client to /mcp with its OAuth provider, then run ``steps``."""
    url = server.internal + "/mcp"
    run = Run(Person(server, consent_text), MemoryTokenStorage(), Exchanges())
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=public_client_metadata(client_name, REDIRECT_URI),
        storage=run.storage,
        redirect_handler=run.person.redirect_handler,
        callback_handler=run.person.callback_handler,
    )

    async def main() -> None:
        http = server.async_client(auth=provider)
        http.event_hooks["response"].append(run.exchanges.on_response)
        with anyio.fail_after(CONNECT_TIMEOUT):
            async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                run.protocol_version = client.protocol_version
                run.tools = sorted(tool.name for tool in (await client.list_tools()).tools)
                await steps(client, run)

    anyio.run(main)
    if run.storage.tokens is not None:
        server.remember(run.storage.tokens.access_token, run.storage.tokens.refresh_token)
    return run


async def call_whoami(client: Client, run: Run) -> None:
    run.results["whoami"] = await client.call_tool("whoami", {})


def assert_whoami(result: CallToolResult, *, client_name: str, scopes: list[str]) -> None:
    assert not result.is_error, result
    identity = result.structured_content
    assert identity is not None, result
    assert identity["email"] == "alice@example.com"
    assert identity["groups"] == ["eng"]
    assert identity["client_name"] == client_name
    assert identity["scopes"] == scopes
    assert identity["host"] == "internal"


def assert_discovered_then_authorized(run: Run, mcp_statuses: list[int]) -> None:
    """The SDK went the way the MCP authorization spec describes, once, and then stayed authorized."""
    assert run.exchanges.seen == [
        ("POST", "/mcp", 401),
        ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/oauth/register", 201),
        ("POST", "/oauth/token", 200),
        *(("POST", "/mcp", status) for status in mcp_statuses),
    ]
    assert len(run.person.opened) == 1


def authorization_query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize(
    ("mode", "version", "mcp_statuses"),
    [
        # initialize (retried with the token), notifications/initialized, tools/list, tools/call
        ("legacy", LATEST_HANDSHAKE_VERSION, [200, 202, 200, 200]),
        # server/discover (retried with the token), tools/list, tools/call
        ("auto", LATEST_MODERN_VERSION, [200, 200, 200]),
    ],
    ids=["legacy", "auto"],
)
def test_sdk_oauth_client_lists_and_calls_tools(
    gunicorn_server: GunicornServer, mode: str, version: str, mcp_statuses: list[int]
) -> None:
    """From nothing to a tools/call as Alice: discovery, registration, consent, code, token."""
    name = f"SDK client ({mode})"
    run = connect_and(
        gunicorn_server,
        mode=mode,
        client_name=name,
        steps=call_whoami,
        consent_text=(name, "127.0.0.1:33419", gunicorn_server.internal + "/mcp"),
    )

    assert run.protocol_version == version
    assert run.tools == ["add_note", "list_notes", "whoami"]
    assert_whoami(run.results["whoami"], client_name=name, scopes=["mcp"])
    assert_discovered_then_authorized(run, mcp_statuses)

    # What the SDK asked for: PKCE S256, the PRM's resource (RFC 8707), the challenged scope.
    query = authorization_query(run.person.opened[0])
    assert query["code_challenge_method"] == "S256"
    assert query["resource"] == gunicorn_server.internal + "/mcp"
    assert query["scope"] == "mcp"
    assert query["redirect_uri"] == REDIRECT_URI

    # Its registration and token, as the server recorded them.
    assert run.storage.client_info is not None and run.storage.tokens is not None
    registered = OAuthClient.objects.get(client_id=run.storage.client_info.client_id)
    assert registered.name == name
    assert registered.token_endpoint_auth_method == "none"
    assert run.storage.tokens.scope == "mcp"
    tokens = get_access_token_model().objects.filter(application=registered, user__isnull=False)
    assert [(t.user.email, t.resource) for t in tokens] == [("alice@example.com", [gunicorn_server.internal + "/mcp"])]


def test_sdk_client_steps_up_to_the_scope_a_tool_needs(gunicorn_server: GunicornServer) -> None:
    """add_note needs notes:write: 403 insufficient_scope, the SDK re-authorizes wider, the call succeeds.

    The SDK implements the MCP step-up (SEP-835/SEP-2350): it asks for the union of what it had
    and what the challenge names, the person consents again (now to notes:write), and the
    call is retried with the new token.
    """
    name = "SDK client (step-up)"

    async def steps(client: Client, run: Run) -> None:
        run.results["whoami"] = await client.call_tool("whoami", {})
        run.person.consent_text = ("notes:write", "Add notes in your name")
        run.results["add_note"] = await client.call_tool("add_note", {"text": "Water the plants"})
        run.results["whoami again"] = await client.call_tool("whoami", {})

    run = connect_and(gunicorn_server, mode="auto", client_name=name, steps=steps)

    assert_whoami(run.results["whoami"], client_name=name, scopes=["mcp"])
    added = run.results["add_note"]
    assert not added.is_error, added
    assert added.structured_content is not None
    assert added.structured_content["text"] == "Water the plants"
    assert_whoami(run.results["whoami again"], client_name=name, scopes=["mcp", "notes:write"])

    # Two authorizations: the first for the basic scope, the second for the union.
    assert [authorization_query(url)["scope"] for url in run.person.opened] == ["mcp", "mcp notes:write"]
    assert ("POST", "/mcp", 403) in run.exchanges.seen
    assert run.exchanges.seen.count(("POST", "/oauth/register", 201)) == 1  # the same client, re-authorized
    assert run.storage.tokens is not None and run.storage.tokens.scope == "mcp notes:write"
    note = Note.objects.get()
    assert (note.user.email, note.text) == ("alice@example.com", "Water the plants")


def test_sdk_client_sees_a_tool_failure_as_an_error_result(gunicorn_server: GunicornServer) -> None:
    """Bad arguments are the tool's failure: ``isError: true`` with a message, not a protocol error (L4)."""

    async def steps(client: Client, run: Run) -> None:
        run.results["list_notes"] = await client.call_tool("list_notes", {"limit": 0})

    run = connect_and(gunicorn_server, mode="legacy", client_name="SDK client (errors)", steps=steps)
    result = run.results["list_notes"]
    assert result.is_error is True
    assert result.content[0].type == "text"
    assert result.content[0].text == "Invalid arguments: limit must be at least 1", result


def test_a_token_in_the_query_string_is_refused_and_not_logged(gunicorn_server: GunicornServer) -> None:
    """R1: only the Authorization header counts. A token sent in the URL gets 401, and the
    access log, which records request lines, must not keep it (the fixture checks the whole log)."""
    with gunicorn_server.client() as client, gunicorn_server.client(headers=ALICE) as browser:
        discovery = discover(client, gunicorn_server.internal + "/mcp")
        registered = client.post(
            discovery.endpoint("registration"),
            json={"client_name": "query string", "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"},
        )
        client_id = json_of(registered)["client_id"]
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=REDIRECT_URI)
        token = json_of(exchange(client, discovery, grant, client_id=client_id))["access_token"]

        logged_before = gunicorn_server.log().count('"POST /mcp')
        response = client.post(
            "/mcp",
            params={"access_token": token},
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"},
        )
        assert response.status_code == 401, response.text
        assert 'resource_metadata="' in response.headers["www-authenticate"]
        assert json_of(response)["error"] == "invalid_request"

    deadline = time.monotonic() + 5  # the access line is written once the response is sent
    while gunicorn_server.log().count('"POST /mcp') == logged_before and time.monotonic() < deadline:
        time.sleep(0.05)
    log = gunicorn_server.log()
    assert log.count('"POST /mcp') > logged_before, log[-2000:]
    assert token not in log
