"""``manage.py create_client``: an operator-made OAuth client, printed as one JSON object."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from oauth_ext.services import client_create


class Command(BaseCommand):
    help = (
        "Create an OAuth client (e.g. for Gemini Enterprise or Cursor Cloud Agents). Prints "
        '{"client_id": ..., "client_secret": ...}; the secret is shown only this once.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Name shown on the consent page.")
        parser.add_argument(
            "--redirect-uri",
            dest="redirect_uris",
            action="append",
            required=True,
            help="Allowed redirect URI (repeatable): loopback, or on the redirect allowlist.",
        )
        parser.add_argument("--confidential", action="store_true", help="Issue a client secret (server-side clients).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            client, secret = client_create(
                name=options["name"], redirect_uris=options["redirect_uris"], confidential=options["confidential"]
            )
        except ValidationError as exc:
            messages = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            raise CommandError(messages) from None
        result = {"client_id": client.client_id}
        if secret:
            result["client_secret"] = secret
        self.stdout.write(json.dumps(result))
