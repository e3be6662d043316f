"""mcpgate.settings: every value comes from the environment, and a bad one stops start-up with a clear message.

Each case imports the settings in a fresh interpreter with exactly the environment given
(nothing inherited from the test run), the way gunicorn or manage.py would.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The least a deployment must set.
MINIMAL = {"SECRET_KEY": "k" * 50, "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8000"}
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "MCPGATE_PUBLIC_URL": "https://mcp.example.com",
    "MCPGATE_INTERNAL_URL": "https://mcp.internal.example.com",
    "MCPGATE_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8",
    "MCPGATE_EMAIL_DOMAINS": "example.com",
}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MCPGATE_SQLITE_PATH": "/nonexistent/db", **env}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def settings_of(env: dict[str, str], *names: str) -> dict[str, object]:
    """The named settings as the module computes them from ``env``."""
    code = (
        "import json, mcpgate.settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}, default=str))"
    )
    result = run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def refusal(env: dict[str, str]) -> str:
    """The ImproperlyConfigured message importing the settings with ``env`` fails with."""
    result = run(["-c", "import mcpgate.settings"], env)
    assert result.returncode != 0, "settings loaded"
    last = result.stderr.strip().splitlines()[-1]
    prefix = "django.core.exceptions.ImproperlyConfigured: "
    assert last.startswith(prefix), result.stderr
    return last[len(prefix) :]


# ---------------------------------------------------------------------------
# SECRET_KEY and DEBUG
# ---------------------------------------------------------------------------
def test_minimal_environment_loads() -> None:
    assert settings_of(MINIMAL, "DEBUG", "ALLOWED_HOSTS") == {"DEBUG": False, "ALLOWED_HOSTS": ["127.0.0.1"]}


def test_missing_secret_key_with_debug_off_is_an_error() -> None:
    env = {k: v for k, v in MINIMAL.items() if k != "SECRET_KEY"}
    assert refusal(env) == (
        "SECRET_KEY is not set. Set it (or SECRET_KEY_FILE) in the environment; "
        "`make run` writes a random one to .env on first run."
    )


def test_empty_secret_key_is_missing() -> None:
    assert refusal({**MINIMAL, "SECRET_KEY": ""}).startswith("SECRET_KEY is not set.")


def test_missing_secret_key_tolerated_with_debug_on() -> None:
    env = {"DEBUG": "True", "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8000"}
    assert settings_of(env, "DEBUG", "SECRET_KEY") == {"DEBUG": True, "SECRET_KEY": "insecure-debug-only-key"}


@pytest.mark.parametrize("value", ["yes", "true", "1", ""])
def test_debug_must_be_true_or_false(value: str) -> None:
    assert refusal({**MINIMAL, "DEBUG": value}) == f"DEBUG must be True or False, not {value!r}"


def test_secret_key_read_from_file(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.write_text("from-a-file\n")
    env = {"SECRET_KEY_FILE": str(path), "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8000"}
    assert settings_of(env, "SECRET_KEY") == {"SECRET_KEY": "from-a-file"}


def test_unreadable_secret_key_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert refusal({**MINIMAL, "SECRET_KEY_FILE": str(missing)}) == (
        f"SECRET_KEY_FILE: cannot read {missing}: No such file or directory"
    )


# ---------------------------------------------------------------------------
# Base URLs
# ---------------------------------------------------------------------------
def test_at_least_one_base_url_required() -> None:
    assert refusal({"SECRET_KEY": "k" * 50}) == (
        "Set MCPGATE_PUBLIC_URL and/or MCPGATE_INTERNAL_URL (e.g. http://127.0.0.1:8000)."
    )


@pytest.mark.parametrize("name", ["MCPGATE_PUBLIC_URL", "MCPGATE_INTERNAL_URL"])
def test_http_base_url_off_loopback_refused(name: str) -> None:
    assert refusal({**MINIMAL, name: "http://mcp.example.com"}) == (
        f"{name} must use https unless it is a loopback address: 'http://mcp.example.com'"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_http_base_url_on_loopback_accepted(url: str) -> None:
    assert settings_of({**MINIMAL, "MCPGATE_PUBLIC_URL": url}, "MCPGATE_PUBLIC_URL") == {"MCPGATE_PUBLIC_URL": url}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://MCP.Example.COM", "https://mcp.example.com"),
        ("https://mcp.example.com/", "https://mcp.example.com"),
        ("https://mcp.example.com:8443", "https://mcp.example.com:8443"),
    ],
)
def test_base_url_normalised_for_byte_for_byte_comparison(url: str, expected: str) -> None:
    """Checklist D4/S2: clients compare issuer and resource byte for byte."""
    assert settings_of({**MINIMAL, "MCPGATE_PUBLIC_URL": url}, "MCPGATE_PUBLIC_URL")["MCPGATE_PUBLIC_URL"] == expected


@pytest.mark.parametrize(
    "url", ["https://mcp.example.com/mcp", "https://mcp.example.com?x=1", "https://user@mcp.example.com"]
)
def test_base_url_must_be_an_origin(url: str) -> None:
    assert refusal({**MINIMAL, "MCPGATE_PUBLIC_URL": url}) == (
        f"MCPGATE_PUBLIC_URL must be an origin without path, query or credentials: {url!r}"
    )


@pytest.mark.parametrize("url", ["ftp://mcp.example.com", "mcp.example.com", "https://"])
def test_base_url_must_be_absolute_http(url: str) -> None:
    assert refusal({**MINIMAL, "MCPGATE_PUBLIC_URL": url}) == (
        f"MCPGATE_PUBLIC_URL must be an absolute http(s) URL, not {url!r}"
    )


def test_allowed_hosts_are_exactly_the_configured_hosts() -> None:
    values = settings_of(PRODUCTION, "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS")
    assert values == {
        "ALLOWED_HOSTS": ["mcp.example.com", "mcp.internal.example.com"],
        "CSRF_TRUSTED_ORIGINS": ["https://mcp.example.com", "https://mcp.internal.example.com"],
    }


# ---------------------------------------------------------------------------
# Proxies, domains, numbers, database
# ---------------------------------------------------------------------------
def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    env = {**MINIMAL, "MCPGATE_TRUSTED_PROXIES": "10.0.0.1, proxy.internal", "MCPGATE_EMAIL_DOMAINS": "example.com"}
    assert refusal(env) == "MCPGATE_TRUSTED_PROXIES: 'proxy.internal' is not an IP address or CIDR network"


def test_trusted_proxies_need_email_domains() -> None:
    assert refusal({**MINIMAL, "MCPGATE_TRUSTED_PROXIES": "10.0.0.1"}) == (
        "MCPGATE_TRUSTED_PROXIES is set: set MCPGATE_EMAIL_DOMAINS too (e.g. example.com)."
    )


def test_trusted_proxies_and_email_domains_parsed() -> None:
    env = {
        **MINIMAL,
        "MCPGATE_TRUSTED_PROXIES": "10.0.0.1 10.1.0.0/16,fd00::/8",
        "MCPGATE_EMAIL_DOMAINS": "@Example.com, example.org",
    }
    assert settings_of(env, "MCPGATE_TRUSTED_PROXIES", "MCPGATE_EMAIL_DOMAINS") == {
        "MCPGATE_TRUSTED_PROXIES": ["10.0.0.1/32", "10.1.0.0/16", "fd00::/8"],
        "MCPGATE_EMAIL_DOMAINS": ["example.com", "example.org"],
    }


def test_integer_settings_must_be_integers() -> None:
    assert refusal({**MINIMAL, "MCPGATE_ACCESS_TOKEN_SECONDS": "1h"}) == (
        "MCPGATE_ACCESS_TOKEN_SECONDS must be an integer, not '1h'"
    )


def test_integer_settings_have_minimums() -> None:
    assert refusal({**MINIMAL, "MCPGATE_ACCESS_TOKEN_SECONDS": "10"}) == (
        "MCPGATE_ACCESS_TOKEN_SECONDS must be at least 60, not 10"
    )
    assert refusal({**MINIMAL, "MCPGATE_REGISTRATION_RATE_PER_MINUTE": "0"}) == (
        "MCPGATE_REGISTRATION_RATE_PER_MINUTE must be at least 1, not 0"
    )


def test_token_lifetimes_reach_dot() -> None:
    env = {**MINIMAL, "MCPGATE_ACCESS_TOKEN_SECONDS": "900", "MCPGATE_REFRESH_TOKEN_SECONDS": "86400"}
    dot = settings_of(env, "OAUTH2_PROVIDER")["OAUTH2_PROVIDER"]
    assert isinstance(dot, dict)
    assert dot["ACCESS_TOKEN_EXPIRE_SECONDS"] == 900
    assert dot["REFRESH_TOKEN_EXPIRE_SECONDS"] == 86400


def test_cimd_allowed_hosts_reach_dot() -> None:
    dot = settings_of({**MINIMAL, "MCPGATE_CIMD_ALLOWED_HOSTS": "claude.ai"}, "OAUTH2_PROVIDER")["OAUTH2_PROVIDER"]
    assert isinstance(dot, dict)
    assert dot["CIMD_ALLOWED_HOSTS"] == ["claude.ai"]


def test_database_url_must_be_postgres() -> None:
    assert refusal({**MINIMAL, "DATABASE_URL": "mysql://db/mcpgate"}) == (
        "DATABASE_URL must be a postgres:// URL, not scheme 'mysql'"
    )


def test_database_url_parsed_including_socket_directory() -> None:
    env = {
        **MINIMAL,
        "DATABASE_URL": "postgresql://mcp:pw@db.internal:5433/mcpgate?host=/run/postgresql&sslmode=require",
    }
    database = settings_of(env, "DATABASES")["DATABASES"]
    assert isinstance(database, dict)
    default = database["default"]
    assert {k: default[k] for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")} == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mcpgate",
        "USER": "mcp",
        "PASSWORD": "pw",
        "HOST": "/run/postgresql",
        "PORT": "5433",
        "OPTIONS": {"sslmode": "require"},
    }


def test_without_database_url_sqlite_is_used_with_immediate_transactions() -> None:
    """IMMEDIATE: a transaction takes the write lock at BEGIN, which the refresh grace check relies on."""
    database = settings_of(MINIMAL, "DATABASES")["DATABASES"]
    assert isinstance(database, dict)
    assert database["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert database["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_https_deployment_secures_cookies_and_sends_hsts() -> None:
    values = settings_of(PRODUCTION, "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS")
    assert values == {"SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True, "SECURE_HSTS_SECONDS": 31536000}


# ---------------------------------------------------------------------------
# manage.py check --deploy
# ---------------------------------------------------------------------------
def test_check_deploy_is_clean_with_production_like_environment() -> None:
    """https URLs, a long random SECRET_KEY, DEBUG off, DATABASE_URL unset (SQLite): no issues."""
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("System check identified no issues")


def test_check_deploy_flags_a_weak_secret_key() -> None:
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], {**PRODUCTION, "SECRET_KEY": "short"})
    assert result.returncode != 0
    assert "security.W009" in result.stderr
