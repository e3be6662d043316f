"""mcpgate: put an organisation's MCP tools on the internet behind OAuth 2.1."""
