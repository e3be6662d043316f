"""Django settings for mcpgate: one module, every value read from the environment (mcpgate.env)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from mcpgate.env import (
    envbaseurl,
    envbool,
    envcache,
    envchoice,
    envdatabase,
    envfernetkeys,
    envfloat,
    envint,
    envlist,
    envnetworks,
    envrate,
    envscopes,
    envsecret,
    envstr,
    load_env_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# A local .env (written by `make run`), or the file MCPGATE_ENV_FILE names. Loaded before anything
# is read and never over a variable already set: the real environment always wins.
load_env_file(default=BASE_DIR / ".env")

# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = envbool("DEBUG", False)
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
MCPGATE_IDENTITY_MODE = envchoice("MCPGATE_IDENTITY_MODE", "headers", choices=("headers", "id_token"))
MCPGATE_ID_TOKEN_HEADER = envstr("MCPGATE_ID_TOKEN_HEADER", "X-Forwarded-Id-Token")
MCPGATE_OIDC_ISSUER = envstr("MCPGATE_OIDC_ISSUER", "https://accounts.google.com")
MCPGATE_OIDC_JWKS_URL = envstr("MCPGATE_OIDC_JWKS_URL")  # unset: jwks_uri from the issuer's discovery document
MCPGATE_OIDC_AUDIENCE = envstr("MCPGATE_OIDC_AUDIENCE")
MCPGATE_OIDC_JWKS_CACHE_SECONDS = envint("MCPGATE_OIDC_JWKS_CACHE_SECONDS", 3600, minimum=60)
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
MCPGATE_SCOPES = {"mcp": "Use the organisation's MCP tools as you", **envscopes("MCPGATE_EXTRA_SCOPES")}
MCPGATE_ACCESS_TOKEN_SECONDS = envint("MCPGATE_ACCESS_TOKEN_SECONDS", 3600, minimum=60)
MCPGATE_REFRESH_TOKEN_SECONDS = envint("MCPGATE_REFRESH_TOKEN_SECONDS", 30 * 86400, minimum=300)
MCPGATE_REFRESH_GRACE_SECONDS = envint("MCPGATE_REFRESH_GRACE_SECONDS", 30)
MCPGATE_REGISTRATION_RATE_PER_MINUTE = envint("MCPGATE_REGISTRATION_RATE_PER_MINUTE", 30, minimum=1)
MCPGATE_UNUSED_CLIENT_PURGE_HOURS = envint("MCPGATE_UNUSED_CLIENT_PURGE_HOURS", 24, minimum=1)
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
# A tools/call's audit row is queued and written with the others of this many seconds, in one INSERT by a thread of
# the worker (audit/batch.py); a killed worker loses at most that window's rows. 0: each row written in its request.
MCPGATE_AUDIT_BATCH_SECONDS = envfloat("MCPGATE_AUDIT_BATCH_SECONDS", 0.1)
# `manage.py purge_audit` deletes audit events older than this; 0 keeps them forever.
MCPGATE_AUDIT_RETENTION_DAYS = envint("MCPGATE_AUDIT_RETENTION_DAYS", 365)

# The database: DATABASE_URL (or DATABASE_URL_FILE), sqlite:// or postgres://; unset, SQLite here.
MCPGATE_SQLITE_PATH = envstr("MCPGATE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
DATABASES = {"default": envdatabase("DATABASE_URL", sqlite_path=MCPGATE_SQLITE_PATH)}
# PostgreSQL: /mcp admission's token lookup and a tool call's audit row sent from the event loop on a second
# pool per worker (mcpgate/asyncdb.py). Off by default: faster for /mcp alone, but under the soak's mixed load
# (OAuth requests in the same workers) /mcp's p50 grew several-fold (docs/reliability.md, BENCHMARKS.md).
MCPGATE_MCP_LOOP_DATABASE = envbool("MCPGATE_MCP_LOOP_DATABASE", False)
# The embedded cache's directory (when CACHE_URL is unset): next to the SQLite database by default
# (DATABASE_URL's when it is a sqlite:// one), where the service can already write. Every worker
# process of the host must see the same one.
_SQLITE_FILE = (
    str(DATABASES["default"]["NAME"])
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    else MCPGATE_SQLITE_PATH
)
MCPGATE_CACHE_DIR = envstr("MCPGATE_CACHE_DIR") or str(Path(_SQLITE_FILE).parent / "cache")

# Observability (mcpgate.observability): log lines as text or one JSON object each, and who may
# scrape /metrics (loopback by default; empty: nobody).
MCPGATE_LOG_FORMAT = envchoice("MCPGATE_LOG_FORMAT", "text", choices=("text", "json"))
MCPGATE_METRICS_NETWORKS = envnetworks("MCPGATE_METRICS_NETWORKS", "127.0.0.0/8 ::1/128")

# The gateway (gateway.runtime): upstream MCP servers served through /mcp.
# Fernet keys sealing upstream credentials at rest: the first seals, all open (rotation: put the new
# key first, run `manage.py rotate_upstream_keys`, then drop the old one). `make run` writes one to .env.
MCPGATE_UPSTREAM_KEYS = envfernetkeys("MCPGATE_UPSTREAM_KEYS")
# How often each worker looks for upstreams added, changed or removed (at any replica), in seconds.
MCPGATE_UPSTREAM_POLL_SECONDS = envfloat("MCPGATE_UPSTREAM_POLL_SECONDS", 2.0, minimum=0.1)
# How often each upstream's tools, prompts and resources are listed again (list_changed notifications
# also trigger it), in seconds.
MCPGATE_UPSTREAM_REFRESH_SECONDS = envfloat("MCPGATE_UPSTREAM_REFRESH_SECONDS", 300.0, minimum=1.0)
# stdio upstreams each worker runs at most (one process per stdio upstream per worker).
MCPGATE_UPSTREAM_STDIO_MAX = envint("MCPGATE_UPSTREAM_STDIO_MAX", 16, minimum=0)

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
    "gateway",
    "mcp_bridge",
    "notes",  # example tools; remove from a deployment that does not want them
    "mcpgate.observability.apps.ObservabilityConfig",  # metrics, traces and /metrics once the apps are loaded
]

MIDDLEWARE = [
    # Outermost, so it observes every request, the ones the middleware below refuses included.
    "mcpgate.observability.middleware.ObservabilityMiddleware",
    # Then: decides which forwarded headers are believed and which host this is.
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

# The rate limits' counters (mcpgate.env.envcache). CACHE_URL=redis://… (or rediss://, unix://) for
# several replicas; CACHE_URL_FILE for a URL with a password kept in a container secret.
CACHES = {"default": envcache("CACHE_URL", directory=MCPGATE_CACHE_DIR)}
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
SECURE_HSTS_SECONDS = envint("MCPGATE_HSTS_SECONDS", 31536000)
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
# MCPGATE_LOG_FORMAT picks the formatter: text lines, or one JSON object per line for log shippers.
_LOG_FORMATTER = "json" if MCPGATE_LOG_FORMAT == "json" else "plain"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "mcpgate.observability.logs.JsonFormatter"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": _LOG_FORMATTER}},
    "root": {"handlers": ["stderr"], "level": envstr("MCPGATE_LOG_LEVEL", "INFO")},
    "loggers": {
        # oauthlib logs request bodies (codes, secrets) at DEBUG; never let that through.
        "oauthlib": {"level": "WARNING"},
        # DOT logs the authorization response URL, code included, at DEBUG.
        "oauth2_provider": {"level": "INFO"},
        "django.db.backends": {"level": "WARNING"},
        # The SDK logs every stateless exchange at INFO ("Terminating session: None").
        "mcp.server.streamable_http": {"level": "WARNING"},
        # The SDK's client (upstreams) logs every JSON-RPC message, arguments and results, and
        # tracebacks of lost streams at DEBUG.
        "mcp.client": {"level": "INFO"},
        # httpx logs every request's full URL at INFO: an upstream's query string may hold a credential.
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
    },
}
