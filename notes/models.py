"""A note belongs to one person and is only ever read back by them."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

MAX_NOTE_LENGTH = 2000


class Note(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notes")
    text = models.TextField(error_messages={"blank": "A note cannot be empty."})
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.text[:60]

    def clean(self) -> None:
        if len(self.text) > MAX_NOTE_LENGTH:
            raise ValidationError({"text": f"A note can be at most {MAX_NOTE_LENGTH} characters."})
