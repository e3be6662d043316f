"""App configuration for the notes example."""

from __future__ import annotations

from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "notes"
    verbose_name = "Notes (example tools)"
    default_auto_field = "django.db.models.BigAutoField"
