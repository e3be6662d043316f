"""What the tool registry relies on in the ``mcp`` SDK's ``Tool``: each test fails on an upgrade that changes it.

mcp_bridge.registry builds every tool with ``Tool.from_function`` and runs it with ``Tool.run``,
driving the coroutine in the calling worker thread without an event loop (the tool's queries
and the audit row share that thread's connection). That holds while ``Tool.run`` awaits a
coroutine function's result directly and keeps what went wrong as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import mcp_types as types
import pytest
from django.db import OperationalError
from django.utils import timezone
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools.base import Tool as SDKTool
from pydantic import BaseModel, Field, ValidationError

from mcp_bridge.context import ToolContext
from mcp_bridge.registry import Tool, ToolSuspended, registry, tool
from mcpgate.hosts import configured_hosts
from oauth_ext.models import Client, User
from tests.personas import ALICE

SECRET = "password=hunter2"


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_from_function_takes_the_parameters_the_registry_passes() -> None:
    accepted = parameters(SDKTool.from_function)

    for name in ("fn", "name", "title", "description", "context_kwarg", "structured_output"):
        assert name in accepted


def test_run_takes_arguments_context_and_convert_result() -> None:
    assert parameters(SDKTool.run) == ["self", "arguments", "context", "convert_result"]
    assert inspect.iscoroutinefunction(SDKTool.run)


class Echo(BaseModel):
    text: str
    times: int
    caller: str
    thread: int


@pytest.fixture
def ctx() -> ToolContext:
    """Alice's context (unsaved rows: nothing here touches the database)."""
    return ToolContext(
        user=User(username=ALICE, email=ALICE),
        client=Client(name="Claude Code", client_id="claude"),
        scopes=frozenset({"mcp"}),
        groups=frozenset({"eng"}),
        token_expires=timezone.now() + timedelta(hours=1),
        host=configured_hosts()[0],
        token_id=1,
    )


@pytest.fixture
def contract_tools() -> Iterator[None]:
    @tool()
    def echo(ctx: ToolContext, text: str, times: int = Field(default=1, ge=1)) -> Echo:
        """Say it again."""
        return Echo(text=text, times=times, caller=ctx.email, thread=threading.get_ident())

    @tool()
    def refuse(ctx: ToolContext) -> str:
        """Says no."""
        raise ToolError("The deploy window is closed.")

    @tool()
    def crash(ctx: ToolContext) -> str:
        """Fails."""
        raise RuntimeError(SECRET)

    @tool()
    def ledger(ctx: ToolContext) -> str:
        """Meets a database outage."""
        raise OperationalError("server closed the connection unexpectedly")

    yield
    for name in ("echo", "refuse", "crash", "ledger"):
        registry.remove(name)


def registered(name: str) -> Tool:
    found = registry.get(name)
    assert found is not None
    return found


def test_the_context_parameter_is_not_an_argument(contract_tools: None) -> None:
    echo = registered("echo")

    assert echo.input_schema["required"] == ["text"]
    assert set(echo.input_schema["properties"]) == {"text", "times"}
    assert echo.output_schema is not None and set(echo.output_schema["properties"]) == {
        "text",
        "times",
        "caller",
        "thread",
    }


def test_a_tool_runs_in_the_calling_thread_with_the_context_and_structured_output(
    contract_tools: None, ctx: ToolContext
) -> None:
    result = registered("echo").run(ctx, {"text": "hi", "times": 2})

    assert isinstance(result, types.CallToolResult)
    assert result.is_error is False
    assert result.structured_content == {
        "text": "hi",
        "times": 2,
        "caller": ALICE,
        "thread": threading.get_ident(),
    }


def test_invalid_arguments_are_pydantics_validation_error(contract_tools: None, ctx: ToolContext) -> None:
    """What mcp_bridge.server turns into "Invalid arguments: ..." (its messages are pinned in test_tools)."""
    with pytest.raises(ValidationError) as raised:
        registered("echo").run(ctx, {"times": 0})

    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [
        (("text",), "missing"),
        (("times",), "greater_than_equal"),
    ]


def test_a_tools_own_tool_error_keeps_its_message(contract_tools: None, ctx: ToolContext) -> None:
    with pytest.raises(ToolError) as raised:
        registered("refuse").run(ctx, {})

    assert type(raised.value) is ToolError
    assert str(raised.value) == "The deploy window is closed."


def test_a_crash_is_unexpected_tool_error_with_the_cause_chained_and_kept_out_of_the_message(
    contract_tools: None, ctx: ToolContext
) -> None:
    with pytest.raises(UnexpectedToolError) as raised:
        registered("crash").run(ctx, {})

    assert SECRET not in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert str(raised.value.__cause__) == SECRET


def test_a_database_outage_in_a_tool_is_raised_as_such(contract_tools: None, ctx: ToolContext) -> None:
    """mcp_bridge.server answers it 503 with Retry-After."""
    with pytest.raises(OperationalError):
        registered("ledger").run(ctx, {})


def test_a_run_that_would_need_an_event_loop_is_refused_not_hung(ctx: ToolContext) -> None:
    """Should the SDK ever await something real, the registry says so instead of dropping the call."""

    async def waits(ctx: ToolContext) -> str:
        await asyncio.sleep(0)
        return "late"

    waiting = Tool(
        sdk=SDKTool.from_function(waits, context_kwarg="ctx"), fn=waits, scopes=frozenset(), groups=frozenset()
    )

    with pytest.raises(ToolSuspended):
        waiting.run(ctx, {})


def test_an_async_tool_is_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match="must be a plain function"):

        @tool()
        async def eventually(ctx: ToolContext) -> str:
            return "never"

    assert registry.get("eventually") is None
