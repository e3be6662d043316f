"""A lean single exchange for a handshake-era /mcp request: the SDK's own kernel without its per-request server run.

For a stateless POST, the SDK's Streamable HTTP transport (``mcp.server.streamable_http``, JSON-response
mode) starts a transport, a JSON-RPC dispatcher and a server task for every request, passes the one
message through memory streams, and has ``ServerRunner.on_request`` answer it once. Most of a call's
time on the event loop went there (perf-notes, docs/benchmarks-gateway.md). Here the same message is
answered by the SDK's single-exchange driver, ``mcp.server.runner.serve_one``, with what the transport
would have given it:

- the same born-ready ``Connection`` (``Connection.from_envelope`` at the header's version, or the
  spec's default when there is none, as ``StreamableHTTPSessionManager`` builds it);
- the same request metadata (``ServerMessageMetadata`` carrying the Starlette request, no back-channel:
  a JSON body carries only the response, so notifications a handler sends are dropped, as there);
- the same mapping of a handler's exception to the wire (``handler_exception_to_error_data``, else
  code 0 with the exception's text, logged, as ``JSONRPCDispatcher`` does);
- the same response: ``JSONRPCResponse``/``JSONRPCError`` dumped ``by_alias, exclude_unset`` with
  status 200 and ``Content-Type: application/json``.

Only what the transport would accept as it is comes here: POST, one JSON-RPC request (not a
notification or a response, not ``initialize``), an ``MCP-Protocol-Version`` of the 2025 era or none,
an ``Accept`` with application/json, a JSON ``Content-Type``, a Host and Origin the SDK's DNS rebinding
protection accepts. Everything else, 2026-07-28 requests included, goes to the SDK (``answer`` returns
False). tests/mcp_bridge/test_fastpath.py runs a corpus through both and compares status, headers and
bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pydantic_core
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.runner import serve_one
from mcp.server.streamable_http import CONTENT_TYPE_JSON, check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

# The SDK's dispatcher logs a handler's crash under its own name; so does this path.
dispatcher_logger = logging.getLogger("mcp.shared.jsonrpc_dispatcher")

PROTOCOL_VERSION_HEADER = b"mcp-protocol-version"
TRANSPORT = TransportContext(kind="streamable-http", can_send_request=False)

Scope = MutableMapping[str, Any]


@dataclass
class _Exchange:
    """The ``DispatchContext`` of one request answered in one JSON body: no back-channel, nowhere for
    notifications or progress to go (the transport drops them in JSON-response mode too)."""

    request_id: RequestId
    message_metadata: ServerMessageMetadata
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)

    @property
    def transport(self) -> TransportContext:
        return TRANSPORT

    @property
    def can_send_request(self) -> bool:
        return False

    async def send_raw_request(self, method: str, params: Mapping[str, Any] | None, opts: Any = None) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: Any = None) -> None:
        return None

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None


class FastPath:
    """Answers what it can (``answer``); the SDK's session manager answers the rest."""

    def __init__(self, server: Server[Any], security: TransportSecuritySettings | None) -> None:
        self.server = server
        self.security = TransportSecurityMiddleware(security)
        self.lifespan_state: Any = None

    def bind(self, lifespan_state: Any) -> None:
        """The server's lifespan state, as the session manager hands it to every connection."""
        self.lifespan_state = lifespan_state

    async def answer(self, scope: Scope, body: bytes, send: Any) -> bool:
        """Answer the request if it is one this path takes; False (nothing sent) to leave it to the SDK."""
        version = next((v.decode("latin-1") for k, v in scope["headers"] if k == PROTOCOL_VERSION_HEADER), None)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, receive)
        if await self.security.validate_request(request, is_post=True) is not None:
            return False
        if not check_accept_headers(request)[0] or not _json_content_type(request):
            return False
        try:
            # Parsed as the transport parses it: the JSON first, then the message.
            message = jsonrpc_message_adapter.validate_python(pydantic_core.from_json(body), by_name=False)
        except (ValidationError, ValueError):
            return False
        if not isinstance(message, JSONRPCRequest) or message.method == "initialize":
            return False
        reply = await self._reply(request, message, version or DEFAULT_NEGOTIATED_VERSION)
        response = Response(
            reply.model_dump_json(by_alias=True, exclude_unset=True),
            status_code=200,
            headers={"Content-Type": CONTENT_TYPE_JSON},
        )
        await response(scope, receive, send)
        return True

    async def _reply(self, request: Request, message: JSONRPCRequest, version: str) -> JSONRPCResponse | JSONRPCError:
        """``serve_one`` and the dispatcher's exception-to-wire mapping (``JSONRPCDispatcher._handle_request``)."""
        exchange = _Exchange(
            request_id=message.id,
            message_metadata=ServerMessageMetadata(request_context=request, can_send_request=False),
        )
        try:
            result = await serve_one(
                self.server,
                exchange,
                message.method,
                message.params,
                connection=Connection.from_envelope(version, None, None),
                lifespan_state=self.lifespan_state,
            )
        except Exception as exc:
            error = handler_exception_to_error_data(exc)
            if error is None:
                dispatcher_logger.exception("handler for %r raised", message.method)
                error = ErrorData(code=0, message=str(exc))
            return JSONRPCError(jsonrpc="2.0", id=message.id, error=error)
        return JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result)


def _json_content_type(request: Request) -> bool:
    """The transport's own test (``StreamableHTTPServerTransport._check_content_type``)."""
    content_type = request.headers.get("content-type", "")
    return any(part.strip() == CONTENT_TYPE_JSON for part in content_type.split(";")[0].split(","))
