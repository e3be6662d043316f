"""``manage.py purge_audit``: delete audit events older than MCPGATE_AUDIT_RETENTION_DAYS, for cron."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit.models import AuditEvent

DEFAULT_BATCH_SIZE = 1000


def audit_events_purge(*, before: datetime, batch_size: int) -> int:
    """Delete the audit events created before ``before``, ``batch_size`` rows per statement; how many went.

    Each batch is its own short transaction (autocommit), so no lock is held for long and traffic
    writing new events goes on meanwhile. Rows are picked by primary key from the ``created``
    index, oldest first; a row another run deleted meanwhile is simply not counted twice, so two
    runs at once delete each row once between them. Rows newer than ``before`` are never touched,
    whatever is written during the run.
    """
    purged = 0
    expired = AuditEvent.objects.filter(created__lt=before).order_by("created", "pk")
    while True:
        batch = list(expired.values_list("pk", flat=True)[:batch_size])
        if not batch:
            return purged
        deleted, _ = AuditEvent.objects.filter(pk__in=batch).delete()
        purged += deleted


class Command(BaseCommand):
    help = (
        "Delete audit events older than MCPGATE_AUDIT_RETENTION_DAYS (0 keeps them forever). Safe to run "
        "from cron, alongside traffic and alongside itself: idempotent, no prompt, deletes in small batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per DELETE statement (default {DEFAULT_BATCH_SIZE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = settings.MCPGATE_AUDIT_RETENTION_DAYS
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        speak = options["verbosity"] >= 1
        if days == 0:
            if speak:
                self.stdout.write("MCPGATE_AUDIT_RETENTION_DAYS is 0: audit events are kept forever; nothing deleted")
            return
        before = timezone.now() - timedelta(days=days)
        if options["dry_run"]:
            count = AuditEvent.objects.filter(created__lt=before).count()
            if speak:
                self.stdout.write(f"would delete {count} audit event(s) older than {days} day(s) (dry run)")
            return
        purged = audit_events_purge(before=before, batch_size=options["batch_size"])
        if speak:
            self.stdout.write(f"deleted {purged} audit event(s) older than {days} day(s)")
