"""The /mcp endpoint: MCP Streamable HTTP on the official SDK, behind bearer authentication."""
