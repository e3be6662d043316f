"""Each access token's /mcp requests in its rate-limit window (mcp_bridge.models.TokenCalls), UNLOGGED on PostgreSQL."""

import django.db.models.deletion
from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings

TABLE = "mcp_bridge_tokencalls"


def unlogged(apps, schema_editor):
    # Counts need no WAL record, no flush at commit and no replica (docs: CREATE TABLE … UNLOGGED).
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} SET UNLOGGED")


def logged(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} SET LOGGED")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(oauth2_settings.ACCESS_TOKEN_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="TokenCalls",
            fields=[
                (
                    "token",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to=oauth2_settings.ACCESS_TOKEN_MODEL,
                    ),
                ),
                ("window_end", models.BigIntegerField()),
                ("calls", models.IntegerField()),
            ],
            options={
                "verbose_name": "token's /mcp calls in its window",
                "verbose_name_plural": "tokens' /mcp calls in their windows",
            },
        ),
        migrations.RunPython(unlogged, logged),
    ]
