"""``manage.py purge_audit``: audit events past MCPGATE_AUDIT_RETENTION_DAYS go, in small batches, cron-safe."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from audit.services import audit_record

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def events(count: int, *, age: timedelta) -> list[int]:
    """``count`` audit events (an operator's: never throttled), ``age`` old."""
    pks = []
    for n in range(count):
        event = audit_record(event=AuditKind.CLIENT_PURGED, detail={"n": n})
        assert event is not None
        pks.append(event.pk)
    AuditEvent.objects.filter(pk__in=pks).update(created=timezone.now() - age)
    return pks


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_audit", *args, stdout=out)
    return out.getvalue().strip()


@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=30)
def test_events_older_than_the_retention_are_deleted_and_newer_ones_kept() -> None:
    old = events(3, age=30 * DAY + timedelta(minutes=1))
    recent = events(2, age=30 * DAY - timedelta(minutes=1))

    assert purge() == "deleted 3 audit event(s) older than 30 day(s)"

    assert not AuditEvent.objects.filter(pk__in=old).exists()
    assert set(AuditEvent.objects.values_list("pk", flat=True)) == set(recent)


@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=30)
def test_running_it_again_deletes_nothing_more() -> None:
    events(3, age=40 * DAY)
    purge()

    assert purge() == "deleted 0 audit event(s) older than 30 day(s)"


@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=30)
def test_dry_run_counts_and_deletes_nothing() -> None:
    events(4, age=40 * DAY)
    events(1, age=DAY)

    assert purge("--dry-run") == "would delete 4 audit event(s) older than 30 day(s) (dry run)"
    assert AuditEvent.objects.count() == 5


@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=0)
def test_a_retention_of_0_keeps_everything() -> None:
    events(2, age=3650 * DAY)

    assert purge() == "MCPGATE_AUDIT_RETENTION_DAYS is 0: audit events are kept forever; nothing deleted"
    assert AuditEvent.objects.count() == 2


@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=30)
def test_quiet_for_cron_with_verbosity_0() -> None:
    events(1, age=40 * DAY)

    assert purge("-v", "0") == ""
    assert not AuditEvent.objects.exists()


@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=30)
def test_it_deletes_in_batches_of_the_given_size() -> None:
    """No statement deletes more than --batch-size rows: no lock is held for long."""
    events(5, age=40 * DAY)

    with CaptureQueriesContext(connection) as captured:
        assert purge("--batch-size", "2") == "deleted 5 audit event(s) older than 30 day(s)"

    deletes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("DELETE")]
    sizes = [len(re.search(r" IN \(([^)]*)\)", sql).group(1).split(",")) for sql in deletes]  # type: ignore[union-attr]
    assert sizes == [2, 2, 1]


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(CommandError, match=r"--batch-size must be at least 1\."):
        purge("--batch-size", "0")


@pytest.mark.django_db(transaction=True)
@override_settings(MCPGATE_AUDIT_RETENTION_DAYS=30)
def test_two_runs_at_once_and_new_traffic_do_not_get_in_each_others_way() -> None:
    """Cron started twice (or on two hosts) while events keep being written: each old row is
    deleted once, no run fails, nothing new is touched."""
    events(60, age=40 * DAY)
    outputs: list[str] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            outputs.append(purge("--batch-size", "7"))
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    def traffic() -> None:
        try:
            for _ in range(20):
                events(1, age=timedelta(0))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run), threading.Thread(target=run), threading.Thread(target=traffic)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures
    deleted = [int(line.split()[1]) for line in outputs]
    assert len(deleted) == 2 and sum(deleted) == 60
    assert AuditEvent.objects.count() == 20
