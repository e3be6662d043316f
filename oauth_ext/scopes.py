"""The scope list: MCPGATE_SCOPES from settings plus scopes that installed apps' tools declare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from oauth2_provider.scopes import BaseScopes

_registered: dict[str, str] = {}

BASIC_SCOPE = "mcp"


def register_scope(name: str, description: str) -> None:
    """Add a scope (e.g. from a tool module); the description is what the consent page says."""
    existing = all_scopes().get(name)
    if existing is not None and existing != description:
        raise ValueError(f"scope {name!r} is already declared as {existing!r}")
    _registered[name] = description


# Set by mcp_bridge when it loads: for a scope, the titles of the tools that need it. Kept as a
# hook so the authorization server does not import the resource server.
_tool_catalog: Callable[[str], list[str]] = lambda scope: []  # noqa: E731


def set_tool_catalog(catalog: Callable[[str], list[str]]) -> None:
    global _tool_catalog
    _tool_catalog = catalog


def tools_needing(scope: str) -> list[str]:
    """Titles of the tools a scope helps unlock, for the consent page."""
    return _tool_catalog(scope)


def all_scopes() -> dict[str, str]:
    return {**settings.MCPGATE_SCOPES, **_registered}


class MCPGateScopes(BaseScopes):
    """DOT scopes backend (``SCOPES_BACKEND_CLASS``); ``mcp`` is the default and the minimum."""

    def get_all_scopes(self) -> dict[str, str]:
        return all_scopes()

    def get_available_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        return list(all_scopes())

    def get_default_scopes(self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any) -> list[str]:
        return [BASIC_SCOPE]
