"""The MCP server itself: the ``mcp`` SDK's low-level ``Server`` answering from the tool registry."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mcp_types as types
from django.conf import settings
from django.db import close_old_connections
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry import trace
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from audit.batch import ensure_room
from audit.models import AuditKind
from audit.services import audit_record, audit_record_on_loop
from gateway.assertions import AssertionUnavailable, identity_assertion
from gateway.connections import (
    ConnectionEnded,
    CredentialUnavailable,
    Held,
    NotConnected,
    connect_path,
    connection_credential,
    connection_refused,
    connection_renewed_after_refusal,
)
from gateway.link import Failure, Link, UpstreamFailed
from gateway.models import Credential
from gateway.percall import call_headers
from gateway.runtime import hub
from mcpgate.asyncdb import AsyncDatabase
from mcpgate.errors import MCP_UNAVAILABLE_MESSAGE, TRANSIENT_DATABASE_ERRORS
from mcpgate.hosts import configured_hosts
from mcpgate.observability import tracing
from mcpgate.threads import in_worker_thread

from .context import ToolContext
from .origins import allowed_origins
from .registry import Tool, registry

logger = logging.getLogger(__name__)
T = TypeVar("T")

SERVER_NAME = "mcpgate"
RESOURCE_NOT_FOUND = -32002  # MCP resources, "Error Handling"
CONTEXT_KEY = "mcpgate.tool_context"
OUTCOME_KEY = "mcpgate.outcome"
DATABASE_KEY = "mcpgate.database"  # the endpoint's AsyncDatabase, when it has one


# What stops a call for one person before it reaches the upstream, and its audit outcome.
PERSON_PROBLEMS: dict[type[Exception], str] = {
    AssertionUnavailable: "assertion_unavailable",
    NotConnected: "not_connected",
    CredentialUnavailable: "credential_unavailable",
}


@dataclass
class Outcome:
    """What the endpoint needs to know about a request once the SDK has handled it (on the ASGI scope)."""

    database_unavailable: bool = False


def log_database_unavailable(exc: BaseException, doing: str) -> None:
    """One warning line per request that met a database outage (no traceback: an outage fails them all)."""
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    logger.warning("database unavailable (%s: %s) while %s: answered 503", type(exc).__name__, reason, doing)


# ---------------------------------------------------------------------------
# Validation problems in words: the offending path and what it must be. Never pydantic's own
# text, which quotes the input and links to its documentation, nor the tool's validator messages.
# ---------------------------------------------------------------------------
_MUST_BE = {
    "missing": "is required",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "tuple_type": "must be an array",
    "set_type": "must be an array",
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "none_required": "must be null",
    "extra_forbidden": "is not allowed",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
    "date_type": "must be a date",
    "date_parsing": "must be a date",
    "date_from_datetime_parsing": "must be a date",
    "datetime_type": "must be a date and time",
    "datetime_parsing": "must be a date and time",
    "datetime_from_date_parsing": "must be a date and time",
    "string_pattern_mismatch": "does not have the expected form",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "string_too_short": ("min_length", "must be at least {} character(s) long"),
    "string_too_long": ("max_length", "must be at most {} characters long"),
    "too_short": ("min_length", "must have at least {} item(s)"),
    "too_long": ("max_length", "must have at most {} items"),
    "literal_error": ("expected", "must be {}"),
    "enum": ("expected", "must be {}"),
}


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe_problem(error: ErrorDetails, *, skip: int = 0, subject: str = "arguments") -> str:
    """One pydantic validation error as "<path> <what it must be>", e.g. "limit must be at least 1".

    ``skip`` leading parts of the location are dropped (a union's member name); ``subject`` names
    the whole value when the location is empty. Bounds and allowed values come from the schema
    (``ctx``), never the input.
    """
    path = _path(tuple(error["loc"][skip:])) or subject
    kind = error["type"]
    if kind in _MUST_BE:
        return f"{path} {_MUST_BE[kind]}"
    bound = _BOUNDS.get(kind)
    ctx = error.get("ctx") or {}
    if bound is not None and bound[0] in ctx:
        return f"{path} {bound[1].format(ctx[bound[0]])}"
    return f"{path} is not valid"


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
    """tools/list: every tool the person may use (groups), local ones first, then the upstreams'
    (from the gateway's memory: no upstream is asked). See Tool.visible_to for scopes."""
    caller = _tool_context(ctx)
    local = [_describe(t) for t in registry.all() if t.visible_to(caller)]
    return types.ListToolsResult(tools=local + hub.tools_for(caller.groups))


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    """tools/call: an unknown tool is a JSON-RPC error; the tool's own failure is ``isError`` (L4).

    A database outage meanwhile (the tool's queries or the audit row) is marked on the request's
    ``Outcome``: the endpoint turns the JSON-RPC error into a 503 with Retry-After.
    """
    caller = _tool_context(ctx)
    try:
        # A worker whose audit rows wait for an absent database refuses calls before they run (audit.batch).
        ensure_room()
    except TRANSIENT_DATABASE_ERRORS as exc:
        raise database_unavailable(ctx, exc, f"calling the tool {params.name[:128]!r}") from None
    tool = registry.get(params.name)
    link = hub.tool(params.name, caller.groups) if tool is None else None
    if link is not None:
        return await call_upstream_tool(ctx, caller, link, params)
    database = _loop_database(ctx)
    try:
        if tool is None or not tool.visible_to(caller):
            await _audit(database, caller, params.name, outcome="unknown_tool", duration_ms=0.0, arguments=None)
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        arguments = dict(params.arguments or {})
        if database is None:
            # The tool's own work and the audit row (or its queueing: audit.batch) share one worker thread.
            return await in_worker_thread(run_tool)(tool, caller, arguments)
        # The tool in a worker thread; its audit row from the event loop (mcpgate.asyncdb). Both are in
        # the tool's span (the worker thread gets the loop's context).
        with tracing.tool_span(tool.name):
            result, outcome, duration_ms = await in_worker_thread(execute_tool)(tool, caller, arguments)
            await _audit(database, caller, tool.name, outcome=outcome, duration_ms=duration_ms, arguments=arguments)
        return result
    except TRANSIENT_DATABASE_ERRORS as exc:
        raise database_unavailable(ctx, exc, f"calling the tool {params.name[:128]!r}") from None


def _loop_database(ctx: Any) -> AsyncDatabase | None:
    """The event loop's own database connections, when the endpoint has them (PostgreSQL: mcpgate.asyncdb)."""
    database = ctx.request.scope.get(DATABASE_KEY) if ctx.request is not None else None
    return database if isinstance(database, AsyncDatabase) else None


async def _audit(database: AsyncDatabase | None, caller: ToolContext, name: str, **fields: Any) -> None:
    """The audit row of a tools/call: from the event loop on ``database``, else in a worker thread."""
    if database is not None:
        await audit_record_on_loop(database=database, **tool_call_event(caller, name, **fields))
    else:
        await in_worker_thread(audit_tool_call_in_thread)(caller, name, **fields)


def database_unavailable(ctx: Any, exc: BaseException, doing: str) -> MCPError:
    """A database outage while serving a tools/call: logged, marked on the request's ``Outcome`` (the
    endpoint answers 503 with Retry-After), and the JSON-RPC error the SDK sends in the body."""
    log_database_unavailable(exc, doing)
    outcome = ctx.request.scope.get(OUTCOME_KEY) if ctx.request is not None else None
    if isinstance(outcome, Outcome):
        outcome.database_unavailable = True
    return MCPError(types.INTERNAL_ERROR, MCP_UNAVAILABLE_MESSAGE)


async def call_upstream_tool(
    ctx: Any, caller: ToolContext, link: Link, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    """tools/call through the gateway: the upstream's result as it gave it, and one audit row naming it.

    The upstream gets only what its operator configured (gateway.runtime), never the caller's
    token (MCP authorization, "Access Token Privilege Restriction"). An upstream that is down,
    times out or answers garbage is a tool error (``isError``) within its timeout; a JSON-RPC error
    of the upstream's own (an unknown tool, invalid parameters) passes on as that error.
    """
    arguments = dict(params.arguments or {})
    started = time.perf_counter()
    failure: MCPError | None = None
    result: types.CallToolResult | types.InputRequiredResult | None
    with tracing.tool_span(params.name):
        try:
            result = await _for_person(ctx, caller, link, lambda: link.call_tool(params.name, arguments))
            outcome = "error" if result.is_error else "ok"
        except NotConnected as exc:
            asked = ask_to_connect(ctx, params, exc)
            result, outcome = (
                (asked, "connect_requested") if asked is not None else (_error_result(str(exc)), "not_connected")
            )
        except tuple(PERSON_PROBLEMS) as exc:
            result, outcome = _error_result(str(exc)), PERSON_PROBLEMS[type(exc)]
        except UpstreamFailed as exc:
            result, outcome = _error_result(exc.message), str(exc.failure)
        except MCPError as exc:
            result, outcome, failure = None, "upstream_error", exc
    try:
        await _audit(
            _loop_database(ctx),
            caller,
            params.name,
            upstream=link.config.name,
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            arguments=arguments,
        )
    except TRANSIENT_DATABASE_ERRORS as exc:
        raise database_unavailable(ctx, exc, f"auditing a call of {params.name[:128]!r}") from None
    if failure is not None:
        raise failure
    assert result is not None
    return result


async def list_prompts(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
    """prompts/list: the upstreams' prompts the person may use, as ``<prefix>__<name>``."""
    return types.ListPromptsResult(prompts=hub.prompts_for(_tool_context(ctx).groups))


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    """prompts/get, routed to the upstream that offers the prompt (MCP prompts, "Error Handling": -32602)."""
    link = hub.prompt(params.name, _tool_context(ctx).groups)
    if link is None:
        raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
    return await _answered_for_person(ctx, link, lambda: link.get_prompt(params.name, params.arguments))


async def list_resources(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
    """resources/list: the upstreams' resources the person may use, URIs unchanged (gateway.catalog)."""
    return types.ListResourcesResult(resources=hub.resources_for(_tool_context(ctx).groups))


async def list_resource_templates(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(resource_templates=hub.templates_for(_tool_context(ctx).groups))


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    """resources/read, routed by URI (gateway.catalog); unknown: -32002 (MCP resources, "Error Handling")."""
    link = hub.resource(params.uri, _tool_context(ctx).groups)
    if link is None:
        raise MCPError(RESOURCE_NOT_FOUND, "Resource not found", data={"uri": params.uri})
    return await _answered_for_person(ctx, link, lambda: link.read_resource(params.uri))


async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
    """completion/complete, routed like the prompt or resource template it completes."""
    groups = _tool_context(ctx).groups
    ref = params.ref
    link = hub.prompt(ref.name, groups) if isinstance(ref, types.PromptReference) else hub.resource(ref.uri, groups)
    if link is None:
        return types.CompleteResult(completion=types.Completion(values=[]))
    return await _answered_for_person(ctx, link, lambda: link.complete(params))


@dataclass(frozen=True)
class Outgoing:
    """What a request to an upstream made for one person carries besides the upstream's own headers."""

    headers: dict[str, str]
    held: Held | None = None  # the person's own credential (gateway.connections), when the upstream takes one


async def per_call_headers(ctx: Any, caller: ToolContext, link: Link) -> Outgoing:
    """The person's own credential at a per-person upstream (gateway.connections) and the signed identity
    assertion, when its operator configured one (gateway.assertions). A database outage meanwhile is this
    request's 503; ``NotConnected``, ``CredentialUnavailable`` and ``AssertionUnavailable`` are the caller's.
    """
    config = link.config
    headers: dict[str, str] = {}
    held: Held | None = None
    try:
        if config.per_person:
            url = caller.host.url(connect_path(config.name))
            try:
                held = await in_worker_thread(connection_credential)(user_id=caller.user.pk, upstream_id=config.id)
            except ConnectionEnded:
                raise NotConnected(upstream=config.name, url=url, ended=True) from None
            if held is None:
                raise NotConnected(upstream=config.name, url=url)
            headers["Authorization"] = f"Bearer {held.token}"  # RFC 6750 §2.1
        if config.identity_assertion_header:
            headers[config.identity_assertion_header] = await identity_assertion(
                issuer=caller.host.issuer,
                audience=config.url,
                subject=str(caller.user.pk),
                email=caller.email,
                groups=caller.groups,
                client_id=caller.client.client_id,
            )
    except TRANSIENT_DATABASE_ERRORS as exc:
        raise database_unavailable(ctx, exc, f"preparing a request to {config.name!r}") from None
    return Outgoing(headers=headers, held=held)


async def _for_person(ctx: Any, caller: ToolContext, link: Link, request: Callable[[], Awaitable[T]]) -> T:
    """``request()`` to ``link`` carrying the caller's per-call headers.

    A person's own credential that the upstream refuses (HTTP 401): a per-person OAuth access token is
    renewed once and the request sent again (the upstream did not run it); a refused renewal, a pasted
    token, or a renewed token refused again is forgotten, and the person told to connect again: it stops
    being sent at once, rather than on every call until they notice.
    """
    outgoing = await per_call_headers(ctx, caller, link)
    name = link.config.name
    url = caller.host.url(connect_path(name))
    held, headers = outgoing.held, outgoing.headers
    for attempt in (1, 2):
        try:
            with call_headers(headers):
                return await request()
        except UpstreamFailed as exc:
            if exc.failure is not Failure.CREDENTIAL_REFUSED or held is None:
                raise
            if attempt == 1 and link.config.credential is Credential.PERSON_OAUTH:
                try:
                    held = await in_worker_thread(connection_renewed_after_refusal)(held=held)
                except ConnectionEnded:
                    raise NotConnected(upstream=name, url=url, ended=True) from None
                except TRANSIENT_DATABASE_ERRORS as db_exc:
                    raise database_unavailable(ctx, db_exc, f"renewing a refused credential for {name!r}") from None
                if held is None:
                    raise NotConnected(upstream=name, url=url) from None  # disconnected meanwhile
                headers = {**headers, "Authorization": f"Bearer {held.token}"}
                continue
            try:
                await in_worker_thread(connection_refused)(held=held)
            except TRANSIENT_DATABASE_ERRORS as db_exc:
                raise database_unavailable(ctx, db_exc, f"forgetting a refused credential for {name!r}") from None
            raise UpstreamFailed(
                Failure.CREDENTIAL_REFUSED,
                f"{name} refused the credential you connected, so mcpgate has forgotten it. "
                f"Connect again at {url} and call the tool again.",
            ) from None
    raise AssertionError("unreachable: the second attempt returns or raises")


async def _answered_for_person(ctx: Any, link: Link, request: Callable[[], Awaitable[T]]) -> T:
    """``_for_person`` for prompts, resources and completions: what stops it is a JSON-RPC error (-32603)."""
    try:
        return await _for_person(ctx, _tool_context(ctx), link, request)
    except (UpstreamFailed, AssertionUnavailable, NotConnected, CredentialUnavailable) as exc:
        raise MCPError(types.INTERNAL_ERROR, str(exc)) from None


def ask_to_connect(
    ctx: Any, params: types.CallToolRequestParams, problem: NotConnected
) -> types.InputRequiredResult | None:
    """A person who has not connected the upstream is asked to, through the client, when it can show a URL.

    MCP 2026-07-28 "Multi Round-Trip Requests": a ``tools/call`` answered with an ``InputRequiredResult``
    holding a URL-mode elicitation (``elicitation/create``, mode ``url``: the /connect/ page, opened in the
    person's browser, never in the client) is retried by the client once the person is done. Only when the
    request's own capabilities declare ``elicitation.url`` (the client must, to be sent one), and only once:
    a retry that carries an answer to it and is still not connected gets the tool error instead. Earlier
    versions' clients, whose capabilities a stateless server does not keep, get the tool error.
    """
    session = getattr(ctx, "session", None)
    if session is None or session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return None
    capabilities = session.client_capabilities
    if capabilities is None or capabilities.elicitation is None or capabilities.elicitation.url is None:
        return None
    key = f"connect-{problem.upstream}"
    if params.input_responses and key in params.input_responses:
        return None
    elicitation = types.ElicitRequest(params=types.ElicitRequestURLParams(message=str(problem), url=problem.url))
    return types.InputRequiredResult(input_requests={key: elicitation})


def audit_tool_call_in_thread(caller: ToolContext, name: str, **fields: Any) -> None:
    """``audit_tool_call`` in a worker thread: a broken connection is dropped (the next call reconnects)."""
    try:
        audit_tool_call(caller, name, **fields)
    except TRANSIENT_DATABASE_ERRORS:
        close_old_connections()
        raise


def arguments_digest(arguments: dict[str, Any]) -> str:
    """A stable hash of the arguments: lets the audit tell calls apart without storing their values."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_tool(tool: Tool, caller: ToolContext, arguments: dict[str, Any]) -> types.CallToolResult:
    """Validate the arguments, call the tool, audit the call (in a worker thread).

    Invalid arguments are a tool error the model can correct (``isError``, as MCP 2025-11-25
    "Error Handling" asks), naming each offending argument (``describe_problem``). A database
    outage is raised (TRANSIENT_DATABASE_ERRORS) for ``call_tool`` to answer 503.
    """
    with tracing.tool_span(tool.name):
        return execute_tool(tool, caller, arguments, audited=True)[0]


def execute_tool(
    tool: Tool, caller: ToolContext, arguments: dict[str, Any], *, audited: bool = False
) -> tuple[types.CallToolResult, str, float]:
    """``run_tool``, with the audit row left to the caller unless ``audited``, and the tool's span to the
    caller: the result, the outcome for the audit row, and how long the tool took (ms)."""
    try:
        with tracing.database_spans():
            result, outcome, duration_ms = _execute(tool, caller, arguments)
            if audited:
                audit_tool_call(caller, tool.name, outcome=outcome, duration_ms=duration_ms, arguments=arguments)
            return result, outcome, duration_ms
    except TRANSIENT_DATABASE_ERRORS:
        close_old_connections()  # this worker thread's broken connection; the next call reconnects
        raise


def _execute(tool: Tool, caller: ToolContext, arguments: dict[str, Any]) -> tuple[types.CallToolResult, str, float]:
    """Run ``tool`` through the SDK's ``Tool.run`` (mcp_bridge.registry): its result, the outcome for
    the audit row, and how long it took (ms).

    Transient database errors pass through (``run_tool``'s callers answer 503); every other
    failure becomes a tool error result (``isError``), as MCP's tools spec asks for errors of
    the tool rather than of the protocol.
    """
    started = time.perf_counter()
    try:
        result = tool.run(caller, arguments)
        outcome = "error" if result.is_error else "ok"
    except ValidationError as exc:
        problems = "; ".join(describe_problem(e) for e in exc.errors())
        result = _error_result(f"Invalid arguments: {problems}")
        outcome = "invalid_arguments"
    except UnexpectedToolError:
        logger.exception("tool %s failed", tool.name)
        result = _error_result(f"The tool {tool.name} failed; the error has been logged.")
        outcome = "error"
    except ToolError as exc:
        # A ToolError's message is written for the person: pass it on.
        result = _error_result(str(exc))
        outcome = "error"
    return result, outcome, round((time.perf_counter() - started) * 1000, 2)


def audit_tool_call(caller: ToolContext, tool: str, **fields: Any) -> None:
    """The audit row of one tools/call (the one write on the hot path; ``fields``: ``tool_call_event``'s)."""
    audit_record(**tool_call_event(caller, tool, **fields))


def tool_call_event(
    caller: ToolContext,
    tool: str,
    *,
    outcome: str,
    duration_ms: float,
    arguments: dict[str, Any] | None,
    upstream: str | None = None,
) -> dict[str, Any]:
    """``audit_record``'s keywords for one tools/call: a hash of the arguments, never their values."""
    detail: dict[str, Any] = {"tool": tool[:128], "outcome": outcome, "duration_ms": duration_ms}
    if upstream is not None:
        detail["upstream"] = upstream
    if arguments is not None:
        detail["arguments_sha256"] = arguments_digest(arguments)
    return {
        "event": AuditKind.TOOL_CALL,
        "user": caller.user,
        "client": caller.client,
        "host": caller.host.name,
        "ip": caller.client_ip,
        "detail": detail,
    }


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class SpansWhileTracing(OpenTelemetryMiddleware):
    """The SDK's span per message (``OpenTelemetryMiddleware``, on in every ``Server``), skipped while no
    OpenTelemetry tracer provider is installed in the process, when it could only be a no-op.

    A no-op, but not free: building it (attributes, the trace context from ``_meta``, the proxy
    tracer and its context managers) took about 5 % of a /mcp worker's time under load (py-spy).
    Any provider counts, mcpgate's (``mcpgate.observability.tracing``) or another's installed
    globally, and one installed in a running process is honoured from the next message.
    """

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return await call_next(ctx)
        return await super().__call__(ctx, call_next)


def build_server() -> Server[Any]:
    server = _server()
    # The SDK's comment on ``Server.middleware``: "Drop it from this list to opt out".
    server.middleware = [SpansWhileTracing() if type(m) is OpenTelemetryMiddleware else m for m in server.middleware]
    return server


def _server() -> Server[Any]:
    return Server(
        SERVER_NAME,
        version=settings.MCPGATE_VERSION,
        instructions="Tools of your organisation, called as you.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_completion=complete,
    )


def build_session_manager(server: Server[Any]) -> StreamableHTTPSessionManager:
    """Stateless (any worker or replica can serve any request, checklist H6), JSON responses.

    The endpoint has already checked Host and Origin against the configured hosts; the SDK
    checks them again (DNS rebinding protection) with the same lists.
    """
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
