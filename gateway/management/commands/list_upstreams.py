"""``manage.py list_upstreams``: the upstreams and their health, one JSON object per line (no credentials)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from gateway.models import Upstream
from gateway.services import upstream_describe


class Command(BaseCommand):
    help = "List the upstream MCP servers: one JSON object per line, with health; credentials are never shown."

    def handle(self, *args: Any, **options: Any) -> None:
        for upstream in Upstream.objects.select_related("status").order_by("name"):
            row = upstream_describe(upstream)
            row["enabled"] = upstream.enabled
            row["timeout_seconds"] = upstream.timeout_seconds
            status = getattr(upstream, "status", None)
            row["health"] = (
                {
                    "failing": status.failing,
                    "last_success_at": status.last_success_at.isoformat() if status.last_success_at else None,
                    "last_error": status.last_error or None,
                    "last_error_at": status.last_error_at.isoformat() if status.last_error_at else None,
                    "latency_ms": status.latency_ms,
                    "tools": len(status.catalog.get("tools", [])),
                }
                if status is not None
                else None
            )
            self.stdout.write(json.dumps(row))
