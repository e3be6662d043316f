"""App configuration for mcp_bridge."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from gateway.hooks import set_reserved_names
from oauth_ext.scopes import add_tool_catalog

from .registry import registry


class MCPBridgeConfig(AppConfig):
    name = "mcp_bridge"
    verbose_name = "MCP bridge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Like admin.py: every installed app's mcp_tools module declares its tools.
        autodiscover_modules("mcp_tools")
        add_tool_catalog(lambda scope: [t.title or t.name for t in registry.all() if scope in t.scopes])
        # Upstream names never shadow a local tool (gateway.runtime.Routes.merge).
        set_reserved_names(lambda: [t.name for t in registry.all()])
