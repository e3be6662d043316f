"""Fixtures for the authorization server's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """DOT keeps CIMD fetch back-offs in the cache; no test may see another's."""
    cache.clear()
    yield
    cache.clear()
