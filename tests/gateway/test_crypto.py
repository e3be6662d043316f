"""gateway.crypto: upstream credentials are sealed with the first MCPGATE_UPSTREAM_KEYS key and opened by any."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet

from gateway.crypto import KeyMissing, SealBroken, reseal, seal, unseal

SECRET = {"Authorization": "Bearer upstream-secret-0123456789", "X-Api-Key": "key-9876543210"}


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_a_sealed_value_opens_to_what_was_sealed(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    assert unseal(seal(SECRET)) == SECRET


def test_the_sealed_text_never_contains_a_name_or_value(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    sealed = seal(SECRET)
    for text in [*SECRET, *SECRET.values(), "upstream-secret"]:
        assert text not in sealed


def test_no_values_are_stored_as_empty_text_and_need_no_key(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    assert seal({}) == ""
    assert unseal("") == {}
    assert reseal("") == ""


def test_a_value_sealed_with_an_old_key_opens_while_the_old_key_follows_the_new(settings: Any) -> None:
    old, new = new_key(), new_key()
    settings.MCPGATE_UPSTREAM_KEYS = [old]
    sealed = seal(SECRET)
    settings.MCPGATE_UPSTREAM_KEYS = [new, old]
    assert unseal(sealed) == SECRET


def test_a_resealed_value_opens_with_the_new_key_alone(settings: Any) -> None:
    old, new = new_key(), new_key()
    settings.MCPGATE_UPSTREAM_KEYS = [old]
    sealed = seal(SECRET)
    settings.MCPGATE_UPSTREAM_KEYS = [new, old]
    resealed = reseal(sealed)
    settings.MCPGATE_UPSTREAM_KEYS = [new]
    assert unseal(resealed) == SECRET
    with pytest.raises(SealBroken):
        unseal(sealed)


def test_a_value_no_configured_key_opens_is_a_broken_seal(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    sealed = seal(SECRET)
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    with pytest.raises(SealBroken) as broken:
        unseal(sealed)
    assert str(broken.value) == "no key in MCPGATE_UPSTREAM_KEYS opens this upstream's credentials"
    with pytest.raises(SealBroken) as broken:
        reseal(sealed)
    assert str(broken.value) == "no key in MCPGATE_UPSTREAM_KEYS opens this upstream's credentials"


def test_an_altered_sealed_value_is_a_broken_seal(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    sealed = seal(SECRET)
    altered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealBroken):
        unseal(altered)


def test_sealing_values_without_a_key_says_how_to_make_one(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    with pytest.raises(KeyMissing) as missing:
        seal(SECRET)
    assert str(missing.value).startswith(
        "MCPGATE_UPSTREAM_KEYS is not set: upstream credentials are encrypted with it."
    )
    assert "Fernet.generate_key()" in str(missing.value)


def test_opening_values_without_a_key_is_a_missing_key(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    sealed = seal(SECRET)
    settings.MCPGATE_UPSTREAM_KEYS = []
    with pytest.raises(KeyMissing):
        unseal(sealed)
    with pytest.raises(KeyMissing):
        reseal(sealed)
