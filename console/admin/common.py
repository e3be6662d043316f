"""Helpers every console page shares: event labels, token fingerprints, no-store pages."""

from __future__ import annotations

from django.http import HttpResponse
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from audit.models import AuditKind

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()
IDToken = get_id_token_model()


FINGERPRINT_LENGTH = 12


def event_label(event: str) -> str:
    return str(dict(AuditKind.choices).get(event) or event)


def fingerprint(checksum: str) -> str:
    """A short, non-reversible handle for a token: the start of its SHA-256 checksum."""
    return f"sha256:{checksum[:FINGERPRINT_LENGTH]}…" if checksum else "—"


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response
