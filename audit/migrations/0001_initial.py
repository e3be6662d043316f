"""Move AuditEvent from oauth_ext to audit in Django's state only: the table and its rows stay as they are.

The model keeps ``db_table = "oauth_ext_auditevent"`` and its index names, so nothing is copied or
renamed in the database; oauth_ext 0006 then drops the old model from oauth_ext's state. The
content type is relabelled, so admin log entries and permissions follow the model.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def relabel_content_type(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label="audit", model="auditevent").exists():
        content_types.objects.filter(app_label="oauth_ext", model="auditevent").update(app_label="audit")


def restore_content_type(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label="oauth_ext", model="auditevent").exists():
        content_types.objects.filter(app_label="audit", model="auditevent").update(app_label="oauth_ext")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("oauth_ext", "0005_audit_event_kinds_for_hardening"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        migrations.swappable_dependency(settings.OAUTH2_PROVIDER_APPLICATION_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ("event", models.CharField(choices=[('sign_in', 'signed in'), ('sign_in_refused', 'sign-in refused'), ('register', 'client registered'), ('register_refused', 'registration refused'), ('registration_updated', 'client registration updated'), ('registration_deleted', 'client registration deleted'), ('consent_shown', 'consent page shown'), ('consent_given', 'consent given'), ('consent_refused', 'consent refused'), ('consent_remembered', 'consent remembered'), ('authorize_error', 'authorize error'), ('token_issued', 'token issued'), ('token_refreshed', 'token refreshed'), ('token_error', 'token request refused'), ('token_revoked', 'token revoked'), ('refresh_reuse', 'refresh token reuse detected'), ('code_reuse', 'authorization code reuse detected'), ('client_purged', 'client purged'), ('client_created', 'client created by operator'), ('client_secret_rotated', 'client secret rotated'), ('client_disabled', 'client disabled'), ('client_enabled', 'client enabled'), ('consent_revoked', 'grant revoked'), ('operator_granted', 'operator rights granted'), ('operator_removed', 'operator rights removed'), ('tool_call', 'tool called'), ('rate_limited', 'rate limit reached')], max_length=32)),
                        ("email", models.CharField(blank=True, max_length=255)),
                        ("client_label", models.CharField(blank=True, max_length=255)),
                        ("host", models.CharField(blank=True, max_length=16)),
                        ("ip", models.GenericIPAddressField(blank=True, null=True)),
                        ("detail", models.JSONField(blank=True, default=dict)),
                        ("client", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.OAUTH2_PROVIDER_APPLICATION_MODEL)),
                        ("user", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "db_table": "oauth_ext_auditevent",
                        "ordering": ["-created"],
                        "indexes": [
                            models.Index(fields=["event", "created"], name="oauth_ext_a_event_07392c_idx"),
                            models.Index(fields=["client", "created"], name="oauth_ext_a_client__4f66c9_idx"),
                            models.Index(fields=["user", "created"], name="oauth_ext_a_user_id_103272_idx"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel_content_type, restore_content_type),
    ]
