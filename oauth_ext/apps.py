"""App configuration for oauth_ext."""

from __future__ import annotations

from django.apps import AppConfig


class OAuthExtConfig(AppConfig):
    name = "oauth_ext"
    verbose_name = "Authorization server"
    default_auto_field = "django.db.models.BigAutoField"
