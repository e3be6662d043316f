"""Which browser origins may call /mcp (checklist H2: a present Origin that is not allowed gets 403)."""

from __future__ import annotations

from django.conf import settings

from mcpgate.hosts import configured_hosts


def allowed_origins() -> frozenset[str]:
    extra = {origin.rstrip("/").lower() for origin in settings.MCPGATE_ALLOWED_ORIGINS}
    return frozenset({host.base_url for host in configured_hosts()} | extra)


def origin_allowed(origin: str | None) -> bool:
    """Server-to-server clients send no Origin, which is fine; a browser's must be listed."""
    return not origin or origin.rstrip("/").lower() in allowed_origins()
