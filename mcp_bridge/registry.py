"""The tool registry: ``@tool`` turns a typed function into an MCP tool; apps declare theirs in ``mcp_tools.py``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata, func_metadata

from .context import ToolContext

# MCP tools spec (checklist L3): 1-128 characters of [A-Za-z0-9_.-].
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class Tool:
    """One tool: the function, what MCP clients see of it, and who may call it."""

    name: str
    fn: Callable[..., Any]
    title: str | None
    description: str
    scopes: frozenset[str]
    groups: frozenset[str]
    meta: FuncMetadata = field(repr=False)

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.meta.arg_model.model_json_schema(by_alias=True)

    @property
    def output_schema(self) -> dict[str, Any] | None:
        return self.meta.output_schema

    def visible_to(self, ctx: ToolContext) -> bool:
        """Whether the person may use it at all (groups). Scopes are not a filter here: a tool that
        needs a scope the token lacks stays listed, so calling it yields 403 insufficient_scope
        and the client can step up (MCP authorization, "Scope challenge handling")."""
        return not self.groups or bool(self.groups & ctx.groups)

    def missing_scopes(self, scopes: frozenset[str]) -> frozenset[str]:
        return self.scopes - scopes


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

    The input schema comes from the other parameters' type hints and the output schema from
    the return annotation, both by the ``mcp`` SDK's ``func_metadata`` (the same machinery as
    its ``MCPServer``). ``scopes`` must all be granted to the token; ``groups``, if given, are
    oauth2-proxy groups of which the person must be in at least one. The description defaults
    to the docstring.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or fn.__name__
        if not TOOL_NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
        first = next(iter(fn.__code__.co_varnames[: fn.__code__.co_argcount]), None)
        if first is None:
            raise TypeError(f"tool {tool_name!r} must take the ToolContext as its first parameter")
        from oauth_ext.scopes import all_scopes

        needed = frozenset(scopes)
        unknown = needed - set(all_scopes())
        if unknown:
            raise ValueError(f"tool {tool_name!r} needs undeclared scopes {sorted(unknown)}; register_scope() them")
        registry.add(
            Tool(
                name=tool_name,
                fn=fn,
                title=title,
                description=(description or (fn.__doc__ or "")).strip(),
                scopes=needed,
                groups=frozenset(groups),
                meta=func_metadata(fn, skip_names=[first], structured_output=structured_output),
            )
        )
        fn.mcp_context_parameter = first  # type: ignore[attr-defined]
        return fn

    return register
