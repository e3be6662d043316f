"""App configuration for mcp_bridge."""

from __future__ import annotations

from django.apps import AppConfig


class MCPBridgeConfig(AppConfig):
    name = "mcp_bridge"
    verbose_name = "MCP bridge"
    default_auto_field = "django.db.models.BigAutoField"
