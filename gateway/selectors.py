"""Read-only questions about upstreams for other apps (the consent page, the console)."""

from __future__ import annotations

from .models import Upstream


def failing_upstreams() -> list[Upstream]:
    """Enabled upstreams whose last recorded event is an error (the console's overview)."""
    upstreams = Upstream.objects.filter(enabled=True).select_related("status")
    return [u for u in upstreams if getattr(u, "status", None) is not None and u.status.failing]
