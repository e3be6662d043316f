"""The production shape on loopback: oauth2-proxy (real) in front of gunicorn (real) on the test database.

```
browser / MCP client ─► oauth2-proxy "internal" 127.0.0.1:PI ─┐
                     ─► oauth2-proxy "public"   localhost:PP ──┼─► gunicorn A ─┐
   (a load balancer's second target) oauth2-proxy 127.0.0.1:PB ─► gunicorn B ─┴─► the database
                           └─ signs people in with the mock OIDC provider (Google's stand-in)
```

Each oauth2-proxy runs ``--config deploy/oauth2-proxy.cfg --alpha-config deploy/oauth2-proxy.yaml``
plus only what a deployment sets per instance, in the environment: the provider (``oidc`` with the
mock's issuer, where production keeps the default ``google``), the client id and secret, the cookie
secret, the listen address and the upstream; and as flags: the email domain and the redirect URL.
``--cookie-secure=false`` is the one test-only flag: browsers (and httpx) do not send a Secure
cookie over the plain-http loopback these tests use.

The two hosts mcpgate serves are the proxies' addresses (``pass_host_header`` keeps them), so
``MCPGATE_INTERNAL_URL`` / ``MCPGATE_PUBLIC_URL`` name the proxies' ports, not gunicorn's.
``MCPGATE_TRUSTED_PROXIES=127.0.0.1/32``: oauth2-proxy connects from 127.0.0.1; the tests reach
gunicorn "from elsewhere" by binding their side of the connection to 127.0.0.2.

Replica B is a second gunicorn with the same settings behind its own oauth2-proxy (a sidecar, the
way each replica gets one behind a load balancer); a test "routes" a request to B by sending it
to B's proxy with the Host header of the internal host, as the load balancer would.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.e2e.server import (
    database_env,
    gunicorn_command,
    manage,
    running_on_the_test_database,
    server_env,
    stop,
)
from tests.ports import free_port

from . import credentials, mockoidc
from .oauth2proxy import oauth2_proxy, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
EMAIL_DOMAIN = "example.com"
UNTRUSTED_ADDRESS = "127.0.0.2"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 25.0


@dataclass
class Gunicorn:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Deployment:
    """One running deployment: its URLs, its processes, its provider."""

    mode: str
    internal: str  # http://127.0.0.1:PI, through oauth2-proxy
    public: str  # http://localhost:PP, through oauth2-proxy
    replica_b: str  # http://127.0.0.1:PB, oauth2-proxy in front of gunicorn B
    mock: mockoidc.MockOIDC
    env: dict[str, str]
    gunicorns: dict[str, Gunicorn] = field(default_factory=dict)
    proxy_logs: dict[str, Path] = field(default_factory=dict)

    def base(self, host: str) -> str:
        return {"internal": self.internal, "public": self.public}[host]

    def browser(
        self, person: str = "alice@example.com", *, hd: str | None = None, groups: str = "", **kwargs: Any
    ) -> httpx2.Client:
        """A person's browser: keeps cookies; tells the mock provider who is at the keyboard."""
        headers = {mockoidc.PERSON_HEADER: person, mockoidc.GROUPS_HEADER: groups}
        if hd is not None:
            headers[mockoidc.HD_HEADER] = hd
        return httpx2.Client(trust_env=False, timeout=20.0, headers=headers, event_hooks=credentials.hooks(), **kwargs)

    def client(self, host: str = "internal", **kwargs: Any) -> httpx2.Client:
        """An HTTP client (an MCP client's machine side) for one host, through oauth2-proxy."""
        return httpx2.Client(
            base_url=self.base(host), trust_env=False, timeout=20.0, event_hooks=credentials.hooks(), **kwargs
        )

    def direct(
        self, replica: str = "a", *, host: str = "internal", local_address: str = UNTRUSTED_ADDRESS
    ) -> httpx2.Client:
        """Straight to a gunicorn, around oauth2-proxy, from ``local_address``, naming ``host``."""
        gunicorn = self.gunicorns[replica]
        return httpx2.Client(
            base_url=f"http://127.0.0.1:{gunicorn.port}",
            headers={"Host": self.base(host).removeprefix("http://")},
            transport=httpx2.HTTPTransport(local_address=local_address),
            event_hooks=credentials.hooks(),
            trust_env=False,
            timeout=20.0,
        )

    def via_replica_b(self, **kwargs: Any) -> httpx2.Client:
        """The internal host, as the load balancer would send it to replica B."""
        return httpx2.Client(
            base_url=self.replica_b,
            headers={"Host": self.internal.removeprefix("http://")},
            trust_env=False,
            timeout=20.0,
            event_hooks=credentials.hooks(),
            **kwargs,
        )

    def manage(self, *args: str) -> str:
        """``manage.py ARGS`` with the servers' settings (so on the same database): its stdout."""
        return manage(self.env, *args)

    def logs(self) -> str:
        """gunicorn's and oauth2-proxy's logs, all of them."""
        return "\n".join(
            [g.log() for g in self.gunicorns.values()]
            + [p.read_text(errors="replace") for p in self.proxy_logs.values()]
        )


def cookie_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@contextlib.contextmanager
def gunicorn(name: str, env: dict[str, str], log_path: Path, ready_host: str) -> Iterator[Gunicorn]:
    """The production command line: ``gunicorn -c deploy/gunicorn.conf.py``."""
    port = free_port()
    command = gunicorn_command(port)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Gunicorn(name, port, process, log_path)
    try:
        # /healthz answers only on a configured host: ask as the internal host does.
        wait_until_ready(
            process,
            f"http://127.0.0.1:{port}",
            "/healthz",
            what=f"gunicorn {name}",
            log_path=log_path,
            timeout=START_TIMEOUT,
            interval=0.1,
            headers={"Host": ready_host},
        )
        with running_on_the_test_database(process):
            yield server
    finally:
        stop(process, STOP_TIMEOUT)


def proxy_args(*, redirect_url: str) -> list[str]:
    """The flags a deployment sets on top of deploy/oauth2-proxy.cfg and .yaml."""
    return [
        f"--redirect-url={redirect_url}",
        f"--email-domain={EMAIL_DOMAIN}",
        "--cookie-secure=false",  # test-only: plain http on loopback
    ]


@contextlib.contextmanager
def deployment(
    *,
    mode: str,
    db_settings: dict[str, Any],
    workdir: Path,
    mcpgate_env: dict[str, str] | None = None,
    replicas: tuple[str, ...] = ("a", "b"),
) -> Iterator[Deployment]:
    """Start the mock provider, gunicorn A (and B), and an oauth2-proxy for each host (and for B).

    ``mode``: MCPGATE_IDENTITY_MODE; for ``id_token`` mcpgate is pointed at the mock provider as
    its issuer, with oauth2-proxy's client id as the audience.
    """
    client_id = "mcpgate-proxy-" + secrets.token_hex(4) + ".apps.googleusercontent.com"
    client_secret = secrets.token_urlsafe(24)
    internal_port, public_port, b_port = free_port(), free_port(), free_port()
    internal = f"http://127.0.0.1:{internal_port}"
    public = f"http://localhost:{public_port}"
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(mockoidc.serve(client_id, client_secret))
        env = server_env(
            internal_port,
            database_env(db_settings),
            {
                "MCPGATE_INTERNAL_URL": internal,
                "MCPGATE_PUBLIC_URL": public,
                "MCPGATE_TRUSTED_PROXIES": "127.0.0.1/32",
                "MCPGATE_EMAIL_DOMAINS": EMAIL_DOMAIN,
                "MCPGATE_LOG_LEVEL": "INFO",
                "MCPGATE_IDENTITY_MODE": mode,
                **(
                    {"MCPGATE_OIDC_ISSUER": mock.issuer, "MCPGATE_OIDC_AUDIENCE": client_id}
                    if mode == "id_token"
                    else {}
                ),
                **(mcpgate_env or {}),
            },
        )
        gunicorns = {
            name: stack.enter_context(
                gunicorn(name, env, workdir / f"gunicorn-{name}.log", ready_host=f"127.0.0.1:{internal_port}")
            )
            for name in replicas
        }
        proxy_env = {
            "PATH": os.environ.get("PATH", ""),
            "OAUTH2_PROXY_CLIENT_ID": client_id,
            "OAUTH2_PROXY_CLIENT_SECRET": client_secret,
            "OAUTH2_PROXY_COOKIE_SECRET": cookie_secret(),
            # Production keeps the YAML's default, google; here the mock stands in for it.
            "OAUTH2_PROXY_PROVIDER": "oidc",
            "OAUTH2_PROXY_OIDC_ISSUER_URL": mock.issuer,
        }
        deployed = Deployment(mode, internal, public, f"http://127.0.0.1:{b_port}", mock, env, gunicorns)
        proxies = [
            ("internal", f"127.0.0.1:{internal_port}", internal, gunicorns["a"]),
            # Listens on 127.0.0.1; clients call it by the name localhost (the public host).
            ("public", f"127.0.0.1:{public_port}", public, gunicorns["a"]),
        ]
        if "b" in gunicorns:
            proxies.append(("replica-b", f"127.0.0.1:{b_port}", internal, gunicorns["b"]))
        for name, address, base, upstream in proxies:
            log_path = workdir / f"oauth2-proxy-{name}.log"
            deployed.proxy_logs[name] = log_path
            env_here = {
                **proxy_env,
                "OAUTH2_PROXY_HTTP_ADDRESS": address,
                "OAUTH2_PROXY_UPSTREAM": f"http://127.0.0.1:{upstream.port}/",
            }
            args = proxy_args(redirect_url=base + "/oauth2/callback")
            stack.enter_context(oauth2_proxy(args=args, env=env_here, address=address, log_path=log_path))
        yield deployed
