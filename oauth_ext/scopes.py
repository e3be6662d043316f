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


# Added by mcp_bridge (local tools) and the gateway (upstreams) when they load: for a scope, the
# titles of what needs it. Kept as hooks so the authorization server does not import the resource server.
_tool_catalogs: list[Callable[[str], list[str]]] = []


def add_tool_catalog(catalog: Callable[[str], list[str]]) -> None:
    if catalog not in _tool_catalogs:
        _tool_catalogs.append(catalog)


def tools_needing(scope: str) -> list[str]:
    """Titles of the tools a scope helps unlock, for the consent page."""
    return [title for catalog in _tool_catalogs for title in catalog(scope)]


# Added by the gateway: the services whose tools act as the person's own account there, which the
# consent page points to /connect/ for (issue 12).
_personal_accounts: list[Callable[[], list[str]]] = []


def add_personal_accounts(names: Callable[[], list[str]]) -> None:
    if names not in _personal_accounts:
        _personal_accounts.append(names)


def personal_accounts() -> list[str]:
    """Names of the services a person connects an account of their own at (the consent page)."""
    return [name for names in _personal_accounts for name in names()]


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
