"""An MCP server offering what the conformance suite's server scenarios call, on the Python SDK's low-level Server.

``@modelcontextprotocol/conformance`` (pinned in tests/e2e/node) tests a server by calling fixtures
of fixed names: the ``test_*`` tools, the ``test://`` resources and template, the ``test_*`` prompts,
completions, logging and resource subscriptions. Each behaves as the suite's scenario description
(src/scenarios/server/*.ts of the pinned version) asks, as the suite's own reference server does.

Run it two ways (tests/e2e/test_conformance.py does both):

- ``conformance_fixture.py --port N``: Streamable HTTP at ``http://127.0.0.1:N/mcp``, with sessions
  and SSE responses, so that notifications and server-to-client requests reach the client mid-call
  ("the fixture alone");
- ``conformance_fixture.py --stdio``: over stdio, as an upstream of mcpgate.

It imports nothing of mcpgate: only the ``mcp`` SDK (and uvicorn to serve HTTP).
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata

# A 1x1 PNG and a tiny WAV, as the suite's reference server uses.
IMAGE_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
AUDIO_WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
RESOURCE_NOT_FOUND = -32002  # MCP resources, "Error Handling"
TEMPLATE = "test://template/{id}/data"
TEMPLATE_URI = re.compile(r"test://template/(?P<id>[^/]+)/data\Z")
# Each step of the logging and progress tools waits this long, as the scenarios ask (~50 ms).
STEP_SECONDS = 0.05

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema or NO_ARGUMENTS)


def _string_argument(name: str, description: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": "string", "description": description}}, "required": [name]}


TOOLS = [
    _tool("test_simple_text", "Returns one text content"),
    _tool("test_image_content", "Returns one image content (a 1x1 PNG)"),
    _tool("test_audio_content", "Returns one audio content (audio/wav)"),
    _tool("test_embedded_resource", "Returns one embedded text resource"),
    _tool("test_multiple_content_types", "Returns text, image and embedded resource content"),
    _tool("test_tool_with_logging", "Sends three info log notifications while it runs"),
    _tool("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100 while it runs"),
    _tool("test_error_handling", "Always fails with a tool error (isError)"),
    _tool("test_sampling", "Asks the client to sample an LLM", _string_argument("prompt", "The prompt to send")),
    _tool("test_elicitation", "Asks the user for input", _string_argument("message", "The message to show")),
    _tool("test_elicitation_sep1034_defaults", "Elicits a form whose fields have default values (SEP-1034)"),
    _tool("test_elicitation_sep1330_enums", "Elicits a form with every enum schema variant (SEP-1330)"),
]

RESOURCES = [
    types.Resource(
        uri="test://static-text",
        name="static-text",
        description="A static text resource",
        mime_type="text/plain",
    ),
    types.Resource(
        uri="test://static-binary",
        name="static-binary",
        description="A static binary resource (a PNG)",
        mime_type="image/png",
    ),
    types.Resource(
        uri="test://watched-resource",
        name="watched-resource",
        description="A resource clients may subscribe to",
        mime_type="text/plain",
    ),
]
TEMPLATES = [
    types.ResourceTemplate(
        uri_template=TEMPLATE,
        name="template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
]

PROMPTS = [
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with two required arguments",
        arguments=[
            types.PromptArgument(name="arg1", description="First test argument", required=True),
            types.PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that embeds a resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt with image content"),
]

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}
SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}
ELICITATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

# resources/subscribe and resources/unsubscribe only need to be accepted (no updates are sent).
subscriptions: set[str] = set()


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=IMAGE_PNG, mime_type="image/png")


def _embedded(uri: str, text: str, mime_type: str = "text/plain") -> types.EmbeddedResource:
    return types.EmbeddedResource(
        type="resource", resource=types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    )


def _result(*content: Any, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), is_error=is_error)


async def list_tools(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    arguments = dict(params.arguments or {})
    match params.name:
        case "test_simple_text":
            return _result(_text("This is a simple text response for testing."))
        case "test_image_content":
            return _result(_image())
        case "test_audio_content":
            return _result(types.AudioContent(type="audio", data=AUDIO_WAV, mime_type="audio/wav"))
        case "test_embedded_resource":
            return _result(_embedded("test://embedded-resource", "This is an embedded resource content."))
        case "test_multiple_content_types":
            return _result(
                _text("Multiple content types test:"),
                _image(),
                _embedded("test://mixed-content-resource", '{"test":"data","value":123}', "application/json"),
            )
        case "test_tool_with_logging":
            return await _with_logging(ctx)
        case "test_tool_with_progress":
            return await _with_progress(ctx)
        case "test_error_handling":
            return _result(_text("This tool intentionally returns an error for testing"), is_error=True)
        case "test_sampling":
            return await _sampling(ctx, str(arguments.get("prompt", "")))
        case "test_elicitation":
            return await _elicit(ctx, str(arguments.get("message", "")), ELICITATION_SCHEMA, "User response")
        case "test_elicitation_sep1034_defaults":
            return await _elicit(ctx, "Please provide user information", SEP1034_SCHEMA, "Elicitation completed")
        case "test_elicitation_sep1330_enums":
            return await _elicit(ctx, "Please choose with every kind of enum", SEP1330_SCHEMA, "Elicitation completed")
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")


async def _with_logging(ctx: ServerRequestContext) -> types.CallToolResult:
    """Three info notifications on the request's own stream (MCP logging, "Log Message Notifications")."""
    for step, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
        if step:
            await anyio.sleep(STEP_SECONDS)
        notification = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(level="info", data=message)
        )
        await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
    return _result(_text("Tool with logging executed successfully"))


async def _with_progress(ctx: ServerRequestContext) -> types.CallToolResult:
    """0, 50 and 100 of 100 against the caller's progressToken; nothing when it gave none (MCP progress)."""
    for step, progress in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(STEP_SECONDS)
        await ctx.session.report_progress(progress, 100, f"Completed step {progress} of 100")
    return _result(_text("Tool with progress executed successfully"))


async def _sampling(ctx: ServerRequestContext, prompt: str) -> types.CallToolResult:
    """sampling/createMessage to the client; a tool error when the client cannot be asked."""
    request = types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=_text(prompt))], max_tokens=100
        )
    )
    try:
        answer = await ctx.session.send_request(
            request, types.CreateMessageResult, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
        )
    except MCPError as exc:
        return _result(_text(f"Sampling is not available: {exc.error.message}"), is_error=True)
    content = answer.content
    text = content.text if isinstance(content, types.TextContent) else "(no text)"
    return _result(_text(f"LLM response: {text}"))


async def _elicit(ctx: ServerRequestContext, message: str, schema: dict[str, Any], label: str) -> types.CallToolResult:
    """elicitation/create (form mode) to the client; a tool error when the client cannot be asked."""
    try:
        answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    except MCPError as exc:
        return _result(_text(f"Elicitation is not available: {exc.error.message}"), is_error=True)
    return _result(_text(f"{label}: action={answer.action}, content={json.dumps(answer.content or {})}"))


async def list_resources(
    ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=RESOURCES)


async def list_resource_templates(
    ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)


async def read_resource(ctx: ServerRequestContext, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    contents: types.TextResourceContents | types.BlobResourceContents
    if uri == "test://static-text":
        contents = types.TextResourceContents(
            uri=uri, mime_type="text/plain", text="This is the content of the static text resource."
        )
    elif uri == "test://static-binary":
        contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=IMAGE_PNG)
    elif uri == "test://watched-resource":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="Watched resource content")
    elif match := TEMPLATE_URI.match(uri):
        data = {"id": match["id"], "templateTest": True, "data": f"Data for ID: {match['id']}"}
        contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=json.dumps(data))
    else:
        raise MCPError(RESOURCE_NOT_FOUND, "Resource not found", data={"uri": uri})
    return types.ReadResourceResult(contents=[contents])


async def subscribe(ctx: ServerRequestContext, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx: ServerRequestContext, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.discard(str(params.uri))
    return types.EmptyResult()


async def list_prompts(
    ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=PROMPTS)


async def get_prompt(ctx: ServerRequestContext, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    arguments = dict(params.arguments or {})
    messages: list[Any]
    match params.name:
        case "test_simple_prompt":
            messages = [_text("This is a simple prompt for testing.")]
        case "test_prompt_with_arguments":
            messages = [_text(f"Prompt with arguments: arg1='{arguments.get('arg1')}', arg2='{arguments.get('arg2')}'")]
        case "test_prompt_with_embedded_resource":
            uri = arguments.get("resourceUri") or "test://example-resource"
            messages = [
                _embedded(uri, "Embedded resource content for testing."),
                _text("Please process the embedded resource above."),
            ]
        case "test_prompt_with_image":
            messages = [_image(), _text("Please analyze the image above.")]
        case _:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
    return types.GetPromptResult(messages=[types.PromptMessage(role="user", content=c) for c in messages])


async def complete(ctx: ServerRequestContext, params: types.CompleteRequestParams) -> types.CompleteResult:
    """Minimal, as the suite allows: the known values of test_prompt_with_arguments that start with the input."""
    known = ["paris", "park", "party"]
    values = [v for v in known if v.startswith(params.argument.value)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def set_level(ctx: ServerRequestContext, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


def build_server() -> Server:
    server: Server = Server(
        "mcp-conformance-fixture",
        version="1.0.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
    )
    # Not the constructor's on_set_logging_level, which warns that logging is deprecated as of
    # 2026-07-28: the suite's scenarios are of 2025-06-18 and 2025-11-25, where it is not.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    return server


async def serve_stdio() -> None:
    server = build_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(port: int) -> None:
    """Stateful Streamable HTTP with SSE responses; DNS rebinding protection for 127.0.0.1 (the SDK's default)."""
    app = build_server().streamable_http_app(host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true", help="serve over stdio")
    mode.add_argument("--port", type=int, help="serve Streamable HTTP at http://127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.stdio:
        anyio.run(serve_stdio)
    else:
        serve_http(args.port)


if __name__ == "__main__":
    main()
