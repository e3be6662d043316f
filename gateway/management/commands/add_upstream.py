"""``manage.py add_upstream``: put an MCP server behind mcpgate; prints one JSON object."""

from __future__ import annotations

import json
from typing import Any

import anyio
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from gateway.hooks import reserved_names
from gateway.runtime import UpstreamConfig, describe, exposed_names_elsewhere, probe
from gateway.services import UpstreamInvalid, parse_env, parse_header, target_from, upstream_create


class Command(BaseCommand):
    help = (
        "Add an upstream MCP server (Streamable HTTP, legacy SSE or stdio). Its tools and prompts appear on /mcp "
        'as PREFIX__NAME. Prints {"name": ..., "prefix": ..., "transport": ...}; credentials are stored '
        "encrypted and never shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="1-31 lower-case letters, digits and dashes (e.g. github).")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--url", help="The upstream's MCP endpoint (http or https).")
        where.add_argument(
            "--command", help='A stdio server to run, e.g. "npx -y @modelcontextprotocol/server-memory".'
        )
        parser.add_argument("--sse", action="store_true", help="The URL is a legacy HTTP+SSE endpoint (2024-11-05).")
        parser.add_argument("--prefix", help='Name prefix (default: NAME); "" exposes the names as they are.')
        parser.add_argument("--groups", nargs="+", default=[], action="extend", help="oauth2-proxy groups allowed.")
        parser.add_argument("--scopes", nargs="+", default=[], action="extend", help="Scopes a token needs.")
        parser.add_argument("--header", action="append", default=[], help='"Name: value" sent on every request.')
        parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for a stdio server.")
        parser.add_argument("--timeout", type=float, default=30.0, help="Seconds per request (default 30).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            target = target_from(url=options["url"], command=options["command"], sse=options["sse"])
            headers = dict(parse_header(h) for h in options["header"])
            env = dict(parse_env(e) for e in options["env"])
            name = options["name"]
            if options["prefix"] == "":
                self._check_unprefixed(name, target, headers, env, options["timeout"])
            upstream = upstream_create(
                name=name,
                target=target,
                prefix=options["prefix"],
                groups=options["groups"],
                scopes=options["scopes"],
                headers=headers,
                env=env,
                timeout=options["timeout"],
                local_tools=reserved_names(),
            )
        except UpstreamInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            json.dumps({"name": upstream.name, "prefix": upstream.prefix, "transport": upstream.transport})
        )

    def _check_unprefixed(
        self, name: str, target: Any, headers: dict[str, str], env: dict[str, str], timeout: float
    ) -> None:
        """An empty prefix: connect once and refuse if any of its names is taken already."""
        config = UpstreamConfig(
            id=0,
            name=name,
            prefix="",
            transport=target.transport,
            url=target.url,
            command=target.command,
            groups=frozenset(),
            scopes=frozenset(),
            timeout=timeout,
            updated_at=timezone.now(),
            headers=headers,
            env=env,
        )
        try:
            catalog = anyio.run(probe, config)
        except Exception as exc:  # any failure to reach it: the names cannot be checked
            raise UpstreamInvalid(
                f'--prefix "": cannot list the upstream\'s names to check them ({describe(exc)})'
            ) from None
        taken = sorted((set(catalog.tools) | set(catalog.prompts)) & exposed_names_elsewhere(exclude=name))
        if taken:
            raise UpstreamInvalid(f'--prefix "": these names are taken already: {", ".join(taken[:10])}')
