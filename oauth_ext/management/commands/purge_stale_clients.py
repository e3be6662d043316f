"""``manage.py purge_stale_clients --days N``: delete self-registered clients never used, for cron."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from oauth_ext.services import clients_purge_unused


class Command(BaseCommand):
    help = (
        "Delete clients that registered themselves (dynamic registration or a metadata document), are older "
        "than --days and never obtained a token. Operator-made clients are never purged. Safe to run from "
        "cron: idempotent, no prompt, a client with a sign-in under way is kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, required=True, help="Minimum age in days (at least 1).")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days < 1:
            raise CommandError("--days must be at least 1.")
        purged = clients_purge_unused(older_than=timedelta(days=days))
        if options["verbosity"] >= 1:
            self.stdout.write(f"purged {purged} unused client(s) older than {days} day(s)")
