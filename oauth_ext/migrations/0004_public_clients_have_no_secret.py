"""Public clients keep no secret: blank the one DOT generated and hashed for each existing public client."""

from __future__ import annotations

from django.db import migrations


def public_clients_have_no_secret(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Data only. New public clients get none (Client.clean); this clears the ones made before.

    Nobody ever received those secrets (a public client authenticates with "none"), but each
    was a PBKDF2 hash that any Basic credentials naming the client made the server verify.
    """
    client = apps.get_model("oauth_ext", "Client")
    client.objects.filter(client_type="public").exclude(client_secret="", hash_client_secret=False).update(
        client_secret="", hash_client_secret=False
    )


class Migration(migrations.Migration):
    dependencies = [("oauth_ext", "0003_audit_event_kinds")]
    operations = [migrations.RunPython(public_clients_have_no_secret, migrations.RunPython.noop)]
