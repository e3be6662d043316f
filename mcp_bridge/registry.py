"""The tool registry: ``@tool`` turns a typed function into an MCP tool; apps declare theirs in ``mcp_tools.py``."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import mcp_types as types
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools.base import Tool as SDKTool
from pydantic import ValidationError

from mcpgate.errors import TRANSIENT_DATABASE_ERRORS
from oauth_ext.scopes import all_scopes

from .context import ToolContext

# MCP tools spec (checklist L3): 1-128 characters of [A-Za-z0-9_.-].
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class ToolSuspended(UnexpectedToolError):
    """The SDK's ``Tool.run`` waited on something: this registry runs tools without an event loop.

    A crash of the call like any other (``UnexpectedToolError``); tests/mcp_bridge/
    test_sdk_contracts.py fails first should an SDK upgrade bring it about.
    """


def _in_this_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a coroutine function that never suspends, for the SDK to await (see ``Tool.run``).

    ``functools.wraps`` keeps ``fn``'s signature and annotations (``__wrapped__``), from which
    the SDK builds the schemas as it would from ``fn`` itself.
    """

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


@dataclass(frozen=True)
class Tool:
    """One tool: the SDK's tool (schemas, validation, result conversion) and who may call it."""

    sdk: SDKTool = field(repr=False)
    fn: Callable[..., Any]
    scopes: frozenset[str]
    groups: frozenset[str]

    @property
    def name(self) -> str:
        return self.sdk.name

    @property
    def title(self) -> str | None:
        return self.sdk.title

    @property
    def description(self) -> str:
        return self.sdk.description

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.sdk.parameters

    @property
    def output_schema(self) -> dict[str, Any] | None:
        return self.sdk.output_schema

    def visible_to(self, ctx: ToolContext) -> bool:
        """Whether the person may use it at all (groups). Scopes are not a filter here: a tool that
        needs a scope the token lacks stays listed, so calling it yields 403 insufficient_scope
        and the client can step up (MCP authorization, "Scope challenge handling")."""
        return not self.groups or bool(self.groups & ctx.groups)

    def missing_scopes(self, scopes: frozenset[str]) -> frozenset[str]:
        return self.scopes - scopes

    def run(self, ctx: ToolContext, arguments: dict[str, Any]) -> types.CallToolResult:
        """Validate the arguments, call the tool with ``ctx``, convert its result: the SDK's ``Tool.run``.

        Called in a worker thread; the tool runs in it, on that thread's database connection,
        which the audit row of the call then uses too (one thread hop per tools/call). The SDK
        runs a synchronous function on a thread of its own, so it is handed the function as
        a coroutine function that never suspends (``_in_this_thread``), and the coroutine is
        driven here to its end without an event loop: Django refuses ORM calls in a thread
        running one. Should the SDK ever wait on something, ``ToolSuspended`` says so.

        The SDK's wrapping of failures is undone (its ``Tool.run`` keeps what was raised as
        ``__cause__``), so each keeps its own meaning:

        - invalid arguments: pydantic's ``ValidationError`` (the SDK's ``ToolError`` around it);
        - the tool's own ``ToolError``, its message written for the person;
        - a transient database error (the caller answers 503);
        - any other failure, a crash: the SDK's ``UnexpectedToolError``, the cause chained.
        """
        # The SDK hands ``ctx`` untouched to the context parameter (``context_kwarg``).
        coroutine = self.sdk.run(arguments, cast(Any, ctx), convert_result=True)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return cast(types.CallToolResult, done.value)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError):
                if isinstance(cause, TRANSIENT_DATABASE_ERRORS):
                    raise cause from None
                raise
            if isinstance(cause, ValidationError | ToolError):
                raise cause from None
            raise
        coroutine.close()
        raise ToolSuspended(f"the SDK's Tool.run suspended while running {self.name!r}")


class Registry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools and self._tools[tool.name].fn is not tool.fn:
            raise ValueError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        """Forget a tool (tests declare throw-away tools; nothing else needs to)."""
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def all(self) -> list[Tool]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def unlocked_by(self, scopes: Iterable[str]) -> dict[str, list[Tool]]:
        """For the consent page: which tools each scope helps unlock."""
        return {scope: [t for t in self.all() if scope in t.scopes] for scope in scopes}


registry = Registry()


def tool(
    name: str | None = None,
    *,
    title: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] = ("mcp",),
    groups: Iterable[str] = (),
    structured_output: bool | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an MCP tool. The function's first parameter receives the ``ToolContext``.

    The tool is the ``mcp`` SDK's (``Tool.from_function``, as its ``MCPServer`` makes them): the
    input schema from the other parameters' type hints, the output schema from the return
    annotation. ``scopes`` must all be granted to the token; ``groups``, if given, are
    oauth2-proxy groups of which the person must be in at least one. The description defaults
    to the docstring.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or fn.__name__
        if not TOOL_NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"tool {tool_name!r} must be a plain function: tools run in a worker thread")
        first = next(iter(inspect.signature(fn).parameters), None)
        if first is None:
            raise TypeError(f"tool {tool_name!r} must take the ToolContext as its first parameter")
        needed = frozenset(scopes)
        unknown = needed - set(all_scopes())
        if unknown:
            raise ValueError(f"tool {tool_name!r} needs undeclared scopes {sorted(unknown)}; register_scope() them")
        sdk = SDKTool.from_function(
            _in_this_thread(fn),
            name=tool_name,
            title=title,
            description=(description or fn.__doc__ or "").strip(),
            context_kwarg=first,
            structured_output=structured_output,
        )
        registry.add(Tool(sdk=sdk, fn=fn, scopes=needed, groups=frozenset(groups)))
        return fn

    return register
