"""Fixtures for /mcp: the real ASGI application in-process (httpx2 over ASGI) and tokens for the personas."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, set_token_value

from mcpgate.asyncdb import AsyncDatabase
from oauth_ext.models import Client, User
from tests.asgi import worker_threads_closed
from tests.conftest import INTERNAL_BASE, PROXY_ADDR
from tests.personas import ALICE, BOB

HANDSHAKE_VERSION = "2025-06-18"
HANDSHAKE_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSION = "2026-07-28"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def alice(transactional_db: Any) -> User:
    return User.objects.create(username=ALICE, email=ALICE, proxy_groups=["eng"])


@pytest.fixture
def bob(transactional_db: Any) -> User:
    return User.objects.create(username=BOB, email=BOB, proxy_groups=["sales"])


@pytest.fixture
def app_client(transactional_db: Any) -> Client:
    return Client.objects.create(
        name="Claude Code",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1/callback",
        token_endpoint_auth_method="none",
        client_secret="",
    )


TokenFactory = Callable[..., str]


@pytest.fixture
def make_token(app_client: Client) -> TokenFactory:
    """Mint an access token as /oauth/token would (hashed at rest, audience-bound)."""
    counter = iter(range(10_000))

    def make(
        user: User,
        *,
        scope: str = "mcp",
        resource: list[str] | None = None,
        client: Client | None = None,
        expires_in: int = 3600,
    ) -> str:
        raw = f"test-token-{user.pk}-{next(counter)}-{timezone.now().timestamp()}"
        token = get_access_token_model()(
            user=user,
            application=client or app_client,
            scope=scope,
            expires=timezone.now() + timedelta(seconds=expires_in),
            resource=[INTERNAL_BASE + "/mcp"] if resource is None else resource,
        )
        set_token_value(token, raw)
        token.save()
        return raw

    return make


PEER = ("192.0.2.10", 40000)  # an ordinary client, no proxy in between
PROXY_PEER = (PROXY_ADDR, 1234)  # oauth2-proxy / the load balancer (MCPGATE_TRUSTED_PROXIES)


@pytest.fixture
def loop_database(settings: Any) -> None:
    """MCPGATE_MCP_LOOP_DATABASE on (mcpgate.asyncdb): on PostgreSQL, admission's lookup and the audit row are
    sent from the event loop. Request it before ``site``/``mcp``, whose lifespan reads it."""
    settings.MCPGATE_MCP_LOOP_DATABASE = True


@pytest.fixture
def loop_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL sent on the event loop's own connections (mcpgate.asyncdb, PostgreSQL), as it is sent."""
    sent: list[str] = []
    fetchone = AsyncDatabase.fetchone

    async def recorded(self: AsyncDatabase, sql: str, params: Any) -> Any:
        sent.append(sql)
        return await fetchone(self, sql, params)

    monkeypatch.setattr(AsyncDatabase, "fetchone", recorded)
    return sent


@asynccontextmanager
async def thread_statements() -> AsyncIterator[list[str]]:
    """The SQL the request path's worker thread sends within the block: the ``site`` fixture makes the event
    loop's default executor one thread, whose connection a wrapper counts."""
    sent: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: connections["default"].execute_wrappers.append(count))
    try:
        yield sent
    finally:
        await loop.run_in_executor(None, lambda: connections["default"].execute_wrappers.remove(count))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(*, fast_path: bool = True) -> AsyncIterator[Any]:
    """The ASGI site (mcpgate.asgi.Application) with its lifespan running, its worker threads ours
    (``tests.threads``: /mcp does its database work in the loop's default executor, as under uvicorn)."""
    from mcpgate.asgi import Application

    async with worker_threads_closed():
        app = Application(fast_path=fast_path)
        async with app.mcp_endpoint.lifespan():
            yield app


@pytest.fixture
async def own_connections_closed() -> AsyncIterator[None]:
    """For tests that read through ``sync_to_async`` outside ``serving``: close what its thread opened after
    the test (left open, PostgreSQL refuses to drop the test database)."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def site(transactional_db: Any) -> AsyncIterator[Any]:
    """The site, serving (the database comes first: the lifespan's gateway reads the upstreams at once)."""
    async with serving() as app:
        yield app


def http_client(app: Any, peer: tuple[str, int] = PEER) -> httpx2.AsyncClient:
    """An HTTP client for ``app`` on the internal host, as seen from ``peer``."""
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app, client=peer), base_url=INTERNAL_BASE)


@pytest.fixture
async def mcp(site: Any) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client for the ASGI site on the internal host, lifespan running."""
    async with http_client(site) as client:
        yield client


@pytest.fixture
async def via_proxy(site: Any) -> AsyncIterator[httpx2.AsyncClient]:
    """The same site reached through the trusted proxy, whose X-Forwarded-* headers are believed."""
    async with http_client(site, PROXY_PEER) as client:
        yield client


def rpc(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method}


def call(name: str, arguments: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    """A tools/call request."""
    return rpc("tools/call", {"name": name, "arguments": arguments or {}}, id=id)


def bearer(token: str, version: str | None = HANDSHAKE_VERSION, **extra: str) -> dict[str, str]:
    """Headers of a 2025-era request; ``version=None`` sends no MCP-Protocol-Version."""
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}", **extra}
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    return headers


def envelope(params: dict[str, Any] | None = None, version: str = MODERN_VERSION) -> dict[str, Any]:
    """2026-07-28 params: every request carries its protocol version and capabilities in ``_meta``."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    }
    return {**(params or {}), "_meta": meta}


def modern(token: str, method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    """Headers of a 2026-07-28 request: the version, and the routing headers mirroring the body."""
    headers = {**bearer(token, MODERN_VERSION), "Mcp-Method": method, **extra}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def stored_token(raw: str) -> Any:
    """The AccessToken row for a raw token value (stored as its SHA-256 checksum)."""
    checksum = hashlib.sha256(raw.encode()).hexdigest()
    return get_access_token_model().objects.select_related("user", "application").get(token_checksum=checksum)


@pytest.fixture
def alice_token(alice: User, make_token: TokenFactory) -> str:
    return make_token(alice)


@pytest.fixture
def bob_token(bob: User, make_token: TokenFactory) -> str:
    return make_token(bob)
