"""AuditEvent now lives in the audit app (audit 0001): drop it from oauth_ext's state, keep the table."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("oauth_ext", "0005_audit_event_kinds_for_hardening"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditEvent")],
            database_operations=[],
        ),
    ]
