"""The audit writer takes only AuditKind members: a misspelt kind cannot be stored and vanish from the timelines."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent, AuditKind
from audit.services import audit_record

pytestmark = pytest.mark.django_db


def test_a_bare_string_is_refused_and_nothing_is_written() -> None:
    with pytest.raises(TypeError, match="audit_record needs an AuditKind, not 'tool_cal'"):
        audit_record(event="tool_cal")  # type: ignore[arg-type]
    assert not AuditEvent.objects.exists()


def test_a_kind_is_stored_as_its_value() -> None:
    audit_record(event=AuditKind.CONSENT_GIVEN, detail={"scope": "mcp"})
    assert AuditEvent.objects.values_list("event", flat=True).get() == "consent_given"
