"""The /mcp ASGI endpoint: admission (proxy, host, Origin, bearer token, rate, scope) in front of the SDK.

Everything protocol-shaped (JSON-RPC parsing, lifecycle, versions 2025-03-26 … 2026-07-28,
notifications) is the ``mcp`` SDK's ``StreamableHTTPSessionManager``. This module only decides
whether a request may reach it, in two steps:

1. ``admit``, before a byte of the body is read: the same Django middleware the rest of the site
   uses, the Origin, the DRF authentication class's checks, the per-token rate limit and the
   method. A request without a valid token gets its 401 challenge without the server reading (or
   waiting for) up to ``MAX_BODY`` of body. On PostgreSQL all of it runs on the event loop, the
   token looked up on asynchronous connections (``admit_on_loop``, ``mcpgate.asyncdb``); elsewhere
   in one worker-thread hop (``admit``).
2. ``Message.refusal``, on the body (no database): what a stateless server does not offer
   (batches) and a message that is not JSON-RPC at all, which the SDK would refuse with its
   validator's text; then the scopes the called tool needs.

A database that is away while a request is admitted or a tool runs is a 503 with ``Retry-After``
and a JSON-RPC error body, never an exception.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pydantic_core
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from mcp_types import jsonrpc_message_adapter
from oauth2_provider.www_authenticate import build_bearer_challenge
from pydantic import ValidationError
from rest_framework.exceptions import AuthenticationFailed

from audit import batch
from audit.models import AuditKind
from audit.services import audit_record
from gateway.link import Link
from gateway.runtime import hub
from mcpgate import asyncdb, errors, ratelimit
from mcpgate.asyncdb import AsyncDatabase
from mcpgate.errors import TRANSIENT_DATABASE_ERRORS, jsonrpc_refusal
from mcpgate.hosts import host_for_request
from mcpgate.middleware import HostMiddleware, TrustedProxyMiddleware
from mcpgate.observability import metrics, tracing
from mcpgate.threads import in_worker_thread
from oauth_ext.scopes import BASIC_SCOPE

from . import tokens
from .authentication import MCPBearerAuthentication
from .context import ToolContext
from .fastpath import FastPath
from .origins import origin_allowed
from .registry import registry
from .server import (
    CONTEXT_KEY,
    DATABASE_KEY,
    OUTCOME_KEY,
    Outcome,
    audit_tool_call,
    build_server,
    build_session_manager,
    describe_problem,
    log_database_unavailable,
)

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 4 * 1024 * 1024  # the SDK's own default limit
MCP_PATH = "/mcp"

# JSON-RPC 2.0 §5.1 error codes: -32600 Invalid Request, -32603 Internal error, and one from the
# range left to implementations (-32000 to -32099) for HTTP 429, which MCP does not use.
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
RATE_LIMITED = -32029

_NOT_JSON = object()


@dataclass
class Admission:
    context: ToolContext | None
    refusal: HttpResponse | None
    request: HttpRequest | None = None
    # A refusal to record in the audit trail (``audit_record``'s keywords): the first of a window.
    audit: dict[str, Any] | None = None


class _Gate:
    """The innermost "view" of the admission chain (after TrustedProxy and Host middleware): the Origin,
    and the bearer token presented, to be looked up (no database here)."""

    def __init__(self) -> None:
        self.authenticator = MCPBearerAuthentication()
        self.checksum: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not origin_allowed(request.META.get("HTTP_ORIGIN")):
            return jsonrpc_refusal(403, INVALID_REQUEST, "Origin not allowed")
        # The class is DRF's, but works on the plain HttpRequest too: no DRF body parsing here,
        # the body belongs to the SDK (a malformed one must get its -32700, not a DRF error).
        try:
            self.checksum = self.authenticator.presented(request)
        except AuthenticationFailed:
            self.checksum = None
        if self.checksum is None:
            return _unauthorized(self.authenticator, request)
        return HttpResponse(status=204)


def _presented(scope: Scope) -> tuple[_Gate, HttpRequest, HttpResponse]:
    """Admission up to the token lookup: proxy/host middleware as for Django views, then the gate."""
    gate = _Gate()
    request = ASGIRequest(scope, io.BytesIO(b""))
    response = TrustedProxyMiddleware(HostMiddleware(gate))(request)
    return gate, request, response


def _decided(gate: _Gate, request: HttpRequest, token: Any, counted: ratelimit.Verdict | None) -> Admission:
    """Admission after the token lookup (``token``: what it found, or None): the token's checks, the
    per-token rate limit and the method. No database work: the lookup counted the request on PostgreSQL
    (``counted``), else the rate limit counts in the cache."""
    try:
        user, token = gate.authenticator.verify(request, token)
    except AuthenticationFailed:
        return Admission(None, _unauthorized(gate.authenticator, request))
    context = ToolContext(
        user=user,
        client=token.application,
        scopes=frozenset(token.scope.split()),
        groups=frozenset(user.proxy_groups or ()),
        token_expires=token.expires,
        host=host_for_request(request),
        token_id=token.pk,
        client_ip=getattr(request, "mcpgate_client_ip", None),
    )
    limited = _rate_limited(request, context, counted)
    if limited is not None:
        return limited
    refusal = _refuse_method(request)
    if refusal is not None:
        return Admission(None, refusal)
    return Admission(context, None, request)


def _rate_limited(request: HttpRequest, context: ToolContext, counted: ratelimit.Verdict | None) -> Admission | None:
    """MCPGATE_RATE_LIMIT_MCP per access token: 429 with Retry-After (RFC 6585 §4).

    Counted before the body is read, only for a token that exists, so nobody can spend another's
    budget: on PostgreSQL by the token lookup itself (``counted``, ``tokens.load_and_count``), else in
    the cache once the token is known to be valid. The first refusal of a window is audited.
    """
    verdict = counted if counted is not None else ratelimit.hit(ratelimit.MCP, str(context.token_id), request)
    if verdict is None or not verdict.refused:
        return None
    detail = ratelimit.note_refusal(ratelimit.MCP)
    audit = None
    if verdict.first_refusal:
        audit = {
            "event": AuditKind.RATE_LIMITED,
            "user": context.user,
            "client": context.client,
            "host": context.host.name,
            "ip": context.client_ip,
            "detail": detail,
        }
    response = jsonrpc_refusal(429, RATE_LIMITED, ratelimit.refusal_message(ratelimit.MCP, verdict))
    response["Retry-After"] = str(verdict.retry_after)
    return Admission(None, response, audit=audit)


def _refuse_method(request: HttpRequest) -> HttpResponse | None:
    """GET opens the standalone SSE stream and DELETE ends a session (transports,
    "Listening for Messages from the Server" and "Session Management", 2025-03-26 to
    2025-11-25); a stateless server has neither, so both get 405, as every other method but
    POST, with ``Allow`` (RFC 9110 §15.5.6). 2026-07-28 says the same (H1, H7). Left to the
    SDK, a stateless GET opens a stream that never carries anything.
    """
    if request.method == "POST":
        return None
    response = jsonrpc_refusal(405, INVALID_REQUEST, "Method not allowed: POST one JSON-RPC message")
    response["Allow"] = "POST"
    return response


def _unauthorized(authenticator: MCPBearerAuthentication, request: HttpRequest) -> HttpResponse:
    """401 with the challenge (D3, R4); the body repeats the error in RFC 6750 shape."""
    error = dict(getattr(request, "oauth2_error", None) or {})
    body = {
        "error": error.get("error", "invalid_request"),
        "error_description": error.get("error_description", "A bearer token is required."),
    }
    return errors.refusal(
        MCP_PATH,
        status=401,
        error=body["error"],
        description=body["error_description"],
        headers={"WWW-Authenticate": authenticator.authenticate_header(request)},
    )


def admit(scope: Scope) -> Admission:
    """Admission in a worker thread (``in_worker_thread``), before the body is read: the token looked up
    on the thread's Django connection. The route on SQLite, and without the application's lifespan."""
    try:
        with tracing.span("mcp admission"), tracing.database_spans():
            gate, request, response = _presented(scope)
            if gate.checksum is None:
                return Admission(None, response)
            window = ratelimit.window(ratelimit.MCP, gate.checksum)
            token, calls = tokens.load_and_count(gate.checksum, window_end=window.end)
            admission = _decided(gate, request, token, _verdict(window, calls))
            if admission.audit is not None:
                audit_record(**admission.audit)
    except TRANSIENT_DATABASE_ERRORS as exc:
        log_database_unavailable(exc, "admitting a /mcp request")
        close_old_connections()  # drop this thread's broken connection; the next request reconnects
        return Admission(None, errors.unavailable(MCP_PATH))
    return admission


async def admit_on_loop(scope: Scope, database: AsyncDatabase) -> Admission:
    """``admit`` without the worker thread, on PostgreSQL: the same steps on the event loop, the token
    looked up on ``database``'s asynchronous connections (``mcpgate.asyncdb``).

    The lookup counts the request against the token's rate limit in the same statement (PostgreSQL:
    ``tokens.aload_and_count``), so the rest of admission is plain Python; a refusal's audit row is
    written in a worker thread (the ORM).
    """
    with tracing.span("mcp admission"):
        gate, request, response = _presented(scope)
        if gate.checksum is None:
            return Admission(None, response)
        window = ratelimit.window(ratelimit.MCP, gate.checksum)
        try:
            token, calls = await tokens.aload_and_count(gate.checksum, window_end=window.end, database=database)
        except TRANSIENT_DATABASE_ERRORS as exc:
            log_database_unavailable(exc, "admitting a /mcp request")
            return Admission(None, errors.unavailable(MCP_PATH))
        admission = _decided(gate, request, token, _verdict(window, calls))
        if admission.audit is not None:
            try:
                await in_worker_thread(audit_record)(**admission.audit)
            except TRANSIENT_DATABASE_ERRORS as exc:
                log_database_unavailable(exc, "auditing a rate-limited /mcp request")
                return Admission(None, errors.unavailable(MCP_PATH))
    return admission


def _verdict(window: ratelimit.Window, calls: int | None) -> ratelimit.Verdict | None:
    """The rate limit's verdict when the token lookup counted the request (``calls``), else None."""
    return ratelimit.counted(window, calls) if calls is not None else None


class RequestMessage:
    """The body of an admitted request, as far as admission needs to read it (no database)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._groups: frozenset[str] = frozenset()

    @cached_property
    def parsed(self) -> Any:
        """The decoded body (parsed as the SDK parses it), or _NOT_JSON (the SDK answers that: -32700)."""
        try:
            return pydantic_core.from_json(self.body)
        except ValueError:
            return _NOT_JSON

    @cached_property
    def called_tool(self) -> str | None:
        """The tool name of a tools/call request, if this is one."""
        message = self.parsed
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return None
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        return name if isinstance(name, str) else None

    def refusal(self) -> HttpResponse | None:
        """A batch, or a body that is JSON but not a JSON-RPC message: -32600 (JSON-RPC 2.0 §5.1).

        - A JSON array is a batch: removed in 2025-06-18 (H3) and not served by the SDK at any
          version, which answers it -32602 with pydantic's text.
        - Any other message is validated as the SDK validates it (the same type adapter), so that
          what it would refuse with "Validation error: <pydantic's report, input values and links
          included>" is refused here naming the offending member instead. A request whose id is
          not a string or an integer (MCP "Requests") is refused too: the SDK would take it for a
          notification and never answer.
        """
        message = self.parsed
        if message is _NOT_JSON:
            return None
        if isinstance(message, list):
            return jsonrpc_refusal(400, INVALID_REQUEST, "Batches are not supported: POST one JSON-RPC message")
        problem = jsonrpc_problem(message)
        if problem is None:
            return None
        identifier = message.get("id") if isinstance(message, dict) else None
        if isinstance(identifier, bool) or not isinstance(identifier, str | int):
            identifier = None
        return jsonrpc_refusal(400, INVALID_REQUEST, f"Invalid request: {problem}", id=identifier)

    @cached_property
    def upstream(self) -> Link | None:
        """The upstream a tools/call, prompts/get or resources/read goes to (gateway.runtime), if any."""
        message = self.parsed
        if not isinstance(message, dict) or not isinstance(message.get("params"), dict):
            return None
        params, method, groups = message["params"], message.get("method"), self._groups
        name = params.get("name")
        if method == "tools/call" and isinstance(name, str) and registry.get(name) is None:
            return hub.tool(name, groups)
        if method == "prompts/get" and isinstance(name, str):
            return hub.prompt(name, groups)
        uri = params.get("uri")
        if method == "resources/read" and isinstance(uri, str):
            return hub.resource(uri, groups)
        return None

    def missing_scopes(self, context: ToolContext) -> frozenset[str]:
        """A request for a tool (or an upstream's prompt or resource) needing scopes the token lacks:
        the client should step up."""
        self._groups = context.groups
        tool = registry.get(self.called_tool) if self.called_tool else None
        if tool is not None:
            return tool.missing_scopes(context.scopes) if tool.visible_to(context) else frozenset()
        link = self.upstream
        return link.config.scopes - context.scopes if link is not None else frozenset()


def jsonrpc_problem(message: Any) -> str | None:
    """What keeps ``message`` from being a JSON-RPC 2.0 message, in words; None when it is one."""
    if not isinstance(message, dict):
        return "the body must be a JSON-RPC object"
    if "method" in message and "id" in message:
        identifier = message["id"]
        if isinstance(identifier, bool) or not isinstance(identifier, str | int):
            return "id must be a string or an integer"
    try:
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError as exc:
        # The adapter tries each kind of message; report against the one this looks like.
        if "method" in message:
            kind = "JSONRPCRequest" if "id" in message else "JSONRPCNotification"
        elif "result" in message:
            kind = "JSONRPCResponse"
        elif "error" in message:
            kind = "JSONRPCError"
        else:
            kind = "JSONRPCRequest"
        errors = [e for e in exc.errors() if e["loc"][:1] == (kind,)] or exc.errors()
        return describe_problem(errors[0], skip=1, subject="the message")
    return None


def insufficient_scope(admission: Admission, message: RequestMessage, missing: frozenset[str]) -> HttpResponse:
    """RFC 6750 §3.1 insufficient_scope (403) naming every scope to ask for (checklist R4).

    A refused tools/call is audited like a served one (outcome ``insufficient_scope``). Runs in
    a worker thread (the audit row).
    """
    context, request = admission.context, admission.request
    assert context is not None and request is not None
    if message.called_tool:
        try:
            audit_tool_call(context, message.called_tool, outcome="insufficient_scope", duration_ms=0.0, arguments=None)
        except TRANSIENT_DATABASE_ERRORS as exc:
            log_database_unavailable(exc, "auditing a refused tools/call")
            close_old_connections()
            return errors.unavailable(MCP_PATH)
    wanted = " ".join(sorted(context.scopes | missing))
    needs = "This tool needs" if message.called_tool else "This server needs"
    description = f"{needs} the scope(s): {' '.join(sorted(missing))}."
    challenge = build_bearer_challenge(
        request,
        oauth2_error={"error": "insufficient_scope", "scope": wanted, "error_description": description},
        resource_metadata_url=context.host.resource_metadata_url,
    )
    return errors.refusal(
        MCP_PATH,
        status=403,
        error="insufficient_scope",
        description=description,
        headers={"WWW-Authenticate": challenge},
    )


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it exceeds MAX_BODY."""
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(chunks)
        chunks.extend(message.get("body", b""))
        if len(chunks) > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return bytes(chunks)


async def send_django_response(response: HttpResponse, send: Send) -> None:
    headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


class MCPEndpoint:
    """ASGI app for /mcp. Needs its ``lifespan()`` running (the SDK's task group)."""

    def __init__(self, *, fast_path: bool = True) -> None:
        self.server = build_server()
        self.manager = build_session_manager(self.server)
        # Off only to compare the two paths (tests/mcp_bridge/test_fastpath.py).
        self.fast_path = FastPath(self.server, self.manager.security_settings) if fast_path else None
        # PostgreSQL's asynchronous connections for admission, while the lifespan runs (mcpgate.asyncdb).
        self.database: AsyncDatabase | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """The SDK's task group, the server's lifespan state for the fast path, this worker's upstream
        connections (gateway.runtime), on PostgreSQL its asynchronous connections (mcpgate.asyncdb), and
        the batches of its tool-call audit rows (audit.batch: entered first, so left last, after the rest
        has stopped, with every row written)."""
        async with (
            batch.batching(),
            self.manager.run(),
            self.server.lifespan(self.server) as state,
            hub.running(),
            asyncdb.serving(tokens.token_database()) as database,
        ):
            if self.fast_path is not None:
                self.fast_path.bind(state)
            self.database = database
            try:
                yield
            finally:
                self.database = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, observed: its status feeds the metrics, and with tracing on it is a span.

        The span is parented by the ``traceparent`` header (W3C Trace Context §3.2); the SDK's
        span of the JSON-RPC message (``mcp.server._otel``) nests under it, unless the message's
        ``params._meta`` names a parent of its own (2026-07-28), which the SDK then follows.
        """
        status = 500  # if nothing was sent at all

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if tracing.enabled():
            attributes = {"http.request.method": scope.get("method", ""), "url.path": MCP_PATH}
            parent = tracing.context_from_headers(scope.get("headers", ()))
            with tracing.server_span(f"{scope.get('method', 'HTTP')} {MCP_PATH}", parent, attributes) as span:
                await self._serve(scope, receive, observed_send)
                tracing.set_http_status(span, status)
        else:
            await self._serve(scope, receive, observed_send)
        metrics.observe_mcp_status(status)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.database is not None:
            admission = await admit_on_loop(scope, self.database)
        else:
            admission = await in_worker_thread(admit)(scope)
        if admission.refusal is not None:
            await send_django_response(admission.refusal, send)
            return
        context = admission.context
        assert context is not None
        body = await _read_body(receive)
        if body is None:
            await send_django_response(jsonrpc_refusal(413, INVALID_REQUEST, "Request body too large"), send)
            return
        message = RequestMessage(body)
        refusal = message.refusal()
        if refusal is None:
            missing = message.missing_scopes(context)
            if not missing and BASIC_SCOPE not in context.scopes:
                # The basic scope is what admits a client to /mcp at all (PRM scopes_supported).
                missing = frozenset({BASIC_SCOPE})
            if missing:
                refusal = await in_worker_thread(insufficient_scope)(admission, message, missing)
        if refusal is not None:
            await send_django_response(refusal, send)
            return
        # The SDK checks Host again (DNS rebinding protection): give it the resolved host, which
        # may have come from a trusted proxy's X-Forwarded-Host.
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        headers.append((b"host", context.host.netloc.encode("latin-1")))
        outcome = Outcome()
        inner_scope = {
            **scope,
            "headers": headers,
            CONTEXT_KEY: context,
            OUTCOME_KEY: outcome,
            DATABASE_KEY: self.database,
        }
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_with_outcome(message: Message) -> None:
            # A tool call that met a database outage: the SDK's JSON-RPC error body (with the
            # request's id) goes out as a 503 with Retry-After instead of its 200/500.
            if message["type"] == "http.response.start" and outcome.database_unavailable:
                retry_after = (b"retry-after", str(errors.RETRY_AFTER_SECONDS).encode())
                message = {**message, "status": 503, "headers": [*message.get("headers", []), retry_after]}
            await send(message)

        if self.fast_path is not None and await self.fast_path.answer(inner_scope, body, send_with_outcome):
            return
        await self.manager.handle_request(inner_scope, replay, send_with_outcome)
