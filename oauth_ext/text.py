"""Text checks the authorization server shares: NUL characters, which no database column can hold."""

from __future__ import annotations

from collections.abc import Iterable

NUL = "\x00"


def contains_nul(values: Iterable[str]) -> bool:
    """True if any value holds a NUL (PostgreSQL refuses it in text and jsonb, SQLite truncates at it)."""
    return any(NUL in value for value in values)
