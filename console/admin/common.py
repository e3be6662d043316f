"""What several console pages share: token fingerprints, pages that must not be cached, read-only lists."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

FINGERPRINT_LENGTH = 12


def fingerprint(checksum: str) -> str:
    """A short, non-reversible handle for a token: the start of its SHA-256 checksum."""
    return f"sha256:{checksum[:FINGERPRINT_LENGTH]}…" if checksum else "—"


def no_store(response: HttpResponse) -> HttpResponse:
    """``response``, kept out of every cache (it shows a secret)."""
    response["Cache-Control"] = "no-store"
    return response


class ReadOnlyAdmin(admin.ModelAdmin):
    """A model the console shows but nobody adds, edits or deletes there: its rows change only through
    their services (audited), or are evidence (the audit trail)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
