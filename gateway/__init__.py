"""The gateway: existing MCP servers (upstreams) served through mcpgate's /mcp, namespaced and per group."""
