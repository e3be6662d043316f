"""Seed the redirect URI allowlist with the known MCP clients' cloud callbacks."""

from __future__ import annotations

from django.db import migrations


def seed(apps, schema_editor):  # type: ignore[no-untyped-def]
    from oauth_ext.redirects import KNOWN_CLIENT_CALLBACKS

    entry = apps.get_model("oauth_ext", "RedirectAllowlistEntry")
    for uri, match, note in KNOWN_CLIENT_CALLBACKS:
        entry.objects.get_or_create(uri=uri, defaults={"match": match, "note": note})


class Migration(migrations.Migration):
    dependencies = [("oauth_ext", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
