"""An unauthenticated /mcp request must not make the server read (or wait for) its body.

/mcp accepts bodies up to 4 MiB. Before this was fixed, the body was read in full before the bearer
token was looked at, so anyone could make a worker buffer 4 MiB, or hold a request open by sending
its body slowly, without a token. Now the token is checked first: no token (or a bad one) gets
its 401 challenge at once, and the body is never read. An authenticated oversized body still gets
its 413.

The ASGI application is driven directly, so the test sees exactly how much of the body the server
asked for (``receive`` calls); the last test does the same over TCP against gunicorn.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from audit.models import AuditEvent
from mcp_bridge.endpoint import MAX_BODY
from tests.e2e import conftest as e2e
from tests.e2e.server import GunicornServer
from tests.mcp_bridge import conftest as mcp
from tests.mcp_bridge.conftest import PEER

# The fixtures this module borrows: the in-process ASGI site and Alice's token (tests/mcp_bridge),
# a module-scoped gunicorn on the test database (tests/e2e).
site, alice, alice_token, app_client, make_token, anyio_backend = (
    mcp.site,
    mcp.alice,
    mcp.alice_token,
    mcp.app_client,
    mcp.make_token,
    mcp.anyio_backend,
)
gunicorn_env, gunicorn_server = e2e.gunicorn_env, e2e.gunicorn_server

CHUNK = 64 * 1024
INTERNAL_PRM = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"
BEARER_REQUIRED = {"error": "invalid_request", "error_description": "A bearer token is required."}


def mcp_scope(authorization: str | None) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"accept", b"application/json, text/event-stream"),
        (b"content-type", b"application/json"),
        (b"content-length", str(8 * MAX_BODY).encode()),
        (b"mcp-protocol-version", b"2025-06-18"),
    ]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": PEER,
        "server": ("127.0.0.1", 8000),
    }


class Upload:
    """The client side of a large upload: counts what the server asks for, optionally never finishing."""

    def __init__(self, *, chunks: int, stall: bool = False) -> None:
        self.chunks = chunks
        self.stall = stall
        self.received = 0
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.received >= self.chunks:
            if self.stall:
                await anyio.sleep_forever()
            return {"type": "http.disconnect"}
        self.received += 1
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": self.received < self.chunks}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


async def post(app: Any, authorization: str | None, upload: Upload) -> Upload:
    with anyio.fail_after(10):
        await app(mcp_scope(authorization), upload.receive, upload.send)
    return upload


@pytest.mark.anyio
@pytest.mark.parametrize("authorization", [None, "Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer not-a-token-we-issued"])
async def test_an_oversized_body_without_a_valid_token_gets_the_401_unread(site, alice, authorization) -> None:
    upload = await post(site, authorization, Upload(chunks=8 * MAX_BODY // CHUNK))

    assert upload.status == 401
    assert upload.headers["www-authenticate"].startswith("Bearer ")
    assert upload.headers["www-authenticate"].endswith(f'scope="mcp",resource_metadata="{INTERNAL_PRM}"')
    assert upload.headers["cache-control"] == "no-store"
    if authorization is None or not authorization.startswith("Bearer "):
        assert upload.body == BEARER_REQUIRED
    else:
        assert upload.body == {"error": "invalid_token", "error_description": "The access token is invalid."}
    assert upload.received == 0, f"the server read {upload.received} chunk(s) of an unauthenticated body"


@pytest.mark.anyio
async def test_a_body_that_never_arrives_does_not_hold_the_401(site, alice) -> None:
    upload = await post(site, None, Upload(chunks=1, stall=True))

    assert upload.status == 401
    assert upload.body == BEARER_REQUIRED
    assert upload.received == 0


@pytest.mark.anyio
async def test_an_oversized_body_with_a_valid_token_is_still_413(site, alice_token) -> None:
    upload = await post(site, f"Bearer {alice_token}", Upload(chunks=8 * MAX_BODY // CHUNK))

    assert upload.status == 413
    assert upload.body == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Request body too large"}}
    # It stopped reading once the limit was passed.
    assert upload.received == MAX_BODY // CHUNK + 1
    assert not await anyio.to_thread.run_sync(lambda: AuditEvent.objects.exists())


# -- Over TCP, against gunicorn ------------------------------------------------------------------


@pytest.fixture
def raw_connection(gunicorn_server: GunicornServer) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=10) as connection:
        yield connection


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_over_tcp_the_401_comes_before_the_body_is_sent(gunicorn_server: GunicornServer, raw_connection) -> None:
    """The client announces 32 MiB, sends 1 KiB and waits: the challenge comes at once."""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gunicorn_server.port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {8 * MAX_BODY}\r\n\r\n"
    )
    started = time.monotonic()
    raw_connection.sendall(head.encode() + b" " * 1024)

    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = raw_connection.recv(65536)
        assert chunk, "the server closed the connection without answering"
        answer += chunk

    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"\r\nwww-authenticate: bearer " in answer.lower()
    assert time.monotonic() - started < 5
