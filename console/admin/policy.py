"""Policy the operators edit: the redirect URI allowlist."""

from __future__ import annotations

from django.contrib import admin
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from oauth_ext.models import RedirectAllowlistEntry

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()
IDToken = get_id_token_model()


@admin.register(RedirectAllowlistEntry)
class RedirectAllowlistEntryAdmin(admin.ModelAdmin):
    list_display = ("uri", "match", "note", "created")
    search_fields = ("uri", "note")
