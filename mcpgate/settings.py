"""Django settings for mcpgate: one module, every value read from the environment."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# Typed helpers (healthchecks style): a bad value fails loudly at start-up.
# ---------------------------------------------------------------------------
def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envsecret(name: str, default: str = "") -> str:
    """Read NAME, or the file named by NAME_FILE (container secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return os.environ.get(name, default)


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default)
    if value not in ("True", "False"):
        raise ImproperlyConfigured(f"{name} must be True or False, not {value!r}")
    return value == "True"


def envint(name: str, default: str, *, minimum: int = 0) -> int:
    value = os.environ.get(name, default)
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envlist(name: str, default: str = "") -> list[str]:
    """A comma- or whitespace-separated list; empty items are dropped."""
    return [item for item in os.environ.get(name, default).replace(",", " ").split() if item]


def envnetworks(name: str, default: str = "") -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in envlist(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or CIDR network") from None
    return networks


def is_loopback_host(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def envbaseurl(name: str) -> str:
    """An origin such as https://mcp.example.com; http only on loopback (RFC 8252 local use)."""
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
    # Lower-case scheme and host: clients compare issuer and resource byte for byte (checklist D4, S2).
    return f"{parts.scheme}://{parts.netloc.lower()}"


def envdatabase(url: str) -> dict[str, object]:
    if not url:
        name = envstr("MCPGATE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            # A file, not Django's in-memory default, so a gunicorn started by a test sees its data.
            "TEST": {"NAME": name + "-test"},
            "CONN_MAX_AGE": envint("MCPGATE_DB_CONN_MAX_AGE", "60"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, not scheme {parts.scheme!r}")
    options: dict[str, str] = {}
    for pair in filter(None, parts.query.split("&")):
        key, _, value = pair.partition("=")
        options[key] = value
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        # A socket directory may be given as ?host=/path (libpq convention).
        "HOST": options.pop("host", parts.hostname or ""),
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
        # 0 by default: under the ASGI worker every request thread would keep its own persistent
        # connection, and two workers exhausted PostgreSQL's 100 under the soak (docs/reliability.md).
        "CONN_MAX_AGE": envint("MCPGATE_DB_CONN_MAX_AGE", "0"),
        "CONN_HEALTH_CHECKS": True,
    }


# django-ratelimit's rate syntax: N per s, m, h or d, optionally per a multiple (100/5m). Its own
# parser reads "30/M" or "30/min" as 30 per second; here anything but this exact form is refused.
_RATE = re.compile(r"[1-9][0-9]*/([1-9][0-9]*)?[smhd]")


def envrate(name: str, default: str) -> str:
    """A rate limit such as ``30/m``, normalised to lower case."""
    value = os.environ.get(name, default).strip().lower()
    if not _RATE.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 30/m (a count per s, m, h or d, or per several: 100/5m), "
            f"not {os.environ.get(name, default)!r}"
        )
    return value


def envcache(url: str, directory: str) -> dict[str, object]:
    """The cache the rate limits count in: on disk at ``directory``, or Redis for several hosts.

    Counters must be shared by every worker and counted atomically (mcpgate.ratelimit): a
    per-process memory cache would let each worker admit the whole limit, Django's file and
    database caches do not increment atomically. diskcache (SQLite files) is shared by the
    processes of one host; Redis by every replica.
    """
    if not url:
        return {"BACKEND": "mcpgate.cache.DiskCache", "LOCATION": directory}
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(f"CACHE_URL must be a redis://, rediss:// or unix:// URL, not scheme {scheme!r}")
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"pool_class": "mcpgate.cache.SharedConnectionPool"},
    }


# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = envbool("DEBUG", "False")
SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it (or SECRET_KEY_FILE) in the environment; "
            "`make run` writes a random one to .env on first run."
        )
    SECRET_KEY = "insecure-debug-only-key"  # noqa: S105 - DEBUG only, never in production

MCPGATE_PUBLIC_URL = envbaseurl("MCPGATE_PUBLIC_URL")
MCPGATE_INTERNAL_URL = envbaseurl("MCPGATE_INTERNAL_URL")
if not (MCPGATE_PUBLIC_URL or MCPGATE_INTERNAL_URL):
    raise ImproperlyConfigured("Set MCPGATE_PUBLIC_URL and/or MCPGATE_INTERNAL_URL (e.g. http://127.0.0.1:8000).")

# Only the configured hosts are served; anything else is a 400 from Django (DisallowedHost).
ALLOWED_HOSTS = sorted({urlsplit(url).hostname or "" for url in (MCPGATE_PUBLIC_URL, MCPGATE_INTERNAL_URL) if url})
CSRF_TRUSTED_ORIGINS = [url for url in (MCPGATE_PUBLIC_URL, MCPGATE_INTERNAL_URL) if url]

# Peers whose X-Forwarded-* and identity headers are believed (oauth2-proxy, the load balancer).
MCPGATE_TRUSTED_PROXIES = envnetworks("MCPGATE_TRUSTED_PROXIES")
MCPGATE_EMAIL_DOMAINS = [d.lower().lstrip("@") for d in envlist("MCPGATE_EMAIL_DOMAINS")]
if MCPGATE_TRUSTED_PROXIES and not MCPGATE_EMAIL_DOMAINS:
    raise ImproperlyConfigured("MCPGATE_TRUSTED_PROXIES is set: set MCPGATE_EMAIL_DOMAINS too (e.g. example.com).")
MCPGATE_EMAIL_HEADER = envstr("MCPGATE_EMAIL_HEADER", "X-Forwarded-Email")
MCPGATE_USER_HEADER = envstr("MCPGATE_USER_HEADER", "X-Forwarded-User")
MCPGATE_GROUPS_HEADER = envstr("MCPGATE_GROUPS_HEADER", "X-Forwarded-Groups")
# Verified identity: "headers" believes the email header from a trusted proxy; "id_token" instead
# verifies the identity provider's ID token the proxy forwards (signature by the provider's JWKS,
# issuer, audience = oauth2-proxy's client id, expiry, and Google's hd claim in MCPGATE_EMAIL_DOMAINS).
MCPGATE_IDENTITY_MODE = envstr("MCPGATE_IDENTITY_MODE", "headers")
if MCPGATE_IDENTITY_MODE not in ("headers", "id_token"):
    raise ImproperlyConfigured(f"MCPGATE_IDENTITY_MODE must be headers or id_token, not {MCPGATE_IDENTITY_MODE!r}")
MCPGATE_ID_TOKEN_HEADER = envstr("MCPGATE_ID_TOKEN_HEADER", "X-Forwarded-Id-Token")
MCPGATE_OIDC_ISSUER = envstr("MCPGATE_OIDC_ISSUER", "https://accounts.google.com")
MCPGATE_OIDC_JWKS_URL = envstr("MCPGATE_OIDC_JWKS_URL")  # unset: jwks_uri from the issuer's discovery document
MCPGATE_OIDC_AUDIENCE = envstr("MCPGATE_OIDC_AUDIENCE")
MCPGATE_OIDC_JWKS_CACHE_SECONDS = envint("MCPGATE_OIDC_JWKS_CACHE_SECONDS", "3600", minimum=60)
if MCPGATE_IDENTITY_MODE == "id_token" and not MCPGATE_OIDC_AUDIENCE:
    raise ImproperlyConfigured("MCPGATE_IDENTITY_MODE=id_token: set MCPGATE_OIDC_AUDIENCE to oauth2-proxy's client id.")
# Operators: people (by email) or oauth2-proxy groups who get the admin console. Re-read at every
# proxy sign-in, so removing someone here takes their rights away on their next request.
MCPGATE_OPERATOR_EMAILS = [e.lower() for e in envlist("MCPGATE_OPERATOR_EMAILS")]
MCPGATE_OPERATOR_GROUPS = envlist("MCPGATE_OPERATOR_GROUPS")

MCPGATE_VERSION = "0.1.0"
# Browser origins allowed to call /mcp besides the configured hosts (e.g. http://localhost:6274 for MCP Inspector).
MCPGATE_ALLOWED_ORIGINS = envlist("MCPGATE_ALLOWED_ORIGINS")

# OAuth policy
MCPGATE_SCOPES = {"mcp": "Use the organisation's MCP tools as you"}
MCPGATE_ACCESS_TOKEN_SECONDS = envint("MCPGATE_ACCESS_TOKEN_SECONDS", "3600", minimum=60)
MCPGATE_REFRESH_TOKEN_SECONDS = envint("MCPGATE_REFRESH_TOKEN_SECONDS", str(30 * 86400), minimum=300)
MCPGATE_REFRESH_GRACE_SECONDS = envint("MCPGATE_REFRESH_GRACE_SECONDS", "30")
MCPGATE_REGISTRATION_RATE_PER_MINUTE = envint("MCPGATE_REGISTRATION_RATE_PER_MINUTE", "30", minimum=1)
MCPGATE_UNUSED_CLIENT_PURGE_HOURS = envint("MCPGATE_UNUSED_CLIENT_PURGE_HOURS", "24", minimum=1)
MCPGATE_CIMD_ALLOWED_HOSTS = envlist("MCPGATE_CIMD_ALLOWED_HOSTS", "claude.ai vscode.dev chatgpt.com")

# Rate limits (mcpgate.ratelimit): fixed windows counted in the cache (CACHES below), shared by
# every worker, and by every replica with CACHE_URL. A refusal is 429 with Retry-After.
# Registration keeps its historic per-minute number (MCPGATE_REGISTRATION_RATE_PER_MINUTE above).
MCPGATE_RATE_LIMIT_TOKEN = envrate("MCPGATE_RATE_LIMIT_TOKEN", "120/m")  # /oauth/token, per client address
MCPGATE_RATE_LIMIT_TOKEN_CLIENT = envrate("MCPGATE_RATE_LIMIT_TOKEN_CLIENT", "300/m")  # /oauth/token, per client_id
MCPGATE_RATE_LIMIT_REVOKE = envrate("MCPGATE_RATE_LIMIT_REVOKE", "60/m")  # /oauth/revoke, per client address
# /oauth/authorize, per signed-in person (per address before sign-in).
MCPGATE_RATE_LIMIT_AUTHORIZE = envrate("MCPGATE_RATE_LIMIT_AUTHORIZE", "60/m")
MCPGATE_RATE_LIMIT_LOGIN = envrate("MCPGATE_RATE_LIMIT_LOGIN", "10/m")  # password sign-in POSTs, per address
MCPGATE_RATE_LIMIT_MCP = envrate("MCPGATE_RATE_LIMIT_MCP", "600/m")  # /mcp, per access token
# Audit rows a caller nobody signed in can cause, per event kind and address; the rest are counted
# and the count is written on the next row of that kind from that address (detail "suppressed").
MCPGATE_AUDIT_ANONYMOUS_RATE = envrate("MCPGATE_AUDIT_ANONYMOUS_RATE", "10/m")
# `manage.py purge_audit` deletes audit events older than this; 0 keeps them forever.
MCPGATE_AUDIT_RETENTION_DAYS = envint("MCPGATE_AUDIT_RETENTION_DAYS", "365")
# The embedded cache's directory (when CACHE_URL is unset): next to the SQLite database by default,
# where the service can already write. Every worker process of the host must see the same one.
MCPGATE_CACHE_DIR = envstr("MCPGATE_CACHE_DIR") or str(
    Path(envstr("MCPGATE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))).parent / "cache"
)

# ---------------------------------------------------------------------------
# Django
# ---------------------------------------------------------------------------
INSTALLED_APPS = [
    "console",  # before the admin: its templates override the admin's
    "console.admin_site.OperatorsAdminConfig",  # django.contrib.admin, with the operators' site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oauth2_provider",
    "rest_framework",
    "django_ratelimit",  # its system check vets CACHES (see SILENCED_SYSTEM_CHECKS)
    "audit",
    "identity",
    "oauth_ext",
    "mcp_bridge",
    "notes",  # example tools; remove from a deployment that does not want them
]

MIDDLEWARE = [
    # First: decides which forwarded headers are believed and which host this is.
    "mcpgate.middleware.TrustedProxyMiddleware",
    "mcpgate.middleware.HostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "identity.middleware.ProxyIdentityMiddleware",
    # Rate limits of the Django routes, by client address (TrustedProxyMiddleware) or by the person
    # signed in (the two above). It answers before any view, CSRF check or form. /mcp has its own
    # check after authentication (mcp_bridge.endpoint).
    "mcpgate.ratelimit_middleware.RateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mcpgate.urls"
WSGI_APPLICATION = "mcpgate.wsgi.application"
ASGI_APPLICATION = "mcpgate.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": envdatabase(envsecret("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "oauth_ext.User"

# The person oauth2-proxy vouched for (identity.backends); Django's password sign-in where no proxy is used.
AUTHENTICATION_BACKENDS = ["identity.backends.ProxyIdentityBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# People's passwords: Django's default hashers, the first for new ones. OAuth client secrets are
# generated, so they get a fast salted hash instead (oauth_ext.hashers, OAUTH2_PROVIDER's
# CLIENT_SECRET_HASHER); PBKDF2 stays listed so secrets stored with it verify, and move on use.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    "oauth_ext.hashers.ClientSecretHasher",
]
LOGIN_URL = "/accounts/login/"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# WhiteNoise serves the admin's and our static files under gunicorn straight from the app
# directories, so there is no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

# The rate limits' counters (see envcache). CACHE_URL=redis://… (or rediss://, unix://) for
# several replicas; CACHE_URL_FILE for a URL with a password kept in a container secret.
CACHES = {"default": envcache(envsecret("CACHE_URL"), MCPGATE_CACHE_DIR)}
RATELIMIT_USE_CACHE = "default"
# A counter that vanished between django-ratelimit's add and incr (evicted, cleared) admits the
# request rather than refusing it with no window to wait for; see mcpgate.ratelimit for outages.
RATELIMIT_FAIL_OPEN = True

# ---------------------------------------------------------------------------
# Security: the scheme is set by HostMiddleware from the configured URL of the host
# the request came to, so SECURE_PROXY_SSL_HEADER is never taken from a client.
# Cookie flags and HSTS are decided per request from that host, not once from every URL:
# both are on here, SecurityMiddleware sends HSTS only on secure (https-host) requests, and
# HostMiddleware takes the Secure flag off cookies set on an http host (loopback only, see
# envbaseurl). An https public host next to an http loopback one so gets both, the other neither.
# ---------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_NAME = "mcpgate_session"
CSRF_COOKIE_NAME = "mcpgate_csrftoken"
SECURE_SSL_REDIRECT = False  # TLS ends at the proxy; redirects there, not here
SECURE_HSTS_SECONDS = envint("MCPGATE_HSTS_SECONDS", "31536000")
SECURE_HSTS_INCLUDE_SUBDOMAINS = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [
    # TLS terminates at oauth2-proxy / the load balancer, which redirects http to https.
    "security.W008",
    # HSTS is sent for this service's own hosts. includeSubDomains and preload would bind
    # every sibling of the parent domain too: that is the parent domain owner's decision.
    "security.W005",
    "security.W021",
    # DOT sees only the scheme list, and "http" is needed for native apps' loopback
    # callbacks (RFC 8252 §7.3). oauth_ext.redirects refuses http anywhere but loopback.
    "oauth2_provider.E003",
    # django-ratelimit knows memcached and django-redis, and warns "not officially supported" for
    # any other backend (diskcache's included). What it needs is an atomic incr shared by every
    # process: diskcache increments inside one SQLite write transaction (BEGIN IMMEDIATE) on a
    # file every worker opens, and Django's RedisCache with Redis INCR. The backends it knows to
    # be wrong (local memory, files, the database) still fail its check with E003; envcache()
    # offers neither.
    "django_ratelimit.W001",
]

# ---------------------------------------------------------------------------
# django-oauth-toolkit
# ---------------------------------------------------------------------------
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth_ext.Client"

OAUTH2_PROVIDER = {
    "OAUTH2_VALIDATOR_CLASS": "oauth_ext.validators.MCPGateValidator",
    # DOT's admin registers these for its models (they show no token value, DOT's would show masked ones).
    "APPLICATION_ADMIN_CLASS": "console.admin.clients.ClientAdmin",
    "ACCESS_TOKEN_ADMIN_CLASS": "console.admin.credentials.AccessTokenAdmin",
    "REFRESH_TOKEN_ADMIN_CLASS": "console.admin.credentials.RefreshTokenAdmin",
    "GRANT_ADMIN_CLASS": "console.admin.credentials.GrantAdmin",
    "ID_TOKEN_ADMIN_CLASS": "console.admin.credentials.IDTokenAdmin",
    "SCOPES_BACKEND_CLASS": "oauth_ext.scopes.MCPGateScopes",
    # oauth_ext.hashers.ClientSecretHasher.algorithm: a salted HMAC, no key stretching, since
    # client secrets are generated (see its docstring); it must be in PASSWORD_HASHERS.
    "CLIENT_SECRET_HASHER": "client_secret_pbkdf2_sha256",
    "SCOPES": MCPGATE_SCOPES,
    "DEFAULT_SCOPES": ["mcp"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": MCPGATE_ACCESS_TOKEN_SECONDS,
    "REFRESH_TOKEN_EXPIRE_SECONDS": MCPGATE_REFRESH_TOKEN_SECONDS,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # DOT's own grace period must stay 0 with hashed storage (oauth2_provider.E001); the
    # validator implements MCPGATE_REFRESH_GRACE_SECONDS by minting a sibling pair instead.
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "PKCE_REQUIRED": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https", "cursor"],
    "ALLOW_LOCALHOST_LOOPBACK": True,
    "REQUEST_APPROVAL_PROMPT": "force",  # consent memory is ours (oauth_ext.models.Consent)
    # RFC 9700 gates, all enforced.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    # RFC 8414 metadata: what this server really accepts.
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["none", "client_secret_post", "client_secret_basic"],
    # RFC 7591 registration is open (MCP clients register anonymously); oauth_ext bounds it.
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    # Client ID Metadata Documents, fetched by DOT's SSRF-safe fetcher, from allowlisted hosts only.
    "CIMD_ENABLED": True,
    "CIMD_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.cimd.HostAllowlistCIMDPermission",),
    "CIMD_ALLOWED_HOSTS": MCPGATE_CIMD_ALLOWED_HOSTS,
    "OAUTH2_PROTECTED_RESOURCE_NAME": envstr("MCPGATE_RESOURCE_NAME", "mcpgate"),
}

# ---------------------------------------------------------------------------
# DRF: only what /mcp and future APIs need.
# ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
}

# ---------------------------------------------------------------------------
# Logging: to stderr. Tokens, codes and secrets are never logged: the libraries that log
# request URLs or bodies at DEBUG are held at a higher level whatever MCPGATE_LOG_LEVEL says.
# ---------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": envstr("MCPGATE_LOG_LEVEL", "INFO")},
    "loggers": {
        # oauthlib logs request bodies (codes, secrets) at DEBUG; never let that through.
        "oauthlib": {"level": "WARNING"},
        # DOT logs the authorization response URL, code included, at DEBUG.
        "oauth2_provider": {"level": "INFO"},
        "django.db.backends": {"level": "WARNING"},
        # The SDK logs every stateless exchange at INFO ("Terminating session: None").
        "mcp.server.streamable_http": {"level": "WARNING"},
    },
}
