"""mcpgate.env readers of the gateway's settings: upstream keys, extra scopes and seconds, refused loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from mcpgate.env import envfernetkeys, envfloat, envscopes
from tests.mcpgate.test_settings import MINIMAL, refusal, settings_of

KEYS = "MCPGATE_UPSTREAM_KEYS"
SCOPES = "MCPGATE_EXTRA_SCOPES"
SCOPE_EXAMPLE = "(e.g. db:read=Read the databases; db:write=Change them)"


def new_key() -> str:
    return Fernet.generate_key().decode()


def not_a_key(position: int) -> str:
    return (
        f"{KEYS}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes, as Fernet.generate_key() makes)"
    )


# ---------------------------------------------------------------------------
# MCPGATE_UPSTREAM_KEYS
# ---------------------------------------------------------------------------
def test_unset_upstream_keys_are_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS, raising=False)
    monkeypatch.delenv(f"{KEYS}_FILE", raising=False)
    assert envfernetkeys(KEYS) == []


@pytest.mark.parametrize("separator", [",", " ", ", ", " ,\n "], ids=["comma", "space", "both", "messy"])
def test_upstream_keys_are_separated_by_commas_and_or_whitespace(
    monkeypatch: pytest.MonkeyPatch, separator: str
) -> None:
    first, second = new_key(), new_key()
    monkeypatch.setenv(KEYS, f" {first}{separator}{second} ")
    assert envfernetkeys(KEYS) == [first, second]


def test_upstream_keys_may_come_from_a_file_which_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = new_key()
    (tmp_path / "keys").write_text(key + "\n")
    monkeypatch.setenv(KEYS, new_key())
    monkeypatch.setenv(f"{KEYS}_FILE", str(tmp_path / "keys"))
    assert envfernetkeys(KEYS) == [key]


@pytest.mark.parametrize(
    "bad",
    ["not-a-fernet-key", "c2hvcnQ=", new_key()[:-2], "!" * 44],
    ids=["word", "too-short", "truncated", "not-base64"],
)
def test_a_bad_upstream_key_is_refused_by_position_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv(KEYS, f"{new_key()}, {bad}")
    with pytest.raises(ImproperlyConfigured) as refused:
        envfernetkeys(KEYS)
    assert str(refused.value) == not_a_key(2)
    assert bad not in str(refused.value)


def test_the_first_bad_upstream_key_is_the_one_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS, f"wrong-one {new_key()} wrong-three")
    with pytest.raises(ImproperlyConfigured) as refused:
        envfernetkeys(KEYS)
    assert str(refused.value) == not_a_key(1)


def test_a_bad_upstream_key_stops_the_settings_loading() -> None:
    secretish = "s3cret-looking-but-not-a-key"
    message = refusal({**MINIMAL, KEYS: secretish})
    assert message == not_a_key(1)
    assert secretish not in message


def test_the_settings_hold_the_upstream_keys_in_order() -> None:
    first, second = new_key(), new_key()
    assert settings_of({**MINIMAL, KEYS: f"{first},{second}"}, KEYS) == {KEYS: [first, second]}


# ---------------------------------------------------------------------------
# MCPGATE_EXTRA_SCOPES
# ---------------------------------------------------------------------------
def test_unset_extra_scopes_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCOPES, raising=False)
    assert envscopes(SCOPES) == {}


def test_extra_scopes_are_name_equals_description_separated_by_semicolons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCOPES, " a=Read the A things ; b:c = Change C=everything ;")
    assert envscopes(SCOPES) == {"a": "Read the A things", "b:c": "Change C=everything"}


@pytest.mark.parametrize(
    "item",
    ["nodescription", "a=", "=Something", "a b=Two words", 'a"b=A quote', "a\\b=A backslash"],
    ids=["no-equals", "empty-description", "empty-name", "space-in-name", "quote-in-name", "backslash-in-name"],
)
def test_an_extra_scope_that_is_not_name_equals_description_is_refused(
    monkeypatch: pytest.MonkeyPatch, item: str
) -> None:
    monkeypatch.setenv(SCOPES, f"good=Fine; {item} ")
    with pytest.raises(ImproperlyConfigured) as refused:
        envscopes(SCOPES)
    assert str(refused.value) == f"{SCOPES}: {item!r} is not scope=description {SCOPE_EXAMPLE}"


def test_the_settings_offer_the_extra_scopes_after_mcp() -> None:
    scopes = settings_of({**MINIMAL, SCOPES: "db:read=Read the databases"}, "MCPGATE_SCOPES")["MCPGATE_SCOPES"]
    assert scopes == {"mcp": "Use the organisation's MCP tools as you", "db:read": "Read the databases"}


# ---------------------------------------------------------------------------
# Seconds (MCPGATE_UPSTREAM_POLL_SECONDS and friends)
# ---------------------------------------------------------------------------
def test_an_unset_number_is_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCPGATE_SECONDS", raising=False)
    assert envfloat("MCPGATE_SECONDS", 2.0, minimum=0.1) == 2.0


@pytest.mark.parametrize(("value", "number"), [(" 2.5 ", 2.5), ("3", 3.0), ("0.1", 0.1), ("1e2", 100.0)])
def test_a_number_is_read_as_written(monkeypatch: pytest.MonkeyPatch, value: str, number: float) -> None:
    monkeypatch.setenv("MCPGATE_SECONDS", value)
    assert envfloat("MCPGATE_SECONDS", 2.0, minimum=0.1) == number


@pytest.mark.parametrize("value", ["", "fast", "2s", "1,5"])
def test_anything_but_a_number_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_SECONDS", value)
    with pytest.raises(ImproperlyConfigured) as refused:
        envfloat("MCPGATE_SECONDS", 2.0, minimum=0.1)
    assert str(refused.value) == f"MCPGATE_SECONDS must be a number, not {value!r}"


@pytest.mark.parametrize("value", ["0.05", "0", "-1", "nan"])
def test_a_number_below_the_minimum_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_SECONDS", value)
    with pytest.raises(ImproperlyConfigured) as refused:
        envfloat("MCPGATE_SECONDS", 2.0, minimum=0.1)
    assert str(refused.value) == f"MCPGATE_SECONDS must be at least 0.1, not {value}"


def test_a_poll_interval_below_its_minimum_stops_the_settings_loading() -> None:
    assert refusal({**MINIMAL, "MCPGATE_UPSTREAM_POLL_SECONDS": "0"}) == (
        "MCPGATE_UPSTREAM_POLL_SECONDS must be at least 0.1, not 0"
    )
