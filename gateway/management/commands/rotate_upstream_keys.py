"""``manage.py rotate_upstream_keys``: re-seal every upstream credential, assertion key and person's upstream token
with the first key."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gateway.crypto import KeyMissing, SealBroken, reseal
from gateway.models import AssertionKey, Connection, Upstream


class Command(BaseCommand):
    help = (
        "Re-encrypt upstream credentials with the first key of MCPGATE_UPSTREAM_KEYS. Put the new key first, "
        "keep the old one after it, run this, then remove the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        try:
            with transaction.atomic():
                for upstream in Upstream.objects.select_for_update().order_by("pk"):
                    upstream.sealed_headers = reseal(upstream.sealed_headers)
                    upstream.sealed_env = reseal(upstream.sealed_env)
                    # update(), not save(): the credentials are the same, so workers need not reconnect.
                    Upstream.objects.filter(pk=upstream.pk).update(
                        sealed_headers=upstream.sealed_headers, sealed_env=upstream.sealed_env
                    )
                    count += 1
                # The identity assertion signing keys are sealed with the same keys (gateway.assertions).
                for key in AssertionKey.objects.select_for_update().order_by("pk"):
                    AssertionKey.objects.filter(pk=key.pk).update(sealed_private_key=reseal(key.sealed_private_key))
                    count += 1
                # And the people's own tokens at per-person upstreams (gateway.connections).
                for connection in Connection.objects.select_for_update().order_by("pk").only("sealed_credential"):
                    Connection.objects.filter(pk=connection.pk).update(
                        sealed_credential=reseal(connection.sealed_credential)
                    )
                    count += 1
        except (KeyMissing, SealBroken) as exc:
            raise CommandError(f"{exc}; nothing was changed") from None
        self.stdout.write(json.dumps({"resealed": count}))
