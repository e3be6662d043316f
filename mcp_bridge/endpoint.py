"""The /mcp ASGI endpoint: admission (proxy, host, Origin, bearer token, scope) in front of the SDK.

Everything protocol-shaped (JSON-RPC parsing, lifecycle, versions 2025-03-26 … 2026-07-28,
notifications) is the ``mcp`` SDK's ``StreamableHTTPSessionManager``. This module only decides
whether a request may reach it, in one worker-thread hop that runs the same Django middleware
the rest of the site uses and the DRF authentication class; what a stateless server does not
offer (GET, DELETE, batches) it refuses itself (see ``_Gate._refuse_method_or_batch``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider.www_authenticate import build_bearer_challenge
from rest_framework.exceptions import AuthenticationFailed

from oauth_ext.hosts import host_for_request
from oauth_ext.middleware import HostMiddleware, TrustedProxyMiddleware
from oauth_ext.scopes import BASIC_SCOPE

from .authentication import MCPBearerAuthentication
from .context import ToolContext
from .origins import origin_allowed
from .registry import registry
from .server import CONTEXT_KEY, audit_tool_call, build_server, build_session_manager

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 4 * 1024 * 1024  # the SDK's own default limit


def jsonrpc_error(status: int, code: int, message: str) -> JsonResponse:
    return JsonResponse({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}, status=status)


@dataclass
class Admission:
    context: ToolContext | None
    refusal: HttpResponse | None


class _Gate:
    """The innermost "view" of the admission chain (after TrustedProxy and Host middleware)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.context: ToolContext | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not origin_allowed(request.META.get("HTTP_ORIGIN")):
            return jsonrpc_error(403, -32600, "Origin not allowed")
        authenticator = MCPBearerAuthentication()
        # The class is DRF's, but works on the plain HttpRequest too: no DRF body parsing here,
        # the body belongs to the SDK (a malformed one must get its -32700, not a DRF error).
        try:
            result = authenticator.authenticate(request)
        except AuthenticationFailed:
            result = None
        if result is None:
            return self._unauthorized(authenticator, request)
        user, token = result
        host = host_for_request(request)
        context = ToolContext(
            user=user,
            client=token.application,
            scopes=frozenset(token.scope.split()),
            groups=frozenset(user.proxy_groups or ()),
            token_expires=token.expires,
            host=host,
            token_id=token.pk,
            client_ip=getattr(request, "mcpgate_client_ip", None),
        )
        refusal = self._refuse_method_or_batch(request)
        if refusal is not None:
            return refusal
        missing = self._missing_scopes(context)
        if missing:
            return self._insufficient_scope(request, context, missing)
        if BASIC_SCOPE not in context.scopes:
            # The basic scope is what admits a client to /mcp at all (PRM scopes_supported).
            return self._insufficient_scope(request, context, frozenset({BASIC_SCOPE}))
        self.context = context
        return HttpResponse(status=204)

    def _refuse_method_or_batch(self, request: HttpRequest) -> HttpResponse | None:
        """What this stateless server does not offer, answered before the SDK sees it.

        - GET opens the standalone SSE stream and DELETE ends a session (transports,
          "Listening for Messages from the Server" and "Session Management", 2025-03-26 to
          2025-11-25); a stateless server has neither, so both get 405, as every other
          method but POST, with ``Allow`` (RFC 9110 §15.5.6). 2026-07-28 says the same (H1, H7).
          Left to the SDK, a stateless GET opens a stream that never carries anything.
        - A JSON array is a batch: removed in 2025-06-18 (H3) and not served by the SDK at
          any version; it answers -32602 with pydantic's text, this answers -32600 (JSON-RPC 2.0
          §5.1 "Invalid Request") without internals.
        """
        if request.method != "POST":
            response = jsonrpc_error(405, -32600, "Method not allowed: POST one JSON-RPC message")
            response["Allow"] = "POST"
            return response
        if isinstance(self.message, list):
            return jsonrpc_error(400, -32600, "Batches are not supported: POST one JSON-RPC message")
        return None

    @staticmethod
    def _unauthorized(authenticator: MCPBearerAuthentication, request: HttpRequest) -> HttpResponse:
        """401 with the challenge (D3, R4); the body repeats the error in RFC 6750 shape."""
        error = dict(getattr(request, "oauth2_error", None) or {})
        body = {
            "error": error.get("error", "invalid_request"),
            "error_description": error.get("error_description", "A bearer token is required."),
        }
        response = JsonResponse(body, status=401)
        response["WWW-Authenticate"] = authenticator.authenticate_header(request)
        response["Cache-Control"] = "no-store"
        return response

    @cached_property
    def message(self) -> Any:
        """The decoded body, or None when it is not JSON (the SDK answers that: -32700)."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    @cached_property
    def called_tool(self) -> str | None:
        """The tool name of a tools/call request, if this is one."""
        message = self.message
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return None
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        return name if isinstance(name, str) else None

    def _missing_scopes(self, context: ToolContext) -> frozenset[str]:
        """A tools/call for a tool needing scopes the token lacks: the client should step up."""
        tool = registry.get(self.called_tool) if self.called_tool else None
        if tool is None or not tool.visible_to(context):
            return frozenset()
        return tool.missing_scopes(context.scopes)

    def _insufficient_scope(self, request: HttpRequest, context: ToolContext, missing: frozenset[str]) -> HttpResponse:
        """RFC 6750 §3.1 insufficient_scope (403) naming every scope to ask for (checklist R4).

        A refused tools/call is audited like a served one (outcome ``insufficient_scope``).
        """
        if self.called_tool:
            audit_tool_call(context, self.called_tool, outcome="insufficient_scope", duration_ms=0.0, arguments=None)
        wanted = " ".join(sorted(context.scopes | missing))
        needs = "This tool needs" if self.called_tool else "This server needs"
        description = f"{needs} the scope(s): {' '.join(sorted(missing))}."
        response = JsonResponse({"error": "insufficient_scope", "error_description": description}, status=403)
        response["Cache-Control"] = "no-store"
        response["WWW-Authenticate"] = build_bearer_challenge(
            request,
            oauth2_error={"error": "insufficient_scope", "scope": wanted, "error_description": description},
            resource_metadata_url=context.host.resource_metadata_url,
        )
        return response


def admit(scope: Scope, body: bytes) -> Admission:
    """Run in a worker thread: the same proxy/host middleware as Django views, then the gate."""
    close_old_connections()  # as Django does per request: CONN_MAX_AGE, broken connections
    request = ASGIRequest(scope, io.BytesIO(b""))
    gate = _Gate(body)
    response = TrustedProxyMiddleware(HostMiddleware(gate))(request)
    if gate.context is None:
        return Admission(None, response)
    return Admission(gate.context, None)


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

    def __init__(self) -> None:
        self.server = build_server()
        self.manager = build_session_manager(self.server)

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            await send_django_response(jsonrpc_error(413, -32600, "Request body too large"), send)
            return
        admission = await sync_to_async(admit, thread_sensitive=False)(scope, body)
        if admission.refusal is not None:
            await send_django_response(admission.refusal, send)
            return
        assert admission.context is not None
        # The SDK checks Host again (DNS rebinding protection): give it the resolved host, which
        # may have come from a trusted proxy's X-Forwarded-Host.
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        headers.append((b"host", admission.context.host.netloc.encode("latin-1")))
        inner_scope = {**scope, "headers": headers, CONTEXT_KEY: admission.context}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.manager.handle_request(inner_scope, replay, send)
