"""mcpgate served by a real gunicorn, as in production, for tests that talk to it over TCP.

One port answers on two hosts: the internal one (``http://127.0.0.1:PORT``) and the public one
(``http://localhost:PORT``). Every HTTP client made by ``GunicornServer.client`` reports the
credentials it sends and receives, so the fixture can check afterwards that gunicorn's log
contains none of them.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import httpx2

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
# As in production (``make run``): the ASGI site, two workers (deploy/gunicorn.conf.py's mcpgate.workers.Worker).
ASGI_APPLICATION = "mcpgate.asgi:application"
STOP_TIMEOUT = 25.0

# Keys whose values are credentials wherever they appear (JSON bodies, form bodies, query strings).
SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "code",
        "code_verifier",
        "client_secret",
        "registration_access_token",
        "csrfmiddlewaretoken",
        "password",
    }
)
# Shorter values could turn up in a log by chance (timestamps, ports); no real credential is this short.
MIN_SECRET_LENGTH = 16

# Variables of the test process that must not leak into the server's configuration.
_NOT_INHERITED_PREFIXES = ("MCPGATE_", "DATABASE_URL", "SECRET_KEY", "DJANGO_")
_NOT_INHERITED = frozenset(
    {"DEBUG", "CACHE_URL", "CACHE_URL_FILE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"}
)

# Every rate limit (mcpgate.ratelimit) far above what one test sends from its loopback address.
GENEROUS_RATE_LIMITS = {
    "MCPGATE_REGISTRATION_RATE_PER_MINUTE": "100000",
    "MCPGATE_RATE_LIMIT_TOKEN": "100000/m",
    "MCPGATE_RATE_LIMIT_TOKEN_CLIENT": "100000/m",
    "MCPGATE_RATE_LIMIT_REVOKE": "100000/m",
    "MCPGATE_RATE_LIMIT_AUTHORIZE": "100000/m",
    "MCPGATE_RATE_LIMIT_LOGIN": "100000/m",
    "MCPGATE_RATE_LIMIT_MCP": "100000/m",
    "MCPGATE_AUDIT_ANONYMOUS_RATE": "100000/m",
}


# The gunicorn servers running on the test database now, by arbiter pid (``running_on_the_test_database``):
# a transactional test's teardown waits for them to settle before it empties the tables (tests/conftest.py).
RUNNING: set[int] = set()


@contextlib.contextmanager
def running_on_the_test_database(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Count ``process`` among the servers a transactional test's flush must wait for, while it runs."""
    RUNNING.add(process.pid)
    try:
        yield
    finally:
        RUNNING.discard(process.pid)


class ServerFailed(RuntimeError):
    """gunicorn exited or did not answer in time; the message carries its log."""


def database_env(settings_dict: dict[str, Any]) -> dict[str, str]:
    """The environment that points mcpgate's settings at the database ``settings_dict`` describes.

    Pass the *test* database's settings (after pytest-django created it): for SQLite its NAME is
    already the "-test" file, which a server started with MCPGATE_SQLITE_PATH=NAME simply opens.
    """
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return {"MCPGATE_SQLITE_PATH": str(settings_dict["NAME"])}
    if engine == "mcpgate.postgresql":
        user = quote(str(settings_dict.get("USER") or ""), safe="")
        password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(settings_dict.get("HOST") or "")
        port = str(settings_dict.get("PORT") or "")
        # Not the connection pool: the server sizes its own (MCPGATE_DB_POOL_SIZE), and a URL cannot carry one.
        options = {str(k): str(v) for k, v in (settings_dict.get("OPTIONS") or {}).items() if k != "pool"}
        if host.startswith("/"):  # a socket directory: libpq's ?host=
            options["host"] = host
            host = ""
        netloc = auth + host + (f":{port}" if port else "")
        query = "?" + urlencode(options) if options else ""
        return {"DATABASE_URL": f"postgresql://{netloc}/{quote(str(settings_dict['NAME']), safe='')}{query}"}
    raise NotImplementedError(f"no gunicorn end-to-end support for {engine}")


def _cookie_pairs(header: str) -> list[tuple[str, str]]:
    pairs = []
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep:
            pairs.append((name, value.strip('"')))
    return pairs


@dataclass
class GunicornServer:
    """A running gunicorn, its two base URLs, and every credential the tests have seen."""

    port: int
    env: dict[str, str]
    log_path: Path
    seen: set[str] = field(default_factory=set)

    @property
    def internal(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public(self) -> str:
        return f"http://localhost:{self.port}"

    def base(self, host: str) -> str:
        """``"internal"`` or ``"public"`` → that host's base URL."""
        return {"internal": self.internal, "public": self.public}[host]

    # -- credentials -------------------------------------------------------------------
    def remember(self, *values: object) -> None:
        """Note credential values, which gunicorn's log must never contain."""
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                self.seen.add(value)

    def _remember_pairs(self, pairs: list[tuple[str, str]]) -> None:
        self.remember(*(value for key, value in pairs if key in SECRET_KEYS))

    def _on_request(self, request: httpx2.Request) -> None:
        self._remember_pairs(parse_qsl(request.url.query.decode()))
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            self._remember_pairs(parse_qsl(request.content.decode()))
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        self.remember(credentials)
        if scheme.lower() == "basic":  # client_id:client_secret; only the secret is one
            with contextlib.suppress(ValueError):
                self.remember(unquote(base64.b64decode(credentials).decode().partition(":")[2]))
        self.remember(*(value for _, value in _cookie_pairs(request.headers.get("cookie", ""))))

    def _on_response(self, response: httpx2.Response) -> None:
        response.read()
        self._scan_response(response)

    async def _on_async_request(self, request: httpx2.Request) -> None:
        self._on_request(request)

    async def _on_async_response(self, response: httpx2.Response) -> None:
        await response.aread()
        self._scan_response(response)

    def _scan_response(self, response: httpx2.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                body = response.json()
                if isinstance(body, dict):
                    self.remember(*(value for key, value in body.items() if key in SECRET_KEYS))
        location = response.headers.get("location", "")
        if location:
            self._remember_pairs(parse_qsl(urlsplit(location).query))
        for set_cookie in response.headers.get_list("set-cookie"):
            self.remember(*(value for _, value in _cookie_pairs(set_cookie.split(";", 1)[0])))

    def client(self, host: str = "internal", **kwargs: Any) -> httpx2.Client:
        """A real HTTP client for one host; its traffic is scanned for credentials.

        Nothing from the environment (proxy variables, netrc) applies: the server is on loopback.
        """
        kwargs.setdefault("timeout", 20.0)
        return httpx2.Client(
            base_url=self.base(host),
            trust_env=False,
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
            **kwargs,
        )

    def async_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        """An async HTTP client (for the ``mcp`` SDK), scanned for credentials like ``client``.

        No base URL: an MCP client is given the full /mcp URL and finds the rest itself.
        """
        kwargs.setdefault("timeout", 20.0)
        return httpx2.AsyncClient(
            trust_env=False,
            event_hooks={"request": [self._on_async_request], "response": [self._on_async_response]},
            **kwargs,
        )

    # -- the same deployment, from the command line --------------------------------------
    def manage(self, *args: str) -> str:
        """Run ``manage.py ARGS`` in the server's environment (so on the same database); its stdout."""
        return manage(self.env, *args)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def leaked(self) -> list[str]:
        """Credentials seen by the tests that appear in the log (abbreviated, for a message)."""
        log = self.log()
        return sorted(value[:10] + "…" for value in self.seen if value in log)


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py ARGS`` with the environment ``env`` (a server's settings); its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def server_env(port: int, db_env: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """A production-like environment: DEBUG off, a random SECRET_KEY, oauth2-proxy on loopback."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_NOT_INHERITED_PREFIXES) and key not in _NOT_INHERITED
    }
    env.update(
        {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "False",
            # Exactly this environment: never a developer's .env from the checkout (mcpgate.env).
            "MCPGATE_ENV_FILE": os.devnull,
            "MCPGATE_INTERNAL_URL": f"http://127.0.0.1:{port}",
            "MCPGATE_PUBLIC_URL": f"http://localhost:{port}",
            # The test process plays oauth2-proxy, from loopback.
            "MCPGATE_TRUSTED_PROXIES": "127.0.0.1/32",
            "MCPGATE_EMAIL_DOMAINS": "example.com",
            "MCPGATE_WORKERS": "2",
            # The most talkative level an operator can choose: even then nothing secret may be logged.
            "MCPGATE_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
            # The test run's cache directory (tests/testenv.py): tests/conftest.py clears it before
            # each test, so every test starts with fresh rate-limit counters on this server too.
            # Outside pytest (the soak), one of the server's own, never the checkout's.
            "MCPGATE_CACHE_DIR": os.environ.get("MCPGATE_CACHE_DIR")
            or str(Path(tempfile.gettempdir()) / f"mcpgate-server-{port}-cache"),
            # Rate limits far above what these suites send from their one loopback address in a
            # test; tests/security/test_rate_limits_under_load.py sets the ones it measures.
            **GENEROUS_RATE_LIMITS,
            **db_env,
            **overrides,
        }
    )
    return env


def gunicorn_command(port: int, *, control_socket: Path | None = None) -> list[str]:
    """``gunicorn -c deploy/gunicorn.conf.py --bind 127.0.0.1:PORT
    [--control-socket PATH] mcpgate.asgi:application``."""
    command = [
        str(VENV_BIN / "gunicorn"),
        "-c",
        "deploy/gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    if control_socket is not None:
        command += ["--control-socket", str(control_socket)]
    return [*command, ASGI_APPLICATION]


@contextlib.contextmanager
def gunicorn(*, db_env: dict[str, str], log_path: Path, overrides: dict[str, str]) -> Iterator[GunicornServer]:
    """Run ``gunicorn -c deploy/gunicorn.conf.py mcpgate.asgi:application``.

    The production command line (see ``make run``): /mcp needs the ASGI application, whose
    lifespan starts the MCP SDK's session manager in each worker.
    """
    port = free_port()
    env = server_env(port, db_env, overrides)
    server = GunicornServer(port=port, env=env, log_path=log_path)
    server.remember(env["SECRET_KEY"])
    # gunicorn's default control socket is one per user (~/.gunicorn/gunicorn.ctl): a second
    # instance unlinks the first's and removes its own on exit. Keep the test's to itself.
    command = gunicorn_command(port, control_socket=log_path.with_name("gunicorn.ctl"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_ready(server, process)
        with running_on_the_test_database(process):
            yield server
    finally:
        stop(process)


def _wait_until_ready(server: GunicornServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx2.Client(base_url=server.internal, trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerFailed(f"gunicorn exited with status {process.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx2.TransportError):
                if http.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise ServerFailed(f"gunicorn did not answer /healthz within {START_TIMEOUT:.0f}s:\n{server.log()}")


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process (gunicorn's arbiter: workers finish their request and close their
    database connections); SIGKILL its session if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
