"""Typed readers of environment variables for mcpgate.settings: each fails loudly, naming the variable."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What people write for a boolean, in any case: DEBUG=false, DEBUG=0, DEBUG=off all mean False.
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

# django-ratelimit's rate syntax: N per s, m, h or d, optionally per a multiple (100/5m). Its own
# parser reads "30/M" or "30/min" as 30 per second; here anything but this exact form is refused.
_RATE = re.compile(r"[1-9][0-9]*/([1-9][0-9]*)?[smhd]")

_POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "pgsql"})


def load_env_file(*, default: Path) -> Path | None:
    """Load ``MCPGATE_ENV_FILE`` (or ``default``) into os.environ; variables already set win.

    ``override=False`` is the point: ``SECRET_KEY=… make run`` or a systemd unit's environment must
    beat the file, never the other way round. A missing default file is fine (production sets the
    environment itself); a missing file named by MCPGATE_ENV_FILE is a mistake and stops the start.
    Returns the file loaded, if any.
    """
    named = os.environ.get("MCPGATE_ENV_FILE", "").strip()
    path = Path(named) if named else default
    if named:
        try:
            with path.open(encoding="utf-8"):
                pass
        except OSError as exc:
            raise ImproperlyConfigured(f"MCPGATE_ENV_FILE: cannot read {path}: {exc.strerror}") from None
    elif not path.is_file():
        return None
    load_dotenv(path, override=False, encoding="utf-8")
    return path


def envstr(name: str, default: str = "") -> str:
    """The variable as written, or ``default`` when it is unset."""
    return os.environ.get(name, default)


def envsecret(name: str, default: str = "") -> str:
    """NAME, or the contents of the file named by NAME_FILE (container secrets), which wins."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    """true/false, 1/0, yes/no or on/off, in any case and with surrounding spaces."""
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (or 1/0, yes/no, on/off), not {value!r}")


def envint(name: str, default: int, *, minimum: int = 0) -> int:
    """A whole number, at least ``minimum``."""
    value = os.environ.get(name)
    if value is None:
        number = default
    else:
        try:
            number = int(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envchoice(name: str, default: str, *, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (lower case), compared case-insensitively."""
    value = os.environ.get(name, default)
    word = value.strip().lower()
    if word not in choices:
        allowed = " or ".join(choices) if len(choices) == 2 else ", ".join(choices)
        raise ImproperlyConfigured(f"{name} must be {allowed}, not {value!r}")
    return word


def envlist(name: str, default: str = "") -> list[str]:
    """Items separated by commas and/or whitespace; empty items are dropped."""
    return os.environ.get(name, default).replace(",", " ").split()


def envnetworks(name: str, default: str = "") -> list[IPNetwork]:
    """IP addresses or CIDR networks (an address is its /32 or /128); host bits are ignored."""
    networks = []
    for item in envlist(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or CIDR network") from None
    return networks


def envfernetkeys(name: str) -> list[str]:
    """Fernet keys (32 url-safe base64 bytes each) separated by commas and/or whitespace; NAME_FILE wins."""
    keys = envsecret(name).replace(",", " ").split()
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{name}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes, "
                "as Fernet.generate_key() makes)"
            ) from None
    return keys


_SCOPE_NAME = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token


def envscopes(name: str) -> dict[str, str]:
    """Scopes and what the consent page says of each: ``name=description`` items separated by ``;``."""
    scopes: dict[str, str] = {}
    for item in os.environ.get(name, "").split(";"):
        if not item.strip():
            continue
        scope, sep, description = item.partition("=")
        scope, description = scope.strip(), description.strip()
        if not sep or not _SCOPE_NAME.fullmatch(scope) or not description:
            raise ImproperlyConfigured(
                f"{name}: {item.strip()!r} is not scope=description "
                "(e.g. db:read=Read the databases; db:write=Change them)"
            )
        scopes[scope] = description
    return scopes


def envfloat(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A number (e.g. seconds), at least ``minimum``."""
    value = os.environ.get(name)
    if value is None:
        number = default
    else:
        try:
            number = float(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if not number >= minimum:  # also refuses nan
        raise ImproperlyConfigured(f"{name} must be at least {minimum:g}, not {number:g}")
    return number


def is_loopback_host(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def envbaseurl(name: str) -> str:
    """An origin such as https://mcp.example.com; http only on loopback (RFC 8252 §7.3 local use)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"{name} must be an absolute http(s) URL, not {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ImproperlyConfigured(f"{name} must be an origin without path, query or credentials: {value!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ImproperlyConfigured(f"{name} must use https unless it is a loopback address: {value!r}")
    # Lower-case scheme and host: clients compare issuer and resource byte for byte (RFC 8414 §3.3, RFC 9728 §3.3).
    return f"{parts.scheme}://{parts.netloc.lower()}"


def envrate(name: str, default: str) -> str:
    """A django-ratelimit rate such as ``30/m`` or ``100/5m``, normalised to lower case."""
    value = os.environ.get(name, default)
    rate = value.strip().lower()
    if not _RATE.fullmatch(rate):
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 30/m (a count per s, m, h or d, or per several: 100/5m), not {value!r}"
        )
    return rate


def envcache(name: str = "CACHE_URL", *, directory: str) -> dict[str, Any]:
    """The cache the rate limits count in: on disk at ``directory``, or Redis for several hosts.

    Counters must be shared by every worker and counted atomically (mcpgate.ratelimit): a
    per-process memory cache would let each worker admit the whole limit, Django's file and
    database caches do not increment atomically. diskcache (SQLite files) is shared by the
    processes of one host; Redis by every replica. NAME_FILE may hold the URL (a password in it).
    """
    url = envsecret(name)
    if not url:
        return {"BACKEND": "mcpgate.cache.DiskCache", "LOCATION": directory}
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, not scheme {scheme!r}")
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"pool_class": "mcpgate.cache.SharedConnectionPool"},
    }


def _sqlite(path: str, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # A file, not Django's in-memory default, so a gunicorn started by a test sees its data.
        "TEST": {"NAME": path + "-test"} if path != ":memory:" else {},
        "CONN_MAX_AGE": envint("MCPGATE_DB_CONN_MAX_AGE", 60),
        "OPTIONS": {
            # IMMEDIATE: a transaction takes the write lock at BEGIN, which the refresh grace check
            # relies on; WAL lets readers go on while one worker writes.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            **options,
        },
    }


def envdatabase(name: str = "DATABASE_URL", *, sqlite_path: str) -> dict[str, Any]:
    """DATABASES["default"] from a database URL (NAME or NAME_FILE), parsed by dj-database-url.

    Unset: SQLite at ``sqlite_path``. ``sqlite:///relative.db`` and ``sqlite:////absolute.db``
    (SQLAlchemy's convention), or ``postgres://`` / ``postgresql://`` with percent-escaped parts.
    Query parameters are connection options (``sslmode=require``, ``prepare_threshold=2``,
    ``server_side_binding=false``,
    ``options=-c%20statement_timeout%3D5000``), numbers as integers, as psycopg wants them; libpq's
    ``?host=/socket/dir`` and ``?port=`` move to HOST and PORT, where Django passes them on. The
    error messages never repeat the URL: it may carry a password.
    """
    url = envsecret(name).strip()
    if not url:
        return _sqlite(sqlite_path, {})
    scheme = urlsplit(url).scheme
    if scheme != "sqlite" and scheme not in _POSTGRES_SCHEMES:
        raise ImproperlyConfigured(f"{name} must be a sqlite:// or postgres:// URL, not scheme {scheme!r}")
    try:
        parsed: dict[str, Any] = dict(dj_database_url.parse(url))
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} is not a valid database URL (percent-escape reserved characters in the password)"
        ) from None
    options: dict[str, Any] = dict(parsed.get("OPTIONS", {}))
    for key, value in options.items():
        if isinstance(value, list):
            raise ImproperlyConfigured(f"{name}: the query parameter {key!r} is given more than once")
    if scheme == "sqlite":
        return _sqlite(str(parsed["NAME"]), options)
    host = options.pop("host", None)
    port = options.pop("port", None)
    # 0 by default: under the ASGI worker every request thread would keep its own persistent
    # connection, and two workers exhausted PostgreSQL's 100 under the soak (docs/reliability.md).
    conn_max_age = envint("MCPGATE_DB_CONN_MAX_AGE", 0)
    # Django's own connection pool (psycopg_pool, Django >= 5.1), per worker process: without it every
    # request opened and closed a connection in each thread it used, which was the largest single wait
    # of a /mcp call (BENCHMARKS.md). Bounded, so workers x MCPGATE_DB_POOL_SIZE stays under
    # max_connections; each connection is checked when taken, so a database restart costs no request,
    # and a request waits at most 2 s for one before the database counts as away (503, Retry-After).
    pool_size = envint("MCPGATE_DB_POOL_SIZE", 8)
    if pool_size and conn_max_age:
        raise ImproperlyConfigured(
            "MCPGATE_DB_CONN_MAX_AGE must be 0 with the connection pool; set MCPGATE_DB_POOL_SIZE=0 to use "
            "persistent per-thread connections instead"
        )
    if "pool" in options:
        raise ImproperlyConfigured(f"{name}: the connection pool is sized by MCPGATE_DB_POOL_SIZE, not by ?pool=")
    # Server-side binding with prepared statements, Django's documented psycopg options: the token
    # lookup of every /mcp call is then planned once per connection, not on every call (0.6 ms ->
    # 0.3 ms per lookup, BENCHMARKS.md). ?server_side_binding=false turns both off, e.g. behind a
    # pooler in transaction mode that cannot keep prepared statements; ?prepare_threshold=N says
    # after how many runs of a statement it is prepared (psycopg's default, 5).
    binding = str(options.pop("server_side_binding", "true")).strip().lower()
    if binding not in ("true", "false"):
        raise ImproperlyConfigured(f"{name}: server_side_binding must be true or false")
    if binding == "true":
        options["server_side_binding"] = True
        options.setdefault("prepare_threshold", 5)
    if pool_size:
        options["pool"] = {
            "min_size": 1,
            "max_size": pool_size,
            "timeout": 2,
            # psycopg_pool retries a failed connect with a doubling delay that only stops growing at
            # reconnect_timeout (5 minutes by default): after an 8 s outage the next try came 6 s
            # late (tests/faults). Giving up after 2 s lets the next request that needs a
            # connection start a fresh try at once, so recovery follows the database within ~1 s.
            "reconnect_timeout": 2,
        }
    return {
        "ENGINE": "mcpgate.postgresql",
        "NAME": parsed["NAME"],
        "USER": parsed["USER"],
        "PASSWORD": parsed["PASSWORD"],
        "HOST": str(host) if host is not None else parsed["HOST"],
        "PORT": str(port if port is not None else parsed["PORT"]),
        "OPTIONS": options,
        "CONN_MAX_AGE": conn_max_age,
        # With the pool, Django hands psycopg_pool its connection check (ConnectionPool.check_connection).
        "CONN_HEALTH_CHECKS": True,
    }
