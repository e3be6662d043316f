"""Shared fixtures: personas, the two hosts, and an OAuth flow driven through real HTTP requests.

Personas: Alice (alice@example.com, group "eng") signs in through oauth2-proxy; Bob
(bob@example.com) is another person of the same organisation; Mallory (mallory@evil.test) is
outside the allowed email domain. Requests "from oauth2-proxy" come from PROXY_ADDR.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import django_ratelimit.core
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import Client as HttpClient
from django.test import override_settings

from mcpgate import ratelimit
from oauth_ext import views
from oauth_ext.models import Client
from tests.e2e.oauthclient import PKCE
from tests.e2e.server import RUNNING
from tests.e2e.trail import BATCH_SECONDS
from tests.personas import ALICE, BOB, MALLORY, OLIVIA, OSCAR  # noqa: F401  (re-exported for the tests)

PROXY_ADDR = "10.9.9.9"
PUBLIC = "mcp.example.com"
INTERNAL = "127.0.0.1:8000"
PUBLIC_BASE = "https://mcp.example.com"
INTERNAL_BASE = "http://127.0.0.1:8000"
LOOPBACK_REDIRECT = "http://127.0.0.1:33418/callback"
PUBLIC_RESOURCE = PUBLIC_BASE + "/mcp"
INTERNAL_RESOURCE = INTERNAL_BASE + "/mcp"
CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgresql`` run in ``make test``'s PostgreSQL pass and are deselected in the SQLite
    pass (not skipped: with CI=true nothing may skip)."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    only_postgres = [item for item in items if item.get_closest_marker("postgresql")]
    if only_postgres:
        config.hook.pytest_deselected(items=only_postgres)
        items[:] = [item for item in items if item not in only_postgres]


GEMINI_CALLBACK = "https://vertexaisearch.cloud.google.com/oauth-redirect"
# An address on the internet that registers clients directly (no proxy in between).
CLIENT_ADDR = "203.0.113.7"


def proxy_headers(email: str, groups: str = "", user: str = "") -> dict[str, str]:
    """What oauth2-proxy adds to a signed-in person's request."""
    headers = {"REMOTE_ADDR": PROXY_ADDR, "HTTP_X_FORWARDED_EMAIL": email}
    if groups:
        headers["HTTP_X_FORWARDED_GROUPS"] = groups
    if user:
        headers["HTTP_X_FORWARDED_USER"] = user
    return headers


class _HiddenInputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.values[a["name"] or ""] = a.get("value") or ""


@contextmanager
def dot_settings(**changes: Any) -> Iterator[None]:
    """Override keys of OAUTH2_PROVIDER for the duration, everywhere DOT reads them.

    DOT reloads its settings on ``setting_changed``, but each view class keeps the oauthlib
    server it built from them (token lifetimes, for one): drop those on the way in and out.
    """

    def forget_servers() -> None:
        for view in (views.AuthorizeView, views.TokenEndpointView, views.RevokeEndpointView):
            if "_oauthlib_core" in vars(view):
                delattr(view, "_oauthlib_core")

    forget_servers()
    try:
        with override_settings(OAUTH2_PROVIDER={**settings.OAUTH2_PROVIDER, **changes}):
            yield
            forget_servers()
    finally:
        forget_servers()


def oauth_error(error: str, description: str) -> dict[str, str]:
    """The RFC 6749 §5.2 error body this server sends."""
    return {"error": error, "error_description": description}


def basic_auth(client_id: str, secret: str) -> str:
    """An RFC 6749 §2.3.1 Authorization header value (form-urlencoded id and secret)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def register(http: HttpClient, metadata: dict[str, Any] | str, *, host: str = PUBLIC, ip: str = CLIENT_ADDR) -> Any:
    """POST an RFC 7591 registration request as a client at ``ip`` would."""
    body = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return http.post("/oauth/register", body, content_type="application/json", HTTP_HOST=host, REMOTE_ADDR=ip)


def body_of(response: Any) -> bytes:
    """A test client response's whole body, streamed (from a synchronous or an asynchronous iterator) or not."""
    if not response.streaming:
        return bytes(response.content)
    if response.is_async:

        async def read() -> bytes:
            return b"".join([chunk async for chunk in response.streaming_content])

        return bytes(async_to_sync(read)())
    return b"".join(response.streaming_content)


def hidden_inputs(html: str) -> dict[str, str]:
    """The hidden fields of a page's form, as a browser would submit them."""
    parser = _HiddenInputs()
    parser.feed(html)
    return parser.values


@pytest.fixture
def http() -> HttpClient:
    """A Django test client that enforces CSRF like a browser-facing deployment."""
    return HttpClient(enforce_csrf_checks=True)


@pytest.fixture
def public_client(db: Any) -> Client:
    """A self-registered public client with a loopback redirect (Claude Code / mcp-remote)."""
    return Client.objects.create(
        name="Claude Code",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=LOOPBACK_REDIRECT,
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.DCR,
        client_secret="",
    )


@pytest.fixture
def confidential_client(db: Any) -> tuple[Client, str]:
    """An operator-made confidential client (Gemini Enterprise) and its one-time secret."""
    from oauth_ext.services import client_create

    return client_create(  # type: ignore[return-value]
        name="Gemini Enterprise",
        redirect_uris=["https://vertexaisearch.cloud.google.com/oauth-redirect"],
        confidential=True,
    )


def authorize_params(client_id: str, pkce: PKCE, redirect_uri: str = LOOPBACK_REDIRECT, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": "st-" + secrets.token_hex(4),
        "scope": "mcp",
        **extra,
    }


class Flow:
    """Drive /oauth/authorize → consent → /oauth/token through the test client, as a browser and a client would."""

    def __init__(self, http: HttpClient, host: str = PUBLIC) -> None:
        self.http = http
        self.host = host
        self.base = PUBLIC_BASE if host == PUBLIC else INTERNAL_BASE

    def authorize(self, params: dict[str, str], email: str = ALICE, groups: str = "eng") -> Any:
        return self.http.get(
            "/oauth/authorize?" + urlencode(params), HTTP_HOST=self.host, **proxy_headers(email, groups)
        )

    def consent(self, page: Any, email: str = ALICE, allow: bool = True) -> Any:
        data = hidden_inputs(page.content.decode())
        data["allow" if allow else "cancel"] = "Authorize" if allow else "Cancel"
        return self.http.post(
            "/oauth/authorize?" + urlencode(page.wsgi_request.GET),
            data,
            HTTP_HOST=self.host,
            HTTP_ORIGIN=self.base,
            **proxy_headers(email),
        )

    def code_from(self, response: Any) -> dict[str, str]:
        assert response.status_code == 302, response.content
        query = parse_qs(urlsplit(response["Location"]).query)
        return {k: v[0] for k, v in query.items()}

    def token(self, data: dict[str, str], **headers: str) -> Any:
        return self.http.post("/oauth/token", data, HTTP_HOST=self.host, **headers)

    def authorize_code(
        self, client_id: str, *, email: str = ALICE, redirect_uri: str = LOOPBACK_REDIRECT, **extra: str
    ) -> tuple[dict[str, str], PKCE, dict[str, str]]:
        """Authorize (consenting if asked): the redirect's query, the PKCE pair and the request's parameters."""
        pkce = PKCE.make()
        params = authorize_params(client_id, pkce, redirect_uri=redirect_uri, **extra)
        page = self.authorize(params, email=email)
        if page.status_code == 200:
            page = self.consent(page, email=email)
        return self.code_from(page), pkce, params

    def exchange(
        self, client_id: str, code: str, pkce: PKCE, *, redirect_uri: str = LOOPBACK_REDIRECT, **extra: str
    ) -> Any:
        """The RFC 6749 §4.1.3 token request for ``code`` (a public client's)."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": pkce.verifier,
            **extra,
        }
        return self.token(data)

    def refresh(self, client_id: str, refresh_token: str, **extra: str) -> Any:
        """The RFC 6749 §6 refresh request (a public client's)."""
        return self.token(
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, **extra}
        )

    def get_tokens(
        self, client_id: str, *, email: str = ALICE, resource: str | None = None, **extra: str
    ) -> dict[str, Any]:
        pkce = PKCE.make()
        params = authorize_params(client_id, pkce, **extra)
        if resource:
            params["resource"] = resource
        page = self.authorize(params, email=email)
        if page.status_code == 200:
            page = self.consent(page, email=email)
        code = self.code_from(page)["code"]
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": params["redirect_uri"],
            "client_id": client_id,
            "code_verifier": pkce.verifier,
        }
        if resource:
            data["resource"] = resource
        response = self.token(data)
        assert response.status_code == 200, response.content
        return dict(response.json())


@pytest.fixture
def flow(http: HttpClient) -> Flow:
    return Flow(http)


@pytest.fixture
def internal_flow(http: HttpClient) -> Flow:
    """The same flow on the internal (VPN) host."""
    return Flow(http, INTERNAL)


@pytest.fixture
def make_client(db: Any) -> Callable[..., Client]:
    """A factory for self-registered public clients with the given redirect URIs."""

    def make(*redirect_uris: str, name: str = "Test client", **fields: Any) -> Client:
        defaults = {
            "client_type": Client.CLIENT_PUBLIC,
            "authorization_grant_type": Client.GRANT_AUTHORIZATION_CODE,
            "token_endpoint_auth_method": "none",
            "registration_source": Client.RegistrationSource.DCR,
            "client_secret": "",
        }
        client = Client(
            name=name, redirect_uris=" ".join(redirect_uris or (LOOPBACK_REDIRECT,)), **{**defaults, **fields}
        )
        client.full_clean()
        client.save()
        return client

    return make


class RateLimitClock:
    """django-ratelimit's clock in the test process: stopped when the test starts, moved on by ``advance``.

    A fixed window ends at a moment that depends on its key; on the real clock a test that counts
    requests could straddle an end and see up to twice the limit admitted. Stopped, it cannot. A
    test that wants the next window moves the clock past it.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def ratelimit_clock(monkeypatch: pytest.MonkeyPatch) -> RateLimitClock:
    clock = RateLimitClock()
    # django_ratelimit.core reads the time through its module's ``time`` (``time.time()``) only.
    monkeypatch.setattr(django_ratelimit.core, "time", clock)
    # The windows of counts kept outside the cache (mcp_bridge.tokens on PostgreSQL) use the same clock.
    monkeypatch.setattr(ratelimit, "time", clock)
    return clock


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Every test starts with no rate-limit or audit counters (they live in the cache, not the database).

    The cache directory is this run's (tests/testenv.py) and shared with the gunicorn servers the
    tests start, so their counters start from zero too.
    """
    for cache in caches.all(initialized_only=False):
        cache.clear()


@pytest.fixture(autouse=True)
def _seeded_rows_for_transactional_tests(request: pytest.FixtureRequest, django_db_blocker: Any) -> None:
    """Put back what migrations seed (the redirect allowlist) for transactional tests.

    A transactional test's teardown flushes every table, the rows data migrations wrote included.
    ``serialized_rollback`` would restore them, but clashes with content types that an earlier
    plain transactional test had re-created with new ids; re-seeding is simpler and order-proof.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    from oauth_ext.models import RedirectAllowlistEntry
    from oauth_ext.redirects import KNOWN_CLIENT_CALLBACKS

    with django_db_blocker.unblock():
        for uri, match, note in KNOWN_CLIENT_CALLBACKS:
            RedirectAllowlistEntry.objects.get_or_create(uri=uri, defaults={"match": match, "note": note})


# How long a transactional test's teardown lets the servers still running settle before the flush, and at most
# how long it then waits for their sessions of the database to leave their transactions.
SETTLE_SECONDS = 3 * BATCH_SECONDS
QUIET_WITHIN = 10.0


@pytest.fixture(autouse=True)
def _servers_settled_before_the_flush(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[None]:
    """A transactional test's teardown empties every table (TRUNCATE on PostgreSQL) while the module's gunicorn
    servers run on: first let them write what the test's calls left queued (audit.batch, every 0.1 s).

    Otherwise a worker's INSERT of a batch and the flush's TRUNCATE take their locks in opposite orders, and
    PostgreSQL breaks the deadlock by failing one of them: CI on 3cebf93 lost the flush ("Database
    test_mcpgate couldn't be flushed", DeadlockDetected). Set up after pytest-django's database fixture
    (plugins' autouse fixtures come first), so torn down before it.
    """
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction") or not RUNNING:
        return
    time.sleep(SETTLE_SECONDS)  # every worker's writer has woken since the test's last call and taken its rows
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            return  # SQLite: the flush waits for the writer's lock (busy timeout) instead of deadlocking
        deadline = time.monotonic() + QUIET_WITHIN
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    " AND state IN ('active', 'idle in transaction')"
                )
                (busy,) = cursor.fetchone()
                if not busy:
                    return
                time.sleep(0.05)
