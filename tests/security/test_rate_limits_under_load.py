"""Rate limits hold under concurrency, across gunicorn's workers: never more admitted than the limit.

The finding: 120 concurrent registrations from one address created 84 clients on PostgreSQL
against a limit of 30 (a database count, raced), and on SQLite 62 of them answered 500. Here 120
requests at once hit a real gunicorn with two workers, for each kind of limit: registrations from
one address, token requests for one client from many addresses, /mcp calls with one access
token. Exactly the limit is admitted, every other request is 429 with Retry-After, the database
holds exactly what the admitted requests made, and the shared counter saw all 120.

No window can end during a burst: the key (the address, the client, the token) is chosen so that
its window, as the shared cache reports it (``ratelimit.peek``), has at least 90 seconds left (45
for a minute-long window): far more than a burst takes. The server and this process count in the same
cache directory (tests/testenv.py), which is cleared before each test.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from django.test import override_settings
from oauth2_provider.models import get_access_token_model

from audit.models import AuditEvent, AuditKind
from mcp_bridge.tokens import peek_calls
from mcpgate import ratelimit
from mcpgate.ratelimit import Limit
from oauth_ext.models import Client, User
from tests.conftest import CLAUDE_CALLBACK, RateLimitClock
from tests.e2e import conftest as e2e
from tests.e2e.grants import live_token
from tests.e2e.server import GunicornServer
from tests.e2e.trail import settled_tool_calls
from tests.personas import ALICE

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

gunicorn_server = e2e.gunicorn_server
BURST = 120
LIMIT = 30
LIMITS = {
    "MCPGATE_REGISTRATION_RATE_PER_MINUTE": str(LIMIT),
    "MCPGATE_RATE_LIMIT_TOKEN_CLIENT": f"{LIMIT}/h",
    "MCPGATE_RATE_LIMIT_MCP": f"{LIMIT}/h",
}


@pytest.fixture(scope="module")
def gunicorn_env() -> dict[str, str]:
    return LIMITS


@pytest.fixture(autouse=True)
def same_limits_here(ratelimit_clock: RateLimitClock) -> Iterator[None]:
    """This process reads the server's counters: same rates, and the real time."""
    ratelimit_clock.now = time.time()
    with override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=LIMIT, **{k: v for k, v in LIMITS.items() if "/" in v}):
        yield


def key_with_time_to_spare(
    limit: Limit, candidates: Callable[[int], str], peek: Callable[[str], ratelimit.Verdict | None] | None = None
) -> str:
    """The first candidate key whose current window will not end during a burst (``peek``: where its count
    is kept, the cache's by default)."""
    period = 60 if limit.rate.endswith("/m") else 3600
    for n in range(500):
        key = candidates(n)
        verdict = peek(key) if peek is not None else ratelimit.peek(limit, key)
        assert verdict is not None and verdict.count == 0
        if verdict.retry_after >= min(90, period * 3 // 4):
            return key
    raise AssertionError("no key with a window long enough left")


def burst(send: Callable[[int], httpx2.Response]) -> list[httpx2.Response]:
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        return list(pool.map(send, range(BURST)))


def assert_exactly_the_limit_admitted(responses: list[httpx2.Response], admitted_status: int) -> None:
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {admitted_status: LIMIT, 429: BURST - LIMIT}, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert 1 <= int(refused.headers["retry-after"]) <= 3600


def rate_limited_rows() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=AuditKind.RATE_LIMITED))


def test_120_concurrent_registrations_from_one_address_make_exactly_30_clients(
    gunicorn_server: GunicornServer,
) -> None:
    address = key_with_time_to_spare(ratelimit.REGISTER, lambda n: f"203.0.113.{n % 250 + 1}")
    http = gunicorn_server.client("public", limits=httpx2.Limits(max_connections=BURST))

    def register(n: int) -> httpx2.Response:
        metadata = {
            "client_name": f"Burst {n}",
            "redirect_uris": [CLAUDE_CALLBACK],
            "token_endpoint_auth_method": "none",
        }
        # The test process is the trusted proxy (127.0.0.1): the client's address is the forwarded one.
        return http.post("/oauth/register", json=metadata, headers={"X-Forwarded-For": address})

    with http:
        responses = burst(register)

    assert_exactly_the_limit_admitted(responses, 201)
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json()["error"] == "temporarily_unavailable"
    assert Client.objects.count() == LIMIT
    assert set(Client.objects.values_list("registered_from", flat=True)) == {address}
    verdict = ratelimit.peek(ratelimit.REGISTER, address)
    assert verdict is not None and verdict.count == BURST
    assert len(rate_limited_rows()) == 1


def test_120_concurrent_token_requests_for_one_client_from_many_addresses_admit_exactly_30(
    gunicorn_server: GunicornServer,
) -> None:
    def a_client(n: int) -> str:
        return str(
            Client.objects.create(
                name=f"Client {n}",
                client_type=Client.CLIENT_PUBLIC,
                authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
                redirect_uris=CLAUDE_CALLBACK,
                token_endpoint_auth_method="none",
                client_secret="",
            ).client_id
        )

    client_id = key_with_time_to_spare(ratelimit.TOKEN_BY_CLIENT, a_client)
    http = gunicorn_server.client("public", limits=httpx2.Limits(max_connections=BURST))

    def token(n: int) -> httpx2.Response:
        data = {"grant_type": "authorization_code", "code": secrets.token_urlsafe(16), "client_id": client_id}
        return http.post("/oauth/token", data=data, headers={"X-Forwarded-For": f"198.51.100.{n + 1}"})

    with http:
        responses = burst(token)

    assert_exactly_the_limit_admitted(responses, 400)
    assert {r.json()["error"] for r in responses} == {"invalid_grant", "temporarily_unavailable"}
    assert not get_access_token_model().objects.exists()
    verdict = ratelimit.peek(ratelimit.TOKEN_BY_CLIENT, client_id)
    assert verdict is not None and verdict.count == BURST
    [row] = rate_limited_rows()
    assert row.detail == {"route": "token", "key": "client", "rate": f"{LIMIT}/h", "client_id": client_id}


def test_120_concurrent_mcp_calls_with_one_token_run_exactly_30_tools(
    gunicorn_server: GunicornServer, public_client: Client
) -> None:
    alice = User.objects.create(username=ALICE, email=ALICE)
    tokens: dict[str, str] = {}

    def a_token(n: int) -> str:
        row, raw = live_token(alice, public_client, resource=gunicorn_server.internal + "/mcp")
        tokens[str(row.pk)] = raw
        return str(row.pk)

    # Where /mcp keeps the count: the database on PostgreSQL, else the cache (mcp_bridge.tokens).
    def calls(token_id: str) -> ratelimit.Verdict | None:
        return peek_calls(get_access_token_model().objects.get(pk=token_id))

    token_id = key_with_time_to_spare(ratelimit.MCP, a_token, calls)
    raw = tokens[token_id]
    gunicorn_server.remember(raw)
    assert get_access_token_model().objects.get(pk=token_id).token_checksum == hashlib.sha256(raw.encode()).hexdigest()
    http = gunicorn_server.client("internal", limits=httpx2.Limits(max_connections=BURST))
    headers = {
        "Authorization": f"Bearer {raw}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-06-18",
    }

    def call(n: int) -> httpx2.Response:
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        return http.post("/mcp", content=json.dumps(body), headers=headers)

    with http:
        responses = burst(call)

    assert_exactly_the_limit_admitted(responses, 200)
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["jsonrpc"] == "2.0" and refused.json()["error"]["code"] == -32029
    assert len(settled_tool_calls(at_least=LIMIT)) == LIMIT
    verdict = calls(token_id)
    assert verdict is not None and verdict.count == BURST
    assert len(rate_limited_rows()) == 1
