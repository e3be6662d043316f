"""Every credential the tests' HTTP clients send or receive, so the logs can be checked for them."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2

from tests.e2e.server import MIN_SECRET_LENGTH, SECRET_KEYS

SEEN: set[str] = set()


def remember(*values: object) -> None:
    for value in values:
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            SEEN.add(value)


def _pairs(pairs: list[tuple[str, str]]) -> None:
    remember(*(value for key, value in pairs if key in SECRET_KEYS))


def on_request(request: httpx2.Request) -> None:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        with contextlib.suppress(httpx2.RequestNotRead):
            _pairs(parse_qsl(request.content.decode()))
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        remember(credentials)


def on_response(response: httpx2.Response) -> None:
    response.read()
    scan(response)


async def on_async_request(request: httpx2.Request) -> None:
    on_request(request)


async def on_async_response(response: httpx2.Response) -> None:
    await response.aread()
    scan(response)


def scan(response: httpx2.Response) -> None:
    if response.headers.get("content-type", "").startswith("application/json"):
        with contextlib.suppress(ValueError):
            body = response.json()
            if isinstance(body, dict):
                remember(*(value for key, value in body.items() if key in SECRET_KEYS))
    location = response.headers.get("location", "")
    # The provider's code on its way to oauth2-proxy's callback is oauth2-proxy's business (its
    # request log keeps it; it is single-use and redeemed with the proxy's secret): not mcpgate's.
    if location and "/oauth2/callback" not in location:
        _pairs(parse_qsl(urlsplit(location).query))


def hooks() -> dict[str, Any]:
    return {"request": [on_request], "response": [on_response]}


def async_hooks() -> dict[str, Any]:
    return {"request": [on_async_request], "response": [on_async_response]}


def leaked(text: str) -> list[str]:
    """Credentials seen by the tests that appear in ``text`` (abbreviated, for a message)."""
    return sorted(value[:10] + "…" for value in SEEN if value in text)
