"""``manage.py rotate_assertion_key``: a new key for identity assertions, published before it signs."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.assertions import PUBLISH_AHEAD, RETIRED_KEPT, assertion_key_rotate, published_key_set
from gateway.crypto import KeyMissing


class Command(BaseCommand):
    help = (
        "Make a new key for signing identity assertions (upstreams' --identity-assertion). It is published in "
        "/.well-known/jwks.json at once and signs from --activate-in seconds on, when the current key stops "
        f"signing; that one stays published {int(RETIRED_KEPT.total_seconds() // 60)} minutes more. Prints the "
        "new key id, when it signs, and the key ids published."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--activate-in",
            type=float,
            default=PUBLISH_AHEAD.total_seconds(),
            metavar="SECONDS",
            help=f"How long the new key is published before it signs (default {PUBLISH_AHEAD.total_seconds():g}: "
            "longer than verifiers cache the key set).",
        )
        parser.add_argument(
            "--now",
            action="store_true",
            help="For a key believed compromised: the new key signs at once and every other key leaves the key "
            "set at once (verifiers with a cached key set may refuse assertions until they fetch it again).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        activate_in = options["activate_in"]
        if not 0 <= activate_in <= 7 * 24 * 3600:
            raise CommandError(f"--activate-in must be 0 to 604800 seconds, not {activate_in:g}")
        try:
            key = assertion_key_rotate(now=options["now"], activate_in=timedelta(seconds=activate_in))
        except KeyMissing as exc:
            raise CommandError(str(exc)) from None
        published = [jwk["kid"] for jwk in published_key_set()["keys"]]
        self.stdout.write(
            json.dumps({"kid": key.kid, "activates_at": key.activates_at.isoformat(), "published": published})
        )
