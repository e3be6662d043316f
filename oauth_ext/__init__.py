"""The authorization server: identity from oauth2-proxy, DOT extended for MCP clients."""
