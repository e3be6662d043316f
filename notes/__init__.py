"""Example app: how an organisation writes its own MCP tools (per-person notes in the database)."""
