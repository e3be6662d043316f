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
from collections.abc import Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values

from tests.e2e.tools import unavailable
from tests.pgcluster import cluster, pg_bindir

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


def run(args: list[str], env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    """Run python ARGS with exactly ``env`` (a None value: the variable is unset).

    The cache directory is the test run's: ``manage.py check`` opens the cache (Django's cache
    checks instantiate every backend), which would otherwise create one next to the database.
    """
    defaults = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MCPGATE_SQLITE_PATH": "/nonexistent/db",
        "MCPGATE_CACHE_DIR": os.environ["MCPGATE_CACHE_DIR"],
        # Not the checkout's .env, which a developer may have: only what the test gives.
        "MCPGATE_ENV_FILE": os.devnull,
    }
    clean = {key: value for key, value in {**defaults, **env}.items() if value is not None}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def settings_of(env: dict[str, str | None], *names: str) -> dict[str, object]:
    """The named settings as the module computes them from ``env``."""
    code = (
        "import json, mcpgate.settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}, default=str))"
    )
    result = run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def refusal(env: dict[str, str | None]) -> str:
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


@pytest.mark.parametrize(
    ("value", "debug"),
    [
        *[("false", False), ("False", False), ("0", False), ("no", False), ("OFF", False), (" false ", False)],
        *[("true", True), ("True", True), ("1", True), ("yes", True), ("On", True)],
    ],
)
def test_debug_accepts_the_usual_boolean_spellings(value: str, debug: bool) -> None:
    assert settings_of({**MINIMAL, "DEBUG": value}, "DEBUG") == {"DEBUG": debug}


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_debug_must_be_a_boolean(value: str) -> None:
    assert refusal({**MINIMAL, "DEBUG": value}) == (
        f"DEBUG must be true or false (or 1/0, yes/no, on/off), not {value!r}"
    )


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


def test_database_url_must_be_sqlite_or_postgres() -> None:
    assert refusal({**MINIMAL, "DATABASE_URL": "mysql://db/mcpgate"}) == (
        "DATABASE_URL must be a sqlite:// or postgres:// URL, not scheme 'mysql'"
    )


def test_database_url_parsed_including_socket_directory_and_escapes() -> None:
    env = {
        **MINIMAL,
        "DATABASE_URL": "postgresql://mcp:p%40ss@db.internal:5433/mcpgate?host=%2Frun%2Fpostgresql&sslmode=require",
    }
    database = settings_of(env, "DATABASES")["DATABASES"]
    assert isinstance(database, dict)
    default = database["default"]
    assert {k: default[k] for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")} == {
        "ENGINE": "mcpgate.postgresql",
        "NAME": "mcpgate",
        "USER": "mcp",
        "PASSWORD": "p@ss",
        "HOST": "/run/postgresql",
        "PORT": "5433",
        "OPTIONS": {
            "sslmode": "require",
            "server_side_binding": True,
            "prepare_threshold": 5,
            "pool": {"min_size": 1, "max_size": 8, "timeout": 2, "reconnect_timeout": 2},
        },
    }


def test_a_sqlite_database_url_is_served_and_the_cache_sits_next_to_it(tmp_path: Path) -> None:
    """``sqlite:////abs/path`` (dj-database-url's, SQLAlchemy's form): migrate creates it there."""
    path = tmp_path / "from-url.sqlite3"
    env = {**MINIMAL, "DATABASE_URL": f"sqlite:///{path}", "MCPGATE_CACHE_DIR": None}
    assert settings_of(env, "MCPGATE_CACHE_DIR") == {"MCPGATE_CACHE_DIR": str(tmp_path / "cache")}
    result = run(["manage.py", "migrate", "--noinput", "-v", "0"], env)
    assert result.returncode == 0, result.stderr
    assert path.stat().st_size > 0


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database: the PostgreSQL pass's, else a throw-away cluster (about a second)."""
    if os.environ.get("MCPGATE_TEST_DATABASE_URL"):
        yield os.environ["MCPGATE_TEST_DATABASE_URL"]
        return
    try:
        pg_bindir()
    except SystemExit as missing:
        unavailable(str(missing))
    with cluster() as url:
        yield url


def test_postgres_query_options_reach_psycopg(postgres_url: str) -> None:
    """prepare_threshold must arrive as a number (psycopg compares it), options and sslmode as libpq's."""
    code = (
        "import django; django.setup(); from django.db import connection; "
        "cursor = connection.cursor(); cursor.execute('show statement_timeout'); "
        "print(cursor.fetchone()[0], connection.connection.prepare_threshold, connection.connection.info.host)"
    )
    url = f"{postgres_url}?prepare_threshold=2&sslmode=disable&options=-c%20statement_timeout%3D4321"
    result = run(["-c", code], {**MINIMAL, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "mcpgate.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4321ms", "2", "127.0.0.1"]


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
# Rate limits, the cache they count in, audit retention
# ---------------------------------------------------------------------------
RATE_SETTINGS = [
    "MCPGATE_RATE_LIMIT_TOKEN",
    "MCPGATE_RATE_LIMIT_TOKEN_CLIENT",
    "MCPGATE_RATE_LIMIT_REVOKE",
    "MCPGATE_RATE_LIMIT_AUTHORIZE",
    "MCPGATE_RATE_LIMIT_LOGIN",
    "MCPGATE_RATE_LIMIT_MCP",
    "MCPGATE_AUDIT_ANONYMOUS_RATE",
]


def test_rate_limits_have_defaults() -> None:
    assert settings_of(MINIMAL, *RATE_SETTINGS, "MCPGATE_REGISTRATION_RATE_PER_MINUTE") == {
        "MCPGATE_RATE_LIMIT_TOKEN": "120/m",
        "MCPGATE_RATE_LIMIT_TOKEN_CLIENT": "300/m",
        "MCPGATE_RATE_LIMIT_REVOKE": "60/m",
        "MCPGATE_RATE_LIMIT_AUTHORIZE": "60/m",
        "MCPGATE_RATE_LIMIT_LOGIN": "10/m",
        "MCPGATE_RATE_LIMIT_MCP": "600/m",
        "MCPGATE_AUDIT_ANONYMOUS_RATE": "10/m",
        "MCPGATE_REGISTRATION_RATE_PER_MINUTE": 30,
    }


@pytest.mark.parametrize(
    ("value", "read"), [("30/m", "30/m"), (" 100/5M ", "100/5m"), ("5/h", "5/h"), ("1/d", "1/d"), ("10/s", "10/s")]
)
@pytest.mark.parametrize("name", RATE_SETTINGS)
def test_rate_limits_read_django_ratelimit_rates(name: str, value: str, read: str) -> None:
    assert settings_of({**MINIMAL, name: value}, name) == {name: read}


@pytest.mark.parametrize("value", ["30", "30/min", "0/m", "thirty/m", "30/m/s", "-1/m", "30/0m", "30 /m", ""])
def test_a_rate_limit_that_is_not_a_rate_stops_start_up(value: str) -> None:
    """django-ratelimit itself would read "30/min" or "30" as 30 per second, and "0/m" as never."""
    assert refusal({**MINIMAL, "MCPGATE_RATE_LIMIT_TOKEN": value}) == (
        "MCPGATE_RATE_LIMIT_TOKEN must be a rate such as 30/m (a count per s, m, h or d, or per several: 100/5m), "
        f"not {value!r}"
    )


def test_without_cache_url_the_cache_is_on_disk_next_to_the_sqlite_database() -> None:
    env = {**MINIMAL, "MCPGATE_CACHE_DIR": None, "MCPGATE_SQLITE_PATH": "/var/lib/mcpgate/db.sqlite3"}
    assert settings_of(env, "CACHES", "MCPGATE_CACHE_DIR") == {
        "CACHES": {"default": {"BACKEND": "mcpgate.cache.DiskCache", "LOCATION": "/var/lib/mcpgate/cache"}},
        "MCPGATE_CACHE_DIR": "/var/lib/mcpgate/cache",
    }


def test_the_cache_directory_can_be_set(tmp_path: Path) -> None:
    caches = settings_of({**MINIMAL, "MCPGATE_CACHE_DIR": str(tmp_path)}, "CACHES")["CACHES"]
    assert caches == {"default": {"BACKEND": "mcpgate.cache.DiskCache", "LOCATION": str(tmp_path)}}


@pytest.mark.parametrize(
    "url", ["redis://cache.internal:6379/0", "rediss://:secret@cache.internal:6380/1", "unix:///run/redis/redis.sock"]
)
def test_cache_url_selects_redis_with_one_pool_per_process(url: str) -> None:
    assert settings_of({**MINIMAL, "CACHE_URL": url}, "CACHES")["CACHES"] == {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"pool_class": "mcpgate.cache.SharedConnectionPool"},
        }
    }


def test_cache_url_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cache_url"
    path.write_text("rediss://:from-a-file@cache.internal:6380/0\n")
    caches = settings_of({**MINIMAL, "CACHE_URL_FILE": str(path)}, "CACHES")["CACHES"]
    assert isinstance(caches, dict)
    assert caches["default"]["LOCATION"] == "rediss://:from-a-file@cache.internal:6380/0"


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("memcached://cache:11211", "memcached"),
        ("locmem://", "locmem"),
        ("file:///tmp/c", "file"),
        ("cache:6379", "cache"),
    ],
)
def test_any_other_cache_url_stops_start_up(url: str, scheme: str) -> None:
    """Memory caches are per process and file or database caches do not count atomically: the
    limits would not hold across workers (mcpgate.env.envcache)."""
    assert refusal({**MINIMAL, "CACHE_URL": url}) == (
        f"CACHE_URL must be a redis://, rediss:// or unix:// URL, not scheme {scheme!r}"
    )


def test_audit_retention_defaults_to_a_year_and_0_keeps_forever() -> None:
    assert settings_of(MINIMAL, "MCPGATE_AUDIT_RETENTION_DAYS") == {"MCPGATE_AUDIT_RETENTION_DAYS": 365}
    assert settings_of({**MINIMAL, "MCPGATE_AUDIT_RETENTION_DAYS": "0"}, "MCPGATE_AUDIT_RETENTION_DAYS") == {
        "MCPGATE_AUDIT_RETENTION_DAYS": 0
    }
    assert refusal({**MINIMAL, "MCPGATE_AUDIT_RETENTION_DAYS": "-1"}) == (
        "MCPGATE_AUDIT_RETENTION_DAYS must be at least 0, not -1"
    )


def test_django_ratelimit_checks_the_cache_and_only_its_unsupported_warning_is_silenced() -> None:
    """Its check knows the cache is neither local memory, a file nor the database (E003);
    "not officially supported" (W001) is silenced for diskcache and Redis, whose incr is atomic."""
    values = settings_of(MINIMAL, "INSTALLED_APPS", "SILENCED_SYSTEM_CHECKS", "RATELIMIT_USE_CACHE")
    assert "django_ratelimit" in values["INSTALLED_APPS"]  # type: ignore[operator]
    assert [c for c in values["SILENCED_SYSTEM_CHECKS"] if c.startswith("django_ratelimit")] == [  # type: ignore[union-attr]
        "django_ratelimit.W001"
    ]
    assert values["RATELIMIT_USE_CACHE"] == "default"
    result = run(["manage.py", "check", "--fail-level", "WARNING"], {**MINIMAL, "CACHE_URL": "redis://cache:6379/0"})
    assert result.returncode == 0, result.stderr


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


# ---------------------------------------------------------------------------
# The .env file: loaded by the settings themselves, under the real environment
# ---------------------------------------------------------------------------
def write_env_file(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{key}='{value}'\n" for key, value in values.items()))
    return path


def test_the_env_file_fills_in_what_the_environment_does_not_set(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / "local.env",
        SECRET_KEY="from-the-file",
        MCPGATE_INTERNAL_URL="http://127.0.0.1:8123",
        MCPGATE_RESOURCE_NAME="file-name",
    )
    values = settings_of({"MCPGATE_ENV_FILE": str(env_file)}, "SECRET_KEY", "MCPGATE_INTERNAL_URL")
    assert values == {"SECRET_KEY": "from-the-file", "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8123"}


def test_the_real_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    """``SECRET_KEY=… make run``: the shell's value, not the file's (they were sourced over it)."""
    env_file = write_env_file(
        tmp_path / "local.env", SECRET_KEY="from-the-file", MCPGATE_INTERNAL_URL="http://127.0.0.1:8123"
    )
    env = {"MCPGATE_ENV_FILE": str(env_file), "SECRET_KEY": "from-the-shell", "DEBUG": "false"}
    assert settings_of(env, "SECRET_KEY", "MCPGATE_INTERNAL_URL") == {
        "SECRET_KEY": "from-the-shell",
        "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8123",
    }


def test_a_missing_env_file_named_by_mcpgate_env_file_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    assert refusal({**MINIMAL, "MCPGATE_ENV_FILE": str(missing)}) == (
        f"MCPGATE_ENV_FILE: cannot read {missing}: No such file or directory"
    )


def test_env_example_means_the_same_sourced_by_bash_and_read_by_python_dotenv() -> None:
    """Unquoted lists made the shell run ``vscode.dev`` as a command; now every value is quoted."""
    example = ROOT / ".env.example"
    result = subprocess.run(
        ["bash", "-c", "set -a; . ./.env.example; env -0"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shell = dict(item.partition("=")[::2] for item in result.stdout.split("\0") if item)
    values = dotenv_values(example)
    assert values["MCPGATE_CIMD_ALLOWED_HOSTS"] == "claude.ai vscode.dev chatgpt.com"
    assert {key: shell.get(key) for key in values} == values


def test_env_example_is_a_valid_configuration(tmp_path: Path) -> None:
    values = settings_of(
        {"MCPGATE_ENV_FILE": str(ROOT / ".env.example"), "MCPGATE_SQLITE_PATH": str(tmp_path / "db.sqlite3")},
        "DEBUG",
        "MCPGATE_CIMD_ALLOWED_HOSTS",
        "MCPGATE_LOG_FORMAT",
        "MCPGATE_METRICS_NETWORKS",
    )
    assert values == {
        "DEBUG": False,
        "MCPGATE_CIMD_ALLOWED_HOSTS": ["claude.ai", "vscode.dev", "chatgpt.com"],
        "MCPGATE_LOG_FORMAT": "text",
        "MCPGATE_METRICS_NETWORKS": ["127.0.0.0/8", "::1/128"],
    }


def gunicorn_setting(name: str, env: dict[str, str | None], *args: str) -> str:
    """A setting of gunicorn's under deploy/gunicorn.conf.py, as ``--print-config`` shows it."""
    command = [str(Path(sys.executable).parent / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "--print-config"]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MCPGATE_ENV_FILE": os.devnull, **MINIMAL, **env}
    result = subprocess.run(
        [*command, *args, "mcpgate.asgi:application"],
        cwd=ROOT,
        env={k: v for k, v in clean.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{name} ")]
    assert lines, result.stdout + result.stderr
    return lines[0].split("=", 1)[1].strip()


def test_gunicorn_binds_to_mcpgate_bind_from_the_env_file(tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / "local.env", MCPGATE_BIND="127.0.0.1:9101")
    assert gunicorn_setting("bind", {"MCPGATE_ENV_FILE": str(env_file)}) == "['127.0.0.1:9101']"


def test_gunicorn_binds_to_mcpgate_bind_from_the_environment_over_the_env_file(tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / "local.env", MCPGATE_BIND="127.0.0.1:9101")
    env = {"MCPGATE_ENV_FILE": str(env_file), "MCPGATE_BIND": "127.0.0.1:9100"}
    assert gunicorn_setting("bind", env) == "['127.0.0.1:9100']"


def test_gunicorn_serves_with_mcpgates_worker_without_k_on_the_command_line() -> None:
    """uvloop and h11, named (mcpgate/workers.py), whatever else the image has installed."""
    assert gunicorn_setting("worker_class", {}) == "mcpgate.workers.Worker"


def test_gunicorn_gives_each_worker_a_listening_socket_by_default() -> None:
    """mcpgate.workers.listen_per_worker turns it off where it cannot work."""
    assert gunicorn_setting("reuse_port", {}) == "True"


@pytest.mark.parametrize("value", ["false", "0", " No "])
def test_mcpgate_reuse_port_off_has_the_workers_share_one_socket(value: str) -> None:
    assert gunicorn_setting("reuse_port", {"MCPGATE_REUSE_PORT": value}) == "False"


def test_gunicorn_binds_to_the_command_line_address_over_both(tmp_path: Path) -> None:
    """``make run BIND=…`` passes --bind."""
    env_file = write_env_file(tmp_path / "local.env", MCPGATE_BIND="127.0.0.1:9101")
    env = {"MCPGATE_ENV_FILE": str(env_file), "MCPGATE_BIND": "127.0.0.1:9100"}
    assert gunicorn_setting("bind", env, "--bind", "127.0.0.1:9102") == "['127.0.0.1:9102']"


# ---------------------------------------------------------------------------
# Observability
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "formatter"), [("text", "plain"), ("json", "json"), ("JSON", "json")])
def test_log_format_picks_the_console_formatter(value: str, formatter: str) -> None:
    logging_config = settings_of({**MINIMAL, "MCPGATE_LOG_FORMAT": value}, "LOGGING")["LOGGING"]
    assert isinstance(logging_config, dict)
    assert logging_config["handlers"]["stderr"] == {"class": "logging.StreamHandler", "formatter": formatter}
    assert logging_config["formatters"]["json"] == {"()": "mcpgate.observability.logs.JsonFormatter"}
    # Token-bearing libraries stay quiet whatever the format.
    assert logging_config["loggers"]["oauthlib"] == {"level": "WARNING"}


def test_log_format_defaults_to_text() -> None:
    assert settings_of(MINIMAL, "MCPGATE_LOG_FORMAT") == {"MCPGATE_LOG_FORMAT": "text"}


def test_an_unknown_log_format_stops_start_up() -> None:
    assert refusal({**MINIMAL, "MCPGATE_LOG_FORMAT": "xml"}) == "MCPGATE_LOG_FORMAT must be text or json, not 'xml'"


def test_metrics_networks_default_to_loopback_and_empty_means_nobody() -> None:
    assert settings_of(MINIMAL, "MCPGATE_METRICS_NETWORKS") == {"MCPGATE_METRICS_NETWORKS": ["127.0.0.0/8", "::1/128"]}
    env = {**MINIMAL, "MCPGATE_METRICS_NETWORKS": ""}
    assert settings_of(env, "MCPGATE_METRICS_NETWORKS") == {"MCPGATE_METRICS_NETWORKS": []}
    env = {**MINIMAL, "MCPGATE_METRICS_NETWORKS": "10.0.0.0/8, 192.0.2.7"}
    assert settings_of(env, "MCPGATE_METRICS_NETWORKS") == {"MCPGATE_METRICS_NETWORKS": ["10.0.0.0/8", "192.0.2.7/32"]}


def test_metrics_networks_must_be_addresses_or_networks() -> None:
    assert refusal({**MINIMAL, "MCPGATE_METRICS_NETWORKS": "prometheus.internal"}) == (
        "MCPGATE_METRICS_NETWORKS: 'prometheus.internal' is not an IP address or CIDR network"
    )


def test_observability_is_installed_after_the_project_apps_and_observes_first() -> None:
    values = settings_of(MINIMAL, "INSTALLED_APPS", "MIDDLEWARE")
    apps, middleware = values["INSTALLED_APPS"], values["MIDDLEWARE"]
    assert isinstance(apps, list)
    assert isinstance(middleware, list)
    observability = apps.index("mcpgate.observability.apps.ObservabilityConfig")
    assert all(apps.index(app) < observability for app in ("audit", "identity", "oauth_ext", "mcp_bridge", "notes"))
    assert middleware[0] == "mcpgate.observability.middleware.ObservabilityMiddleware"


# ---------------------------------------------------------------------------
# The test suite's own environment (tests/testenv.py)
# ---------------------------------------------------------------------------
def test_the_suite_ignores_the_developers_shell_and_env_file(tmp_path: Path) -> None:
    """With MCPGATE_PUBLIC_URL exported, 24 of the 25 discovery tests used to fail (testenv used setdefault)."""
    env_file = write_env_file(tmp_path / "developer.env", MCPGATE_INTERNAL_URL="http://127.0.0.1:9999")
    shell = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "MCPGATE_TEST_DATABASE_URL", "PYTEST_CURRENT_TEST")
    }
    shell.update(
        {
            "MCPGATE_PUBLIC_URL": "https://elsewhere.example",
            "MCPGATE_TRUSTED_PROXIES": "192.0.2.1/32",
            "MCPGATE_RATE_LIMIT_TOKEN": "1/d",
            "MCPGATE_ENV_FILE": str(env_file),
            "DATABASE_URL": "postgresql://nobody@nowhere.invalid/none",
            "CACHE_URL": "redis://nowhere.invalid:6379/0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://nowhere.invalid:4318",
            "DEBUG": "true",
        }
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "pytest"),
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/oauth_ext/test_discovery.py",
        ],
        cwd=ROOT,
        env=shell,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]
    assert "failed" not in result.stdout.splitlines()[-1]


def test_the_event_loop_database_route_is_off_unless_asked_for() -> None:
    assert settings_of(MINIMAL, "MCPGATE_MCP_LOOP_DATABASE") == {"MCPGATE_MCP_LOOP_DATABASE": False}
    on = {**MINIMAL, "MCPGATE_MCP_LOOP_DATABASE": "yes"}
    assert settings_of(on, "MCPGATE_MCP_LOOP_DATABASE") == {"MCPGATE_MCP_LOOP_DATABASE": True}
