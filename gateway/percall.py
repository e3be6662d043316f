"""Headers for one upstream request: what a call made on behalf of one person adds to a session shared by all.

Each worker keeps one session per upstream, shared by every caller (gateway.runtime); the headers
the operator configured are the session's HTTP client's. What differs per call, a credential or an
identity assertion of the person the call is made for (issue 12), cannot go there. The ``mcp``
SDK's Streamable HTTP transport sends, with each message, the headers in its
``ClientMessageMetadata.headers`` (``mcp.client.streamable_http``: ``ctx.metadata.headers``); a
``Transport`` (``mcp.client._transport``: an async context manager yielding the read and write
streams) is the SDK's public seam for what is written. ``with_call_headers`` wraps one: a request
written while ``call_headers`` is active carries those headers too. The SDK writes a request from
the task that awaits it (``JSONRPCDispatcher.send_raw_request``), so the headers set by one
caller's task reach that caller's request and no other one: tests/gateway/test_percall.py sends
concurrent calls with different headers through one session.

Streamable HTTP only: the legacy SSE transport posts with the session's headers alone.

``Refusals`` is the other half for a per-person credential (gateway.connections): the SDK turns an
HTTP 401 or 403 without a JSON-RPC body into the same stand-in error as a lost session ("Server
returned an error response", which gateway.link answers by reopening the session shared by
everyone). One person's refused token must not do that, so the upstream's refusal of a request
becomes a JSON-RPC error of its own (``CREDENTIAL_REFUSED``, ``CREDENTIAL_FORBIDDEN``) that reaches
the one caller it is for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import httpx2
from mcp.client._transport import Transport, TransportStreams
from mcp.shared._stream_protocols import WriteStream
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest

# JSON-RPC 2.0 §5.1 leaves -32000 to -32099 to the implementation; the SDK takes -32000 to -32019 and
# mcpgate's /mcp -32029 (mcpgate.errors). Never sent to an MCP client: gateway.link turns them into
# ``UpstreamFailed``.
CREDENTIAL_REFUSED = -32061  # HTTP 401 (RFC 9110 §15.5.2): the credential is not (any longer) valid
CREDENTIAL_FORBIDDEN = -32063  # HTTP 403 (RFC 9110 §15.5.4): valid, but not allowed this

_headers: ContextVar[Mapping[str, str] | None] = ContextVar("mcpgate_upstream_call_headers", default=None)


@contextlib.contextmanager
def call_headers(headers: Mapping[str, str]) -> Iterator[None]:
    """The requests this task writes within the block carry ``headers`` (over the session's own)."""
    token = _headers.set(dict(headers))
    try:
        yield
    finally:
        _headers.reset(token)


class _StampingWriteStream:
    """The transport's write stream, adding the active ``call_headers`` to each request's metadata."""

    def __init__(self, inner: WriteStream[SessionMessage]) -> None:
        self._inner = inner

    async def send(self, item: SessionMessage, /) -> None:
        headers = _headers.get()
        # Notifications too: ``notifications/initialized`` follows a handshake made with a credential.
        if headers and isinstance(item.message, JSONRPCRequest | JSONRPCNotification):
            metadata = item.metadata
            if metadata is None:
                metadata = ClientMessageMetadata(headers=dict(headers))
            elif isinstance(metadata, ClientMessageMetadata):
                # The SDK's own per-message headers (MCP-Protocol-Version, Mcp-Method, Mcp-Name) win.
                metadata = dataclasses.replace(metadata, headers={**headers, **(metadata.headers or {})})
            item = SessionMessage(message=item.message, metadata=metadata)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _StampingWriteStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc_val, exc_tb)


@contextlib.asynccontextmanager
async def _stamping(transport: Transport) -> AsyncIterator[TransportStreams]:
    async with transport as (read_stream, write_stream):
        yield read_stream, _StampingWriteStream(write_stream)


def with_call_headers(transport: Transport) -> Any:
    """``transport``, its requests carrying the ``call_headers`` active where each is sent."""
    return _stamping(transport)


class Refusals(httpx2.AsyncBaseTransport):
    """``inner``, with an HTTP 401 or 403 to a JSON-RPC request answered as a JSON-RPC error for that request."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code not in (401, 403) or request.method != "POST":
            return response
        try:
            request_id = json.loads(request.content)["id"]
        except (ValueError, TypeError, KeyError, httpx2.RequestNotRead):
            return response  # a notification, or not JSON-RPC: the SDK ignores refusals of those
        await response.aclose()
        refused = response.status_code == 401
        error = {
            "code": CREDENTIAL_REFUSED if refused else CREDENTIAL_FORBIDDEN,
            "message": f"HTTP {response.status_code}",
        }
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
        return httpx2.Response(
            response.status_code, headers={"content-type": "application/json"}, content=body, request=request
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
