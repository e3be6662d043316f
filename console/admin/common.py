"""What several console pages share: token fingerprints, pages that must not be cached."""

from __future__ import annotations

from django.http import HttpResponse

FINGERPRINT_LENGTH = 12


def fingerprint(checksum: str) -> str:
    """A short, non-reversible handle for a token: the start of its SHA-256 checksum."""
    return f"sha256:{checksum[:FINGERPRINT_LENGTH]}…" if checksum else "—"


def no_store(response: HttpResponse) -> HttpResponse:
    """``response``, kept out of every cache (it shows a secret)."""
    response["Cache-Control"] = "no-store"
    return response
