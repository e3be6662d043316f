"""Tiny MCP servers the gateway tests run as stdio upstreams."""
