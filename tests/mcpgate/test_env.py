"""mcpgate.env: each reader accepts what people write and refuses anything else, naming the variable."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from mcpgate.env import envbool, envchoice, envdatabase, envint, envlist, envnetworks, load_env_file

SQLITE = "/var/lib/mcpgate/db.sqlite3"


# ---------------------------------------------------------------------------
# Booleans
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "yes", "Yes", "on", "ON", " true ", "\tyes\n"])
def test_a_true_boolean_is_read_in_every_usual_spelling(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_FLAG", value)
    assert envbool("MCPGATE_FLAG", False) is True


@pytest.mark.parametrize("value", ["false", "False", "FALSE", "0", "no", "No", "off", "OFF", " false "])
def test_a_false_boolean_is_read_in_every_usual_spelling(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_FLAG", value)
    assert envbool("MCPGATE_FLAG", True) is False


@pytest.mark.parametrize("default", [True, False])
def test_an_unset_boolean_is_its_default(monkeypatch: pytest.MonkeyPatch, default: bool) -> None:
    monkeypatch.delenv("MCPGATE_FLAG", raising=False)
    assert envbool("MCPGATE_FLAG", default) is default


@pytest.mark.parametrize("value", ["", "maybe", "2", "y", "t", "enabled", "true!"])
def test_anything_else_is_not_a_boolean(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_FLAG", value)
    with pytest.raises(ImproperlyConfigured) as refused:
        envbool("MCPGATE_FLAG", False)
    assert str(refused.value) == f"MCPGATE_FLAG must be true or false (or 1/0, yes/no, on/off), not {value!r}"


# ---------------------------------------------------------------------------
# Numbers, choices, lists, networks
# ---------------------------------------------------------------------------
def test_an_integer_may_have_surrounding_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGATE_N", " 42 ")
    assert envint("MCPGATE_N", 1) == 42


def test_an_integer_default_is_held_to_its_minimum_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCPGATE_N", raising=False)
    with pytest.raises(ImproperlyConfigured, match=r"^MCPGATE_N must be at least 5, not 1$"):
        envint("MCPGATE_N", 1, minimum=5)


@pytest.mark.parametrize("value", ["json", "JSON", " Json "])
def test_a_choice_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_LOG_FORMAT", value)
    assert envchoice("MCPGATE_LOG_FORMAT", "text", choices=("text", "json")) == "json"


def test_a_choice_outside_the_choices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGATE_LOG_FORMAT", "xml")
    with pytest.raises(ImproperlyConfigured) as refused:
        envchoice("MCPGATE_LOG_FORMAT", "text", choices=("text", "json"))
    assert str(refused.value) == "MCPGATE_LOG_FORMAT must be text or json, not 'xml'"


@pytest.mark.parametrize(
    "value", ["a b c", "a,b,c", "a, b, c", " a ,, b\n c ", "a\tb,c"], ids=["spaces", "commas", "both", "messy", "tab"]
)
def test_a_list_is_separated_by_commas_and_or_whitespace(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MCPGATE_ITEMS", value)
    assert envlist("MCPGATE_ITEMS") == ["a", "b", "c"]


def test_an_empty_network_list_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGATE_METRICS_NETWORKS", "")
    assert envnetworks("MCPGATE_METRICS_NETWORKS", "127.0.0.0/8") == []


def test_networks_accept_addresses_and_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGATE_METRICS_NETWORKS", "10.0.0.7, 192.168.1.5/24 ::1")
    assert envnetworks("MCPGATE_METRICS_NETWORKS") == [
        ipaddress.ip_network("10.0.0.7/32"),
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("::1/128"),
    ]


# ---------------------------------------------------------------------------
# Database URLs (dj-database-url)
# ---------------------------------------------------------------------------
def database(monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, object]:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("DATABASE_URL_FILE", raising=False)
    monkeypatch.delenv("MCPGATE_DB_CONN_MAX_AGE", raising=False)
    monkeypatch.delenv("MCPGATE_DB_POOL_SIZE", raising=False)
    return envdatabase("DATABASE_URL", sqlite_path=SQLITE)


# Django's PostgreSQL connection pool (psycopg_pool), per worker, as mcpgate.env configures it.
POOL = {"min_size": 1, "max_size": 8, "timeout": 2, "reconnect_timeout": 2}
PREPARED = {"server_side_binding": True, "prepare_threshold": 5}

SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def test_an_unset_database_url_is_sqlite_at_the_configured_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database(monkeypatch, "") == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE,
        "TEST": {"NAME": SQLITE + "-test"},
        "CONN_MAX_AGE": 60,
        "OPTIONS": SQLITE_OPTIONS,
    }


def test_a_sqlite_url_with_four_slashes_is_an_absolute_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database(monkeypatch, "sqlite:////srv/mcpgate/db.sqlite3") == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/srv/mcpgate/db.sqlite3",
        "TEST": {"NAME": "/srv/mcpgate/db.sqlite3-test"},
        "CONN_MAX_AGE": 60,
        "OPTIONS": SQLITE_OPTIONS,
    }


def test_a_sqlite_url_with_three_slashes_is_relative_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = database(monkeypatch, "sqlite:///data/db.sqlite3")
    assert (config["NAME"], config["TEST"]) == ("data/db.sqlite3", {"NAME": "data/db.sqlite3-test"})


def test_sqlite_query_parameters_override_the_sqlite_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database(monkeypatch, "sqlite:////srv/db.sqlite3?timeout=5")["OPTIONS"] == {**SQLITE_OPTIONS, "timeout": 5}


def test_a_postgres_url_is_decoded_including_percent_escaped_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database(monkeypatch, "postgres://mcp%2Buser:p%40ss%3Aw%2Fd@db.internal:5433/mcp%2Dgate") == {
        "ENGINE": "mcpgate.postgresql",
        "NAME": "mcp-gate",
        "USER": "mcp+user",
        "PASSWORD": "p@ss:w/d",
        "HOST": "db.internal",
        "PORT": "5433",
        "OPTIONS": {**PREPARED, "pool": POOL},
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
    }


def test_a_socket_directory_in_the_query_becomes_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    config = database(monkeypatch, "postgresql://mcpgate@/mcpgate?host=%2Frun%2Fpg&sslmode=disable")
    assert (config["HOST"], config["PORT"], config["OPTIONS"]) == (
        "/run/pg",
        "",
        {"sslmode": "disable", **PREPARED, "pool": POOL},
    )


def test_postgres_query_parameters_are_psycopg_options_with_numbers_as_integers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://u@db/mcpgate?sslmode=require&prepare_threshold=2&options=-c%20statement_timeout%3D5000"
    assert database(monkeypatch, url)["OPTIONS"] == {
        "sslmode": "require",
        "prepare_threshold": 2,
        "options": "-c statement_timeout=5000",
        "server_side_binding": True,
        "pool": POOL,
    }


@pytest.mark.parametrize("written", ["false", "False", " FALSE "])
def test_server_side_binding_can_be_turned_off_in_the_url(monkeypatch: pytest.MonkeyPatch, written: str) -> None:
    """Behind a pooler in transaction mode: client-side binding, so nothing is prepared."""
    url = f"postgresql://u@db/mcpgate?server_side_binding={written.replace(' ', '%20')}"
    assert database(monkeypatch, url)["OPTIONS"] == {"pool": POOL}


def test_server_side_binding_that_is_not_a_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@db/mcpgate?server_side_binding=maybe")
    with pytest.raises(ImproperlyConfigured) as raised:
        envdatabase("DATABASE_URL", sqlite_path=SQLITE)
    assert str(raised.value) == "DATABASE_URL: server_side_binding must be true or false"


def test_the_connection_age_setting_applies_to_urls_without_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/mcpgate")
    monkeypatch.setenv("MCPGATE_DB_CONN_MAX_AGE", "30")
    monkeypatch.setenv("MCPGATE_DB_POOL_SIZE", "0")
    config = envdatabase("DATABASE_URL", sqlite_path=SQLITE)
    assert (config["CONN_MAX_AGE"], config["OPTIONS"]) == (30, PREPARED)


def test_the_pool_size_bounds_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/mcpgate")
    monkeypatch.setenv("MCPGATE_DB_POOL_SIZE", "3")
    assert envdatabase("DATABASE_URL", sqlite_path=SQLITE)["OPTIONS"]["pool"]["max_size"] == 3


def test_persistent_connections_and_the_pool_are_refused_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/mcpgate")
    monkeypatch.setenv("MCPGATE_DB_CONN_MAX_AGE", "30")
    monkeypatch.delenv("MCPGATE_DB_POOL_SIZE", raising=False)
    with pytest.raises(ImproperlyConfigured) as refused:
        envdatabase("DATABASE_URL", sqlite_path=SQLITE)
    assert str(refused.value) == (
        "MCPGATE_DB_CONN_MAX_AGE must be 0 with the connection pool; set MCPGATE_DB_POOL_SIZE=0 to use "
        "persistent per-thread connections instead"
    )


def test_a_database_url_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "database_url"
    path.write_text("postgresql://mcp:s3cret@db/mcpgate\n")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", str(path))
    assert envdatabase("DATABASE_URL", sqlite_path=SQLITE)["PASSWORD"] == "s3cret"


@pytest.mark.parametrize(
    ("url", "scheme"), [("mysql://db/mcpgate", "mysql"), ("redis://cache/0", "redis"), ("db.sqlite3", "")]
)
def test_a_database_url_of_another_kind_is_refused(monkeypatch: pytest.MonkeyPatch, url: str, scheme: str) -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        database(monkeypatch, url)
    assert str(refused.value) == f"DATABASE_URL must be a sqlite:// or postgres:// URL, not scheme {scheme!r}"


def test_an_unparsable_database_url_is_refused_without_repeating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A password with an unescaped reserved character breaks the port; the password is not echoed."""
    with pytest.raises(ImproperlyConfigured) as refused:
        database(monkeypatch, "postgresql://mcp:pa:ss/word@db:5432/mcpgate")
    assert str(refused.value) == (
        "DATABASE_URL is not a valid database URL (percent-escape reserved characters in the password)"
    )


def test_a_query_parameter_given_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        database(monkeypatch, "postgresql://u@db/mcpgate?sslmode=require&sslmode=disable")
    assert str(refused.value) == "DATABASE_URL: the query parameter 'sslmode' is given more than once"


# ---------------------------------------------------------------------------
# The .env file (its precedence under the real environment: tests/mcpgate/test_settings.py)
# ---------------------------------------------------------------------------
def test_a_missing_default_env_file_is_fine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MCPGATE_ENV_FILE", raising=False)
    assert load_env_file(default=tmp_path / ".env") is None


def test_a_missing_named_env_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MCPGATE_ENV_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(ImproperlyConfigured) as refused:
        load_env_file(default=tmp_path / ".env")
    assert str(refused.value) == f"MCPGATE_ENV_FILE: cannot read {tmp_path / 'nope.env'}: No such file or directory"


def test_a_pool_in_the_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/mcpgate?pool=true")
    monkeypatch.delenv("MCPGATE_DB_CONN_MAX_AGE", raising=False)
    with pytest.raises(ImproperlyConfigured) as refused:
        envdatabase("DATABASE_URL", sqlite_path=SQLITE)
    assert str(refused.value) == "DATABASE_URL: the connection pool is sized by MCPGATE_DB_POOL_SIZE, not by ?pool="
