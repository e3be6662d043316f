"""The audit trail moved from oauth_ext to its own app without touching a row of a database made before."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.models import AuditEvent, AuditKind
from tests.personas import ALICE, BOB

BEFORE = [("oauth_ext", "0005_audit_event_kinds_for_hardening")]


def migrate(targets: list[tuple[str, str | None]]) -> Any:
    """Migrate to ``targets``; the models as they were at oauth_ext 0005 (before the move)."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(BEFORE[0], at_end=True).apps


@pytest.mark.django_db(transaction=True)
def test_rows_written_by_the_old_model_are_read_by_the_audit_app_after_migrating() -> None:
    old_apps = migrate([("audit", None), *BEFORE])
    old_model = old_apps.get_model("oauth_ext", "AuditEvent")
    old_type = ContentType.objects.get_or_create(app_label="oauth_ext", model="auditevent")[0]
    ContentType.objects.filter(app_label="audit", model="auditevent").delete()
    row = old_model.objects.create(event="tool_call", email=ALICE, detail={"tool": "whoami"})

    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    migrate(latest)

    moved = AuditEvent.objects.get(pk=row.pk)
    assert (moved.event, moved.email, moved.detail) == (AuditKind.TOOL_CALL, ALICE, {"tool": "whoami"})
    # Admin log entries and permissions follow the model: the content type was relabelled, not replaced.
    assert ContentType.objects.get(pk=old_type.pk).app_label == "audit"
    assert not ContentType.objects.filter(app_label="oauth_ext", model="auditevent").exists()
    # And the table is the same one: new rows land beside the old.
    AuditEvent.objects.create(event=AuditKind.SIGN_IN)
    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_move_can_be_unapplied_and_the_rows_stay() -> None:
    AuditEvent.objects.create(event=AuditKind.SIGN_IN, email=BOB)
    ContentType.objects.get_for_model(AuditEvent)
    old_apps = migrate([("audit", None), *BEFORE])
    assert old_apps.get_model("oauth_ext", "AuditEvent").objects.get().email == BOB
    assert ContentType.objects.filter(app_label="oauth_ext", model="auditevent").exists()
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert AuditEvent.objects.get().email == BOB
