"""What an upstream offers, under the names clients see: ``<prefix>__<name>``, and where a resource URI goes.

Names (tools and prompts): MCP allows ``[A-Za-z0-9_.-]{1,128}``, Claude's and OpenAI's tool rules
``[A-Za-z0-9_-]{1,64}``. An upstream name is exposed as ``<prefix>__<name>`` with any character
outside ``[A-Za-z0-9_-]`` replaced by ``_``; a result longer than 64 characters keeps its first 55
and a short hash of the whole. The catalog keeps the way back, so a call reaches the upstream under
the name the upstream gave.

Resources keep their URIs (no rewriting: a URI inside a tool result or a prompt still reads, and an
upstream mounted with an empty prefix is transparent). A read is routed by (1) the URIs the upstream
listed, (2) its resource templates (RFC 6570 level 1: ``{var}`` matches one path segment or more), then
(3) the URI's scheme when exactly one upstream uses it. See ``Routes.resource_link``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

SEPARATOR = "__"
NAME_LIMIT = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TEMPLATE_VARIABLE = re.compile(r"\{[^}]*\}")


def exposed_name(prefix: str, name: str) -> str:
    """The name clients see for the upstream's ``name``."""
    full = f"{prefix}{SEPARATOR}{name}" if prefix else name
    safe = _UNSAFE.sub("_", full)
    if len(safe) > NAME_LIMIT:
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        safe = f"{safe[: NAME_LIMIT - 9]}_{digest}"
    return safe


def template_pattern(template: str) -> re.Pattern[str]:
    """A URI template as a regular expression: literal text exactly, each ``{…}`` one or more characters."""
    parts = _TEMPLATE_VARIABLE.split(template)
    return re.compile(".+?".join(re.escape(part) for part in parts) + r"\Z")


def scheme_of(uri: str) -> str:
    scheme, sep, _ = uri.partition(":")
    return scheme.lower() if sep else ""


@dataclass(frozen=True)
class Catalog:
    """One upstream's tools, prompts, resources and templates, as it listed them and as clients see them."""

    prefix: str
    tools: dict[str, types.Tool] = field(default_factory=dict)  # exposed name -> the tool, renamed
    prompts: dict[str, types.Prompt] = field(default_factory=dict)
    resources: tuple[types.Resource, ...] = ()
    templates: tuple[types.ResourceTemplate, ...] = ()
    originals: dict[str, str] = field(default_factory=dict)  # exposed tool or prompt name -> upstream's name

    @classmethod
    def build(
        cls,
        *,
        prefix: str,
        tools: list[types.Tool],
        prompts: list[types.Prompt],
        resources: list[types.Resource],
        templates: list[types.ResourceTemplate],
    ) -> Catalog:
        exposed_tools: dict[str, types.Tool] = {}
        exposed_prompts: dict[str, types.Prompt] = {}
        originals: dict[str, str] = {}
        for tool in tools:
            name = exposed_name(prefix, tool.name)
            exposed_tools[name] = tool.model_copy(update={"name": name})
            originals[name] = tool.name
        for prompt in prompts:
            name = exposed_name(prefix, prompt.name)
            exposed_prompts[name] = prompt.model_copy(update={"name": name})
            originals[f"prompt:{name}"] = prompt.name
        return cls(
            prefix=prefix,
            tools=exposed_tools,
            prompts=exposed_prompts,
            resources=tuple(resources),
            templates=tuple(templates),
            originals=originals,
        )

    def original_tool(self, exposed: str) -> str:
        return self.originals[exposed]

    def original_prompt(self, exposed: str) -> str:
        return self.originals[f"prompt:{exposed}"]

    @property
    def uris(self) -> frozenset[str]:
        return frozenset(str(r.uri) for r in self.resources)

    @property
    def schemes(self) -> frozenset[str]:
        uris = [str(r.uri) for r in self.resources] + [t.uri_template for t in self.templates]
        return frozenset(s for s in map(scheme_of, uris) if s)

    def matches_template(self, uri: str) -> bool:
        return any(template_pattern(t.uri_template).match(uri) for t in self.templates)

    def to_json(self) -> dict[str, Any]:
        """As stored in UpstreamStatus.catalog (the upstream's own names; rebuilt with the prefix)."""

        def dump(items: Any) -> list[dict[str, Any]]:
            return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]

        tools = [t.model_copy(update={"name": self.originals[n]}) for n, t in self.tools.items()]
        prompts = [p.model_copy(update={"name": self.originals[f"prompt:{n}"]}) for n, p in self.prompts.items()]
        return {
            "tools": dump(tools),
            "prompts": dump(prompts),
            "resources": dump(self.resources),
            "resource_templates": dump(self.templates),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, prefix: str) -> Catalog:
        return cls.build(
            prefix=prefix,
            tools=[types.Tool.model_validate(t) for t in data.get("tools", [])],
            prompts=[types.Prompt.model_validate(p) for p in data.get("prompts", [])],
            resources=[types.Resource.model_validate(r) for r in data.get("resources", [])],
            templates=[types.ResourceTemplate.model_validate(t) for t in data.get("resource_templates", [])],
        )
