"""Writes and reads of notes, always scoped to one person."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from .models import Note


def note_add(*, user: Any, text: str) -> Note:
    note = Note(user=user, text=text.strip())
    note.full_clean(exclude=["user"])
    note.save()
    return note


def notes_for(*, user: Any, limit: int) -> QuerySet[Note]:
    return Note.objects.filter(user=user)[:limit]
