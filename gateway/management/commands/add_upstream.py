"""``manage.py add_upstream``: put an MCP server behind mcpgate; prints one JSON object."""

from __future__ import annotations

import json
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.hooks import reserved_names
from gateway.models import Credential, Transport
from gateway.services import (
    OAuthSettings,
    UpstreamInvalid,
    oauth_settings,
    parse_env,
    parse_header,
    target_from,
    upstream_check_unprefixed,
    upstream_create,
)


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
        parser.add_argument(
            "--identity-assertion",
            metavar="HEADER",
            default="",
            help="Streamable HTTP: send in HEADER, on each call made for a person, a signed 60-second JWT "
            "naming them (verify it against /.well-known/jwks.json).",
        )
        whose = parser.add_mutually_exclusive_group()
        whose.add_argument(
            "--per-person-oauth",
            action="store_true",
            help="Streamable HTTP: each person connects their own account at /connect/NAME/ by signing in at the "
            "upstream's OAuth server; register https://HOST/connect/NAME/callback there.",
        )
        parser.add_argument(
            "--client-id",
            default="",
            help="With --per-person-oauth: mcpgate's client id there. Omitted: mcpgate registers itself (RFC 7591) "
            "where the server offers registration.",
        )
        parser.add_argument(
            "--client-secret-env",
            metavar="VAR",
            default="",
            help="With --per-person-oauth: an environment variable holding the client secret (stored encrypted, "
            "never printed). Omitted: a public client (PKCE only).",
        )
        parser.add_argument("--authorization-url", default="", help="Default: discovered (RFC 9728, RFC 8414).")
        parser.add_argument("--token-url", default="", help="Default: discovered (RFC 9728, RFC 8414).")
        parser.add_argument(
            "--upstream-scopes", nargs="+", default=[], action="extend", help="Scopes to ask the upstream's server for."
        )
        whose.add_argument(
            "--per-person-token",
            action="store_true",
            help="Streamable HTTP: each person pastes a token of their own at /connect/NAME/, sent on their calls "
            "as Authorization: Bearer (stored encrypted).",
        )
        parser.add_argument(
            "--token-pattern",
            metavar="REGEX",
            default="",
            help="With --per-person-token: a regular expression a pasted token must match in full, "
            r"e.g. 'lin_api_[A-Za-z0-9]{40}'.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            target = target_from(url=options["url"], command=options["command"], sse=options["sse"])
            headers = dict(parse_header(h) for h in options["header"])
            env = dict(parse_env(e) for e in options["env"])
            name = options["name"]
            credential = Credential.SHARED
            if options["per_person_token"]:
                credential = Credential.PERSON_TOKEN
            elif options["per_person_oauth"]:
                credential = Credential.PERSON_OAUTH
            oauth = None
            if credential is Credential.PERSON_OAUTH and target.transport == Transport.STREAMABLE_HTTP:
                oauth = self._oauth(options, name=name, url=target.url)
            elif credential is not Credential.PERSON_OAUTH:
                for option in ("client_id", "client_secret_env", "authorization_url", "token_url", "upstream_scopes"):
                    if options[option]:
                        flag = "--" + option.replace("_", "-")
                        raise UpstreamInvalid(f"{flag}: applies with --per-person-oauth")
            if options["prefix"] == "":
                upstream_check_unprefixed(
                    name=name,
                    target=target,
                    headers=headers,
                    env=env,
                    timeout=options["timeout"],
                    credential=credential,
                )
            upstream = upstream_create(
                name=name,
                target=target,
                prefix=options["prefix"],
                groups=options["groups"],
                scopes=options["scopes"],
                headers=headers,
                env=env,
                timeout=options["timeout"],
                identity_assertion_header=options["identity_assertion"],
                credential=credential,
                token_pattern=options["token_pattern"],
                oauth=oauth,
                local_tools=reserved_names(),
            )
        except UpstreamInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            json.dumps({"name": upstream.name, "prefix": upstream.prefix, "transport": upstream.transport})
        )

    @staticmethod
    def _oauth(options: dict[str, Any], *, name: str, url: str) -> OAuthSettings:
        """The OAuth client options, the secret read from the variable ``--client-secret-env`` names."""
        variable = options["client_secret_env"]
        secret = ""
        if variable:
            if variable not in os.environ:
                raise UpstreamInvalid(f"--client-secret-env {variable[:60]}: that environment variable is not set")
            secret = os.environ[variable]
        return oauth_settings(
            name=name,
            url=url,
            client_id=options["client_id"],
            client_secret=secret,
            authorization_url=options["authorization_url"],
            token_url=options["token_url"],
            scopes=options["upstream_scopes"],
        )
