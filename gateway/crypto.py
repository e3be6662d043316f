"""Upstream credentials at rest: Fernet (AES-128-CBC + HMAC-SHA256) with MultiFernet key rotation.

The keys are MCPGATE_UPSTREAM_KEYS (settings): the first encrypts, every one decrypts, so a new key
is put first, ``manage.py rotate_upstream_keys`` re-seals every credential with it, and the old key
is dropped afterwards. A value is a JSON object of names to strings (headers, or environment
variables); an empty one is stored as "" so an upstream without credentials needs no key.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class KeyMissing(Exception):
    """Credentials are to be sealed or opened but MCPGATE_UPSTREAM_KEYS is not set."""

    def __init__(self) -> None:
        super().__init__(
            "MCPGATE_UPSTREAM_KEYS is not set: upstream credentials are encrypted with it. Generate one with "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.'
        )


class SealBroken(Exception):
    """A sealed value no configured key opens (the key that sealed it was removed, or the row was altered)."""


def _fernet() -> MultiFernet:
    keys = settings.MCPGATE_UPSTREAM_KEYS
    if not keys:
        raise KeyMissing()
    return MultiFernet([Fernet(key) for key in keys])


def seal(values: dict[str, str]) -> str:
    """``values`` encrypted and authenticated, as text; "" for no values."""
    if not values:
        return ""
    return _fernet().encrypt(json.dumps(values, sort_keys=True).encode()).decode("ascii")


def unseal(token: str) -> dict[str, str]:
    """What ``seal`` sealed."""
    if not token:
        return {}
    try:
        opened = json.loads(_fernet().decrypt(token.encode("ascii")))
    except InvalidToken:
        raise SealBroken("no key in MCPGATE_UPSTREAM_KEYS opens this upstream's credentials") from None
    return {str(k): str(v) for k, v in opened.items()}


def reseal(token: str) -> str:
    """``token`` sealed again with the first key (MultiFernet.rotate); "" stays ""."""
    if not token:
        return ""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise SealBroken("no key in MCPGATE_UPSTREAM_KEYS opens this upstream's credentials") from None
