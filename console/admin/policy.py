"""Policy the operators edit: the redirect URI allowlist."""

from __future__ import annotations

from django.contrib import admin

from oauth_ext.models import RedirectAllowlistEntry


@admin.register(RedirectAllowlistEntry)
class RedirectAllowlistEntryAdmin(admin.ModelAdmin):
    list_display = ("uri", "match", "note", "created")
    search_fields = ("uri", "note")
