"""``manage.py remove_upstream NAME``: stop serving an upstream (every worker drops it within seconds)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.services import UpstreamInvalid, upstream_remove


class Command(BaseCommand):
    help = "Remove an upstream MCP server; its tools disappear from /mcp and its processes stop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            upstream_remove(name=options["name"])
        except UpstreamInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps({"removed": options["name"]}))
