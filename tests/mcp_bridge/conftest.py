"""Fixtures for /mcp: the real ASGI application in-process (httpx2 over ASGI) and tokens for the personas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, set_token_value

from oauth_ext.models import Client, User
from tests.conftest import INTERNAL_BASE, PUBLIC_BASE

HANDSHAKE_VERSION = "2025-06-18"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def alice(transactional_db: Any) -> User:
    return User.objects.create(username="alice@example.com", email="alice@example.com", proxy_groups=["eng"])


@pytest.fixture
def bob(transactional_db: Any) -> User:
    return User.objects.create(username="bob@example.com", email="bob@example.com", proxy_groups=["sales"])


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


@pytest.fixture
async def mcp() -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client for the ASGI site (mcpgate.asgi) on the internal host, lifespan running."""
    from mcpgate.asgi import Application

    app = Application()
    async with app.mcp_endpoint.lifespan():
        transport = httpx2.ASGITransport(app=app, client=("192.0.2.10", 40000))
        async with httpx2.AsyncClient(transport=transport, base_url=INTERNAL_BASE) as client:
            yield client


def rpc(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def bearer(token: str, version: str = HANDSHAKE_VERSION, **extra: str) -> dict[str, str]:
    return {**MCP_HEADERS, "Authorization": f"Bearer {token}", "MCP-Protocol-Version": version, **extra}


__all__ = ["HANDSHAKE_VERSION", "MCP_HEADERS", "PUBLIC_BASE", "bearer", "rpc"]


@pytest.fixture
def alice_token(alice: User, make_token: TokenFactory) -> str:
    return make_token(alice)
