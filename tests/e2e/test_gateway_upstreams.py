"""The gateway with real upstream MCP servers, through gunicorn, as Alice with a real token (issue 10).

The upstreams are real processes: ``@modelcontextprotocol/server-everything`` over stdio, Streamable
HTTP and legacy SSE, ``mcp-server-time`` (Python, stdio, its own environment) and a header recorder
(tests/e2e/upstreamhelpers.py). They are added with ``manage.py add_upstream`` on the server's
database, as an operator would, and reached through /mcp with the ``mcp`` SDK's client and a token
from the real OAuth flow. Each test's rows (upstreams, tokens) are flushed after it; the servers
(gunicorn, the HTTP upstreams) are shared by the module.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import mcp_types as types
import pytest
from cryptography.fernet import Fernet
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from gateway.connections import REFRESH_AHEAD
from gateway.hooks import reserved_names
from gateway.models import Upstream
from gateway.services import parse_env, parse_header, target_from, upstream_create
from tests.e2e.trail import settled_tool_calls
from tests.gateway.fixtures import serving
from tests.ports import free_port

from .oauthclient import ALICE as ALICE_BROWSER
from .oauthclient import BOB as BOB_BROWSER
from .oauthclient import person_token
from .server import GunicornServer, ServerFailed, database_env, gunicorn, manage
from .upstreamhelpers import (
    EVERYTHING_DOCS,
    UpstreamProcess,
    everything_command,
    everything_http,
    everything_sse,
    header_recorder,
    identity_verifier,
    recorded_headers,
    running,
    time_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REDIRECT_URI = "http://127.0.0.1:33421/callback"
HEADER = "X-Mcpgate-Identity"
UPSTREAM_KEY = Fernet.generate_key().decode()
# Faster than the default 2 s, so that a change made with manage.py reaches the workers quickly.
POLL_SECONDS = 0.5
SETTINGS = {"MCPGATE_UPSTREAM_KEYS": UPSTREAM_KEY, "MCPGATE_UPSTREAM_POLL_SECONDS": str(POLL_SECONDS)}
LOCAL_TOOLS = {"whoami", "add_note", "list_notes"}
# Long enough for both workers to notice an upstream (one poll) and start it (node boots in ~0.5 s).
SERVED_WITHIN = 20.0
# Fresh sessions a warm-up calls through (served_everywhere).
WARM_SESSIONS = 16
T = TypeVar("T")
# What a stdio upstream may see: the SDK's short list, the locale, and what the operator configured.
STDIO_BASE_ENV = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG"}
# New connections after an outage, so that both workers (each with its own session) are reached.
FRESH_CONNECTIONS = 8


@pytest.fixture(scope="module")
def gunicorn_env() -> dict[str, str]:
    return dict(SETTINGS)


@pytest.fixture(autouse=True)
def upstream_keys(settings: Any) -> None:
    """This process seals credentials as the servers open them: with the same key."""
    settings.MCPGATE_UPSTREAM_KEYS = [UPSTREAM_KEY]


@pytest.fixture(scope="module")
def everything_over_http(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    with running(everything_http(port, tmp_path_factory.mktemp("everything-http") / "log")) as process:
        yield process


@pytest.fixture(scope="module")
def everything_over_sse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    with running(everything_sse(port, tmp_path_factory.mktemp("everything-sse") / "log")) as process:
        yield process


# -- helpers ------------------------------------------------------------------------------------


def alice_token(server: GunicornServer) -> str:
    """Alice's access token for this server's /mcp, through the real OAuth flow."""
    return person_token(server, client_name="Gateway e2e", redirect_uri=REDIRECT_URI)


def add_upstream(server: GunicornServer, name: str, *args: str) -> dict[str, str]:
    """``manage.py add_upstream NAME ARGS`` on the server's database; its JSON answer."""
    answer = json.loads(server.manage("add_upstream", name, *args))
    assert answer["name"] == name, answer
    return answer


def add(
    name: str,
    *,
    url: str | None = None,
    command: list[str] | None = None,
    sse: bool = False,
    headers: tuple[str, ...] = (),
    env: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> Upstream:
    """What ``add_upstream`` does (the same parsing and service), from this process on the same database.

    A manage.py run costs a Django start-up, seconds on a busy CI machine; the command itself is
    exercised by the two-replica test below and by tests/gateway/test_commands.py.
    """
    return upstream_create(
        name=name,
        target=target_from(url=url, command=command, sse=sse),
        headers=dict(parse_header(h) for h in headers),
        env=dict(parse_env(e) for e in env),
        timeout=timeout,
        local_tools=reserved_names(),
    )


@asynccontextmanager
async def mcp_session(server: GunicornServer, token: str) -> AsyncIterator[Client]:
    """The SDK's client on /mcp with Alice's bearer token (no response cache: lists must be fresh)."""
    http = server.async_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(server.internal + "/mcp", http_client=http), cache=None) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text", result
    return result.content[0].text


def unavailable(name: str) -> str:
    return f"The upstream {name} is unavailable; try again later."


async def served(client: Client, tool: str, arguments: dict[str, Any], *, within: float = SERVED_WITHIN) -> float:
    """Call ``tool`` until it succeeds (the worker has yet to load or reach its upstream); the seconds it took.

    Only "unknown tool" (not loaded yet) and "unavailable" (not connected yet) are waited out;
    anything else fails at once.
    """
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < within:
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            assert f"Unknown tool: {tool}" in str(exc), exc
            last = exc
        else:
            upstream = tool.split("__", 1)[0]
            if not result.is_error:
                return time.monotonic() - started
            assert text_of(result) == unavailable(upstream), result
            last = result
        await anyio.sleep(0.1)
    raise AssertionError(f"{tool} not served within {within} s: {last}")


async def served_everywhere(server: GunicornServer, token: str, tool: str, arguments: dict[str, Any]) -> None:
    """``served`` on ``WARM_SESSIONS`` fresh sessions, so that every worker has loaded and reached ``tool``'s
    upstream before a test relies on it.

    Each worker picks up a new upstream on its own (within ``MCPGATE_UPSTREAM_POLL_SECONDS``) and connects to it
    on its own; until then it answers "unknown tool" or "unavailable". A session's connections reach a worker
    the kernel picks by a hash of their addresses (a listening socket per worker, mcpgate.workers), so a later
    call of the same session may reach the other worker than its warm-up did. With two workers, 16 sessions
    all missing one of them is a 1 in 2**15 chance.
    """
    for _ in range(WARM_SESSIONS):
        async with mcp_session(server, token) as fresh:
            await served(fresh, tool, arguments)


async def reached(request: Callable[[], Awaitable[T]], upstream: str, *, within: float = SERVED_WITHIN) -> T:
    """``request`` (a read or a prompt through ``upstream``) until the worker that takes it has its link up.

    Each gunicorn worker connects to an upstream on its own, and the SDK's client may reach either: a
    worker still connecting answers "unavailable" (``served`` waits the same out for tools/call).
    """
    started = time.monotonic()
    while True:
        try:
            return await request()
        except MCPError as exc:
            if exc.error.message != unavailable(upstream) or time.monotonic() - started > within:
                raise
        await anyio.sleep(0.1)


def run(main: Callable[[], Any]) -> None:
    anyio.run(main)


def upstream_calls(upstream: str) -> list[dict[str, Any]]:
    """The audit rows of tools/call through ``upstream``, oldest first (once the server's batches are in)."""
    return [row.detail for row in settled_tool_calls() if row.detail.get("upstream") == upstream]


# -- 1. server-everything over each transport -----------------------------------------------------


def add_everything(name: str, transport: str, request: pytest.FixtureRequest) -> Upstream:
    """server-everything over ``transport``; the HTTP ones are the module's processes."""
    if transport == "stdio":
        return add(name, command=everything_command("stdio"))
    if transport == "streamable_http":
        process: UpstreamProcess = request.getfixturevalue("everything_over_http")
        return add(name, url=f"http://127.0.0.1:{process.port}/mcp")
    process = request.getfixturevalue("everything_over_sse")
    return add(name, url=f"http://127.0.0.1:{process.port}/sse", sse=True)


@pytest.mark.parametrize("transport", ["stdio", "streamable_http", "sse"])
def test_server_everything_is_listed_called_read_and_prompted_through_the_gateway(
    gunicorn_server: GunicornServer, transport: str, request: pytest.FixtureRequest
) -> None:
    """tools/list, tools/call (echo, get-sum), resources/list and reads, prompts/list and get, all as ev__…"""
    upstream = add_everything("ev", transport, request)
    assert (upstream.prefix, upstream.transport) == ("ev", transport)
    token = alice_token(gunicorn_server)
    seen: dict[str, Any] = {}
    document = "demo://resource/static/document/architecture.md"

    async def main() -> None:
        async with mcp_session(gunicorn_server, token) as client:
            await served_everywhere(gunicorn_server, token, "ev__echo", {"message": "warm-up"})
            seen["tools"] = [tool.name for tool in (await client.list_tools()).tools]
            seen["echo"] = await client.call_tool("ev__echo", {"message": "Hello from Alice"})
            seen["sum"] = await client.call_tool("ev__get-sum", {"a": 2, "b": 40})
            seen["resources"] = [str(r.uri) for r in (await client.list_resources()).resources]
            seen["templates"] = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            seen["document"] = await reached(lambda: client.read_resource(document), "ev")
            seen["dynamic"] = await reached(lambda: client.read_resource("demo://resource/dynamic/text/7"), "ev")
            seen["prompts"] = [prompt.name for prompt in (await client.list_prompts()).prompts]
            seen["simple"] = await reached(lambda: client.get_prompt("ev__simple-prompt"), "ev")
            args = {"city": "Lyon", "state": "Rhône"}
            seen["args"] = await reached(lambda: client.get_prompt("ev__args-prompt", args), "ev")

    run(main)

    tools = seen["tools"]
    assert set(tools[:3]) == LOCAL_TOOLS, tools  # local tools first
    assert {"ev__echo", "ev__get-sum", "ev__get-env"} <= set(tools), tools
    assert all(name.startswith("ev__") for name in tools[3:]), tools
    assert text_of(seen["echo"]) == "Echo: Hello from Alice"
    assert text_of(seen["sum"]) == "The sum of 2 and 40 is 42."
    assert document in seen["resources"]
    assert "demo://resource/dynamic/text/{resourceId}" in seen["templates"]
    (content,) = seen["document"].contents
    assert content.text == (EVERYTHING_DOCS / "architecture.md").read_text()
    (dynamic,) = seen["dynamic"].contents
    assert dynamic.uri == "demo://resource/dynamic/text/7"
    assert dynamic.text.startswith("Resource 7: This is a plaintext resource created at ")
    assert {"ev__simple-prompt", "ev__args-prompt"} <= set(seen["prompts"])
    assert [m.content.text for m in seen["simple"].messages] == ["This is a simple prompt without arguments."]
    assert [m.content.text for m in seen["args"].messages] == ["What's weather in Lyon, Rhône?"]

    calls = [(c["tool"], c["outcome"]) for c in upstream_calls("ev") if c["outcome"] == "ok"]
    assert calls[-2:] == [("ev__echo", "ok"), ("ev__get-sum", "ok")], calls


# -- 2. a Python stdio server in its own environment -----------------------------------------------


def test_mcp_server_time_answers_get_current_time_through_the_gateway(gunicorn_server: GunicornServer) -> None:
    add("time", command=[time_server(), "--local-timezone", "UTC"])
    token = alice_token(gunicorn_server)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with mcp_session(gunicorn_server, token) as client:
            await served_everywhere(gunicorn_server, token, "time__get_current_time", {"timezone": "UTC"})
            seen["tools"] = [tool.name for tool in (await client.list_tools()).tools]
            seen["now"] = await client.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})

    run(main)

    assert {"time__get_current_time", "time__convert_time"} <= set(seen["tools"]), seen["tools"]
    result = seen["now"]
    assert not result.is_error, result
    now = json.loads(text_of(result))
    assert now["timezone"] == "Europe/Paris"
    assert now["datetime"][:4].isdigit() and now["datetime"][-6:] in ("+01:00", "+02:00"), now


# -- 3. credentials: the upstream's, never the caller's ---------------------------------------------


def test_http_upstream_gets_its_configured_credential_and_never_the_callers_token(
    gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    secret = "upstream-secret-" + Fernet.generate_key().decode()[:24]
    gunicorn_server.remember(secret)
    record = tmp_path / "headers.jsonl"
    port = free_port()
    with running(header_recorder(port, tmp_path / "recorder.log", record)):
        add(
            "rec",
            url=f"http://127.0.0.1:{port}/mcp",
            headers=(f"Authorization: Bearer {secret}", "X-Team: platform"),
        )
        token = alice_token(gunicorn_server)
        seen: dict[str, Any] = {}

        async def main() -> None:
            async with mcp_session(gunicorn_server, token) as client:
                await served_everywhere(gunicorn_server, token, "rec__hello", {"name": "warm-up"})
                seen["hello"] = await client.call_tool("rec__hello", {"name": "Alice"})

        run(main)
        requests = recorded_headers(record)

    assert text_of(seen["hello"]) == "Hello, Alice"
    assert requests, "the recorder saw no request"
    assert any(r.get("mcp-method") == "tools/call" for r in requests), requests
    for headers in requests:
        assert headers["authorization"] == f"Bearer {secret}", headers
        assert headers["x-team"] == "platform", headers
        assert token not in json.dumps(headers), headers
        # Nor who the caller is: oauth2-proxy's identity headers stay at the gateway.
        assert not {name for name in headers if name.startswith("x-forwarded")}, headers
    assert secret not in gunicorn_server.log()


def test_stdio_upstream_gets_its_configured_environment_and_nothing_of_the_gateways(
    gunicorn_server: GunicornServer,
) -> None:
    secret = "stdio-secret-" + Fernet.generate_key().decode()[:24]
    gunicorn_server.remember(secret)
    add("envy", command=everything_command("stdio"), env=("GREETING=hello", f"API_TOKEN={secret}"))
    token = alice_token(gunicorn_server)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with mcp_session(gunicorn_server, token) as client:
            await served_everywhere(gunicorn_server, token, "envy__echo", {"message": "warm-up"})
            seen["env"] = await client.call_tool("envy__get-env", {})

    run(main)

    env = json.loads(text_of(seen["env"]))
    assert env["GREETING"] == "hello"
    assert env["API_TOKEN"] == secret
    assert "SECRET_KEY" not in env and "DATABASE_URL" not in env, sorted(env)
    assert not [name for name in env if name.startswith(("MCPGATE_", "DJANGO_"))], sorted(env)
    assert set(env) <= STDIO_BASE_ENV | {"GREETING", "API_TOKEN"}, sorted(env)
    assert secret not in gunicorn_server.log()


# -- 4. an upstream that goes away and comes back ----------------------------------------------------


def test_an_upstream_that_dies_fails_fast_while_the_others_answer_and_recovers_when_restarted(
    gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    flaky = everything_http(free_port(), tmp_path / "flaky.log")
    timeout = 5.0
    with running(flaky):
        add("steady", command=everything_command("stdio"))
        add("flaky", url=f"http://127.0.0.1:{flaky.port}/mcp", timeout=timeout)
        token = alice_token(gunicorn_server)
        seen: dict[str, Any] = {}

        async def main() -> None:
            async with mcp_session(gunicorn_server, token) as client:
                await served_everywhere(gunicorn_server, token, "flaky__echo", {"message": "warm-up"})
                await served_everywhere(gunicorn_server, token, "steady__echo", {"message": "warm-up"})

                await anyio.to_thread.run_sync(flaky.kill)
                started = time.monotonic()
                seen["down"] = await client.call_tool("flaky__echo", {"message": "anyone there?"})
                seen["down_seconds"] = time.monotonic() - started
                started = time.monotonic()
                seen["down_again"] = await client.call_tool("flaky__echo", {"message": "still nobody?"})
                seen["down_again_seconds"] = time.monotonic() - started
                seen["steady"] = await client.call_tool("steady__echo", {"message": "still here"})
                seen["whoami"] = await client.call_tool("whoami", {})

                await anyio.to_thread.run_sync(flaky.start)
                seen["recovered_seconds"] = await served(client, "flaky__echo", {"message": "back?"}, within=15.0)

            # Every worker, not only the one this connection reached: fresh connections. One that reaches the
            # other worker may find its link still in its own backoff: each recovers within the bound.
            seen["after"] = []
            for _ in range(FRESH_CONNECTIONS):
                async with mcp_session(gunicorn_server, token) as fresh:
                    await served(fresh, "flaky__echo", {"message": "are you back?"}, within=15.0)
                    seen["after"].append(await fresh.call_tool("flaky__echo", {"message": "and you?"}))

        run(main)

    down = seen["down"]
    assert down.is_error, down
    assert text_of(down) in (
        unavailable("flaky"),
        f"The upstream flaky did not answer within {timeout:g} seconds.",
    ), down
    assert seen["down_seconds"] < timeout + 1, seen["down_seconds"]
    assert seen["down_again"].is_error and text_of(seen["down_again"]) == unavailable("flaky"), seen["down_again"]
    assert seen["down_again_seconds"] < 1.0, seen["down_again_seconds"]
    assert text_of(seen["steady"]) == "Echo: still here"
    assert not seen["whoami"].is_error and seen["whoami"].structured_content["email"] == "alice@example.com"
    # The backoff starts at 1 s and doubles; the restart came within a second or two of the failure.
    assert seen["recovered_seconds"] < 10.0, seen["recovered_seconds"]
    assert [text_of(r) for r in seen["after"]] == ["Echo: and you?"] * FRESH_CONNECTIONS, seen["after"]

    outcomes = [c["outcome"] for c in upstream_calls("flaky")]
    assert outcomes[-FRESH_CONNECTIONS - 1 :] == ["ok"] * (FRESH_CONNECTIONS + 1), outcomes
    assert {"upstream_unavailable", "upstream_timeout"} & set(outcomes), outcomes


# -- 5. two replicas on one database --------------------------------------------------------------


def test_an_upstream_added_at_one_replica_is_served_by_another_within_five_seconds(
    gunicorn_server: GunicornServer,
    everything_over_http: UpstreamProcess,
    django_db_blocker: Any,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    from django.db import connection

    with django_db_blocker.unblock():
        db_env = database_env(connection.settings_dict)
    log_path = tmp_path / "replica.log"
    try:
        with gunicorn(db_env=db_env, log_path=log_path, overrides=dict(SETTINGS)) as replica:
            token = alice_token(replica)
            seen: dict[str, Any] = {}

            async def main() -> None:
                async with mcp_session(replica, token) as client:
                    seen["before"] = [tool.name for tool in (await client.list_tools()).tools]
                    await anyio.to_thread.run_sync(
                        lambda: add_upstream(
                            gunicorn_server, "late", "--url", f"http://127.0.0.1:{everything_over_http.port}/mcp"
                        )
                    )
                    started = time.monotonic()
                    while time.monotonic() - started < 5.0:
                        names = [tool.name for tool in (await client.list_tools()).tools]
                        if "late__echo" in names:
                            seen["listed_seconds"] = time.monotonic() - started
                            break
                        await anyio.sleep(0.05)
                    seen["called_seconds"] = await served(client, "late__echo", {"message": "hi"}, within=5.0)
                    seen["echo"] = await client.call_tool("late__echo", {"message": "from the other replica"})

            run(main)
    except ServerFailed as failure:
        pytest.fail(str(failure))

    record_property("listed_after_seconds", seen.get("listed_seconds"))
    print(f"late__echo listed by the other replica after {seen.get('listed_seconds')} s")
    assert "late__echo" not in seen["before"]
    assert "listed_seconds" in seen, "the other replica did not list the new upstream within 5 s"
    assert seen["listed_seconds"] < 5.0
    assert text_of(seen["echo"]) == "Echo: from the other replica"
    assert not replica.leaked(), replica.leaked()
    assert "Traceback" not in replica.log(), replica.log()


# -- 6. what the log holds ---------------------------------------------------------------------------


def test_the_gunicorn_log_holds_no_upstream_credential_no_caller_token_and_no_traceback(
    gunicorn_server: GunicornServer,
) -> None:
    """Runs last: every token and upstream secret the tests above used is in ``seen``."""
    log = gunicorn_server.log()
    assert any(value.startswith("upstream-secret-") for value in gunicorn_server.seen)
    assert any(value.startswith("stdio-secret-") for value in gunicorn_server.seen)
    assert gunicorn_server.leaked() == []
    assert "Traceback" not in log, log
    assert "upstream flaky" in log  # the outage was logged, as one line without its details


# -- identity assertions (issue 12) ---------------------------------------------------------------


def test_an_internal_upstream_verifies_the_person_against_the_key_set_before_and_after_a_key_rotation(
    gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    """The upstream (tests/e2e/identity_verifier.py) verifies the assertion on each call against
    /.well-known/jwks.json, fetched over HTTP by PyJWT's client and cached 5 s (it refetches an unknown key
    id at most every 30 s). ``manage.py rotate_assertion_key`` publishes the new key before it signs, longer
    than the verifier caches the key set (here 8 s; by default 10 minutes, against the 5 minutes the key set
    may be cached); the workers switch to it (within their 10 s cache) and no call is refused meanwhile."""
    port = free_port()
    verifier = identity_verifier(
        port,
        tmp_path / "verifier.log",
        jwks_url=gunicorn_server.internal + "/.well-known/jwks.json",
        issuer=gunicorn_server.internal,
        cache_seconds=5,
    )
    with running(verifier):
        add_upstream(
            gunicorn_server, "tickets", "--url", f"http://127.0.0.1:{port}/mcp", "--identity-assertion", HEADER
        )
        token = alice_token(gunicorn_server)
        seen: list[dict[str, Any]] = []

        async def calls_until(kid: str | None, *, within: float) -> None:
            """Call tickets__me until an assertion signed by ``kid`` is seen (None: once)."""
            async with mcp_session(gunicorn_server, token) as client:
                await served(client, "tickets__me", {})
                deadline = time.monotonic() + within
                while True:
                    result = await client.call_tool("tickets__me", {})
                    assert not result.is_error, text_of(result)  # never refused, before, during or after
                    seen.append(json.loads(text_of(result)))
                    if kid in (None, seen[-1]["kid"]) or time.monotonic() > deadline:
                        return
                    await anyio.sleep(0.2)

        run(lambda: calls_until(None, within=0))
        first = seen[-1]
        rotated = json.loads(gunicorn_server.manage("rotate_assertion_key", "--activate-in", "8"))
        run(lambda: calls_until(rotated["kid"], within=30))

    assert first["email"] == "alice@example.com" and first["aud"] == f"http://127.0.0.1:{port}/mcp"
    assert first["iss"] == gunicorn_server.internal and first["exp"] - first["iat"] == 60 and first["client_id"]
    assert sorted(rotated["published"]) == sorted([first["kid"], rotated["kid"]]) and rotated["kid"] != first["kid"]
    assert seen[-1]["kid"] == rotated["kid"] and {claims["email"] for claims in seen} == {"alice@example.com"}
    assert token not in verifier.log()


# -- per-person OAuth (issue 12) ------------------------------------------------------------------

# oauth_server.py's access tokens: due for renewal (gateway.connections.REFRESH_AHEAD) 2 s after they are issued.
SHORT_LIFETIME = int(REFRESH_AHEAD.total_seconds()) + 2


def add_tickets(server: GunicornServer, url: str) -> None:
    """``manage.py add_upstream tickets --per-person-oauth`` for oauth_server.py at ``url``, its endpoints
    discovered, the client secret given in an environment variable as an operator would."""
    manage(
        server.env | {"TICKETS_SECRET": "tickets-secret"},
        *("add_upstream", "tickets", "--url", url, "--per-person-oauth", "--client-id", "mcpgate"),
        *("--client-secret-env", "TICKETS_SECRET", "--upstream-scopes", "tickets"),
    )
    server.remember("tickets-secret")


def retire_tickets(server: GunicornServer) -> None:
    """Remove the upstream, and give the workers two polls to drop it, before its process stops: the test is
    over, and its end is no upstream outage."""
    server.manage("remove_upstream", "tickets")
    time.sleep(2 * POLL_SECONDS + 0.5)


def connect_in_the_browser(server: GunicornServer, person: dict[str, str], account: str) -> None:
    """``person`` connects ``account`` at the upstream tickets: /connect/tickets/, Continue, the upstream's
    /authorize and sign-in form, back to mcpgate's callback (their browser, through the proxy's headers)."""
    with server.client(headers=person) as browser, httpx2.Client(trust_env=False) as upstream:
        page = browser.get("/connect/tickets/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert page.status_code == 200 and csrf, page.text[:300]
        authorize = browser.post("/connect/tickets/", data={"csrfmiddlewaretoken": csrf.group(1)})
        assert authorize.status_code == 302, authorize.text[:300]
        to_login = upstream.get(authorize.headers["Location"])
        login = to_login.headers["Location"]
        request = parse_qs(urlsplit(login).query)["request"][0]
        back = upstream.post(login.split("?")[0], data={"request": request, "account": account})
        callback = back.headers["Location"]
        assert callback.startswith(server.internal + "/connect/tickets/callback?"), callback
        done = browser.get(callback.removeprefix(server.internal))
        assert (done.status_code, done.headers["Location"]) == (302, "/connect/"), done.text[:300]


def test_a_person_connects_through_the_real_flow_and_concurrent_calls_on_two_workers_renew_once(
    gunicorn_server: GunicornServer,
) -> None:
    """An upstream with its own OAuth server (tests/gateway/fixtures/oauth_server.py, on the SDK's auth
    server): added with manage.py (endpoints discovered), Alice connects in her browser, and her calls act
    as her account there. When her access token is due, calls from eight fresh connections at once (across
    both workers) renew it once: the upstream saw one refresh and never a spent refresh token again."""
    callback = gunicorn_server.internal + "/connect/tickets/callback"
    with contextmanager(serving)("oauth_server.py", str(SHORT_LIFETIME), callback) as url:
        add_tickets(gunicorn_server, url)
        connect_in_the_browser(gunicorn_server, ALICE_BROWSER, "alice-at-tickets")
        token = alice_token(gunicorn_server)
        answers: list[str] = []

        async def calls() -> None:
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(mcp_session(gunicorn_server, token))
                    for _ in range(FRESH_CONNECTIONS)
                ]
                for client in clients:
                    await served(client, "tickets__whoami", {})
                await anyio.sleep(2.5)  # now within REFRESH_AHEAD of the expiry

                async def one(client: Client) -> None:
                    answers.append(text_of(await client.call_tool("tickets__whoami", {})))

                async with anyio.create_task_group() as group:
                    for client in clients:
                        group.start_soon(one, client)

        with httpx2.Client(trust_env=False) as http:
            before = http.get(url.removesuffix("/mcp") + "/stats").json()
            run(calls)
            after = http.get(url.removesuffix("/mcp") + "/stats").json()
        retire_tickets(gunicorn_server)

    assert answers == ["alice-at-tickets"] * FRESH_CONNECTIONS
    assert (after["codes"], after["refreshes"] - before["refreshes"], after["spent_refresh_reused"]) == (1, 1, 0)
    assert not gunicorn_server.leaked()


def test_the_sdk_client_is_asked_to_connect_by_url_elicitation_and_its_retry_acts_as_the_person(
    gunicorn_server: GunicornServer,
) -> None:
    """Bob has not connected tickets; his client (the ``mcp`` SDK's, 2026-07-28, with an elicitation callback)
    is sent the /connect/ page as a URL-mode elicitation, the callback has Bob connect in his browser, and the
    SDK's retry returns the upstream's answer as Bob's account."""
    callback = gunicorn_server.internal + "/connect/tickets/callback"
    with contextmanager(serving)("oauth_server.py", "3600", callback) as url:
        add_tickets(gunicorn_server, url)
        connect_in_the_browser(gunicorn_server, ALICE_BROWSER, "alice-at-tickets")  # so that it is listed
        token = person_token(gunicorn_server, client_name="Bob's client", redirect_uri=REDIRECT_URI, person=BOB_BROWSER)
        asked: list[types.ElicitRequestParams] = []

        async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params)
            await anyio.to_thread.run_sync(connect_in_the_browser, gunicorn_server, BOB_BROWSER, "bob-at-tickets")
            return types.ElicitResult(action="accept")

        answers: list[str] = []

        async def call() -> None:
            http = gunicorn_server.async_client(headers={"Authorization": f"Bearer {token}"})
            transport = streamable_http_client(gunicorn_server.internal + "/mcp", http_client=http)
            async with http, Client(transport, mode="2026-07-28", elicitation_callback=elicit) as client:
                started = time.monotonic()
                while True:  # until the worker this connection reached has listed tickets
                    try:
                        answers.append(text_of(await client.call_tool("tickets__whoami", {})))
                        return
                    except MCPError as exc:
                        assert "Unknown tool" in str(exc) and time.monotonic() - started < SERVED_WITHIN, exc
                    await anyio.sleep(0.1)

        run(call)
        retire_tickets(gunicorn_server)

    assert answers == ["bob-at-tickets"]
    (params,) = asked
    assert isinstance(params, types.ElicitRequestURLParams)
    assert params.url == gunicorn_server.internal + "/connect/tickets/"
    assert params.message.startswith("This tool acts as your own tickets account")
