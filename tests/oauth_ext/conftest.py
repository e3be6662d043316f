"""Fixtures for the authorization server's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def fast_secret_hashing(settings: Any) -> None:
    """Client secrets are hashed with the first of PASSWORD_HASHERS; PBKDF2 costs ~0.3 s a client.

    Hashing still happens (and is checked); production's hasher is asserted in test_token.py.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """DOT keeps CIMD fetch back-offs in the cache; no test may see another's."""
    cache.clear()
    yield
    cache.clear()
