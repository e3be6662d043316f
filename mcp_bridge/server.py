"""The MCP server itself: the ``mcp`` SDK's low-level ``Server`` answering from the tool registry."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import mcp_types as types
from asgiref.sync import sync_to_async
from mcp.server.lowlevel import Server
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from oauth_ext.services import audit_record

from .context import ToolContext
from .registry import Tool, registry

logger = logging.getLogger(__name__)

SERVER_NAME = "mcpgate"
CONTEXT_KEY = "mcpgate.tool_context"


def _tool_context(ctx: Any) -> ToolContext:
    """The caller, put on the ASGI scope by the /mcp endpoint after authentication."""
    request = ctx.request
    tool_context = request.scope.get(CONTEXT_KEY) if request is not None else None
    if not isinstance(tool_context, ToolContext):  # unreachable behind MCPEndpoint; fail closed
        raise MCPError(types.INVALID_REQUEST, "Not authenticated")
    return tool_context


def _describe(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
    )


async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    """tools/list: every tool the person may use (groups); see Tool.visible_to for scopes."""
    caller = _tool_context(ctx)
    return types.ListToolsResult(tools=[_describe(t) for t in registry.all() if t.visible_to(caller)])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    """tools/call: an unknown tool is a JSON-RPC error; the tool's own failure is ``isError`` (L4)."""
    caller = _tool_context(ctx)
    tool = registry.get(params.name)
    if tool is None or not tool.visible_to(caller):
        await sync_to_async(audit_tool_call, thread_sensitive=False)(
            caller, params.name, outcome="unknown_tool", duration_ms=0.0, arguments=None
        )
        raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
    # The tool's own work and the audit row share one worker thread (Django ORM is sync).
    return await sync_to_async(run_tool, thread_sensitive=False)(tool, caller, dict(params.arguments or {}))


def arguments_digest(arguments: dict[str, Any]) -> str:
    """A stable hash of the arguments: lets the audit tell calls apart without storing their values."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_tool(tool: Tool, caller: ToolContext, arguments: dict[str, Any]) -> types.CallToolResult:
    started = time.perf_counter()
    try:
        kwargs = tool.meta.validate_arguments(arguments)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        result = _error_result(f"Invalid arguments: {problems}")
        outcome = "invalid_arguments"
    else:
        try:
            value = tool.fn(caller, **kwargs)
            converted = tool.meta.convert_result(value)
            assert isinstance(converted, types.CallToolResult)
            result = converted
            outcome = "error" if result.is_error else "ok"
        except ToolError as exc:
            # A ToolError's message is written for the person: pass it on.
            result = _error_result(str(exc))
            outcome = "error"
        except Exception:
            logger.exception("tool %s failed", tool.name)
            result = _error_result(f"The tool {tool.name} failed; the error has been logged.")
            outcome = "error"
    audit_tool_call(
        caller,
        tool.name,
        outcome=outcome,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        arguments=arguments,
    )
    return result


def audit_tool_call(
    caller: ToolContext, tool: str, *, outcome: str, duration_ms: float, arguments: dict[str, Any] | None
) -> None:
    """The audit row of one tools/call (the one write on the hot path): never the argument values."""
    detail: dict[str, Any] = {"tool": tool[:128], "outcome": outcome, "duration_ms": duration_ms}
    if arguments is not None:
        detail["arguments_sha256"] = arguments_digest(arguments)
    audit_record(
        event="tool_call",
        user=caller.user,
        client=caller.client,
        host=caller.host.name,
        ip=caller.client_ip,
        detail=detail,
    )


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def build_server() -> Server[Any]:
    from django.conf import settings

    return Server(
        SERVER_NAME,
        version=settings.MCPGATE_VERSION,
        instructions="Tools of your organisation, called as you.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def build_session_manager(server: Server[Any]) -> StreamableHTTPSessionManager:
    """Stateless (any worker or replica can serve any request, checklist H6), JSON responses.

    The endpoint has already checked Host and Origin against the configured hosts; the SDK
    checks them again (DNS rebinding protection) with the same lists.
    """
    from oauth_ext.hosts import configured_hosts

    from .origins import allowed_origins

    hosts = configured_hosts()
    return StreamableHTTPSessionManager(
        app=server,
        stateless=True,
        json_response=True,
        security_settings=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[h.netloc for h in hosts],
            allowed_origins=sorted(allowed_origins()),
        ),
    )
