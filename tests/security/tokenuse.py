"""Helpers for the token attack tests: does a token still work at /mcp and /oauth/token, and racing requests.

/mcp is asked through the real ASGI site (mcpgate.asgi.Application, lifespan running), from a test
that is not async itself; its database work runs on other threads, so a test that uses it must be
transactional (``@pytest.mark.django_db(transaction=True)``) for those threads to see its rows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx2
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client as HttpClient

from tests.conftest import PUBLIC, PUBLIC_BASE, Flow, oauth_error

T = TypeVar("T")

# What /oauth/token answers for a code or refresh token it will not honour (RFC 6749 §5.2).
INVALID_GRANT = oauth_error(
    "invalid_grant", "The code or refresh token is invalid, expired, revoked, or was issued to another client."
)

PEER = ("192.0.2.10", 40000)  # an ordinary MCP client on the internet, no proxy in between
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


def mcp_ping(access_token: str) -> httpx2.Response:
    """A JSON-RPC ping to the public host's /mcp with ``access_token``, through the ASGI site."""

    async def ping() -> httpx2.Response:
        from mcpgate.asgi import Application

        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-worker")
        loop.set_default_executor(executor)
        try:
            app = Application()
            async with app.mcp_endpoint.lifespan():
                transport = httpx2.ASGITransport(app=app, client=PEER)
                async with httpx2.AsyncClient(transport=transport, base_url=PUBLIC_BASE) as client:
                    return await client.post(
                        "/mcp", json=PING, headers={**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}
                    )
        finally:
            # Left open, PostgreSQL refuses to drop the test database at the end.
            await loop.run_in_executor(executor, connections.close_all)
            await sync_to_async(connections.close_all)()
            executor.shutdown(wait=True)

    return asyncio.run(ping())


def works_at_mcp(access_token: str) -> bool:
    """True when /mcp answers the ping; a refused token gets the 401 invalid_token challenge."""
    response = mcp_ping(access_token)
    if response.status_code == 200:
        return True
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token", response.text
    return False


def refresh_works(client_id: str, refresh_token: str) -> bool:
    """True when /oauth/token refreshes with ``refresh_token`` (which rotates it: use it last)."""
    response = Flow(HttpClient(), PUBLIC).refresh(client_id, refresh_token)
    if response.status_code == 200:
        return True
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant", response.content
    return False


def all_at_once(count: int, request: Callable[[int], T], *, timeout: float = 60) -> list[T]:
    """Run ``request(i)`` on ``count`` threads released together; their results (or exceptions re-raised).

    Each thread has its own database connection, closed when it is done.
    """
    barrier = threading.Barrier(count)
    results: dict[int, Any] = {}

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = request(index)
        except BaseException as exc:  # reported to the test below
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,), name=f"racer-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert len(results) == count, f"{count - len(results)} requests did not finish"
    for value in results.values():
        if isinstance(value, BaseException):
            raise value
    return [results[i] for i in range(count)]
