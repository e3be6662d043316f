"""gunicorn configuration for mcpgate (used by `make run` and the production unit)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
# gunicorn puts only its working directory on sys.path before reading this file; started from
# elsewhere (gunicorn --chdir), the settings helpers must still be found.
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

from prometheus_client import multiprocess  # noqa: E402

from mcpgate.env import envbool, envint, envstr, load_env_file  # noqa: E402 - needs the path above
from mcpgate.workers import listen_as_started, listen_per_worker  # noqa: E402

# The same .env as the settings (MCPGATE_ENV_FILE or the checkout's), under the real environment:
# MCPGATE_BIND written there is honoured by `make run`, MCPGATE_BIND=… make run beats it, and
# --bind on the command line (make run BIND=…) beats both.
load_env_file(default=CHECKOUT / ".env")

bind = envstr("MCPGATE_BIND", "127.0.0.1:8000")
workers = envint("MCPGATE_WORKERS", 2, minimum=1)
# ASGI (mcpgate.asgi:application): /mcp is the MCP SDK's ASGI transport; Django serves the rest.
worker_class = "mcpgate.workers.Worker"  # uvicorn's, its loop and HTTP parser named (mcpgate/workers.py)
# A listening socket per worker, so that the kernel spreads connections over the workers; off where it
# cannot work (a Unix socket, systemd's sockets), a port in use refused, kept on reload (on_starting, on_reload).
reuse_port = envbool("MCPGATE_REUSE_PORT", True)
timeout = 30
graceful_timeout = 20
# The app decides what to trust from MCPGATE_TRUSTED_PROXIES; gunicorn must not rewrite
# REMOTE_ADDR or the scheme from forwarded headers itself.
forwarded_allow_ips = ""
proxy_allow_ips = ""
# gunicorn 27's control socket defaults to one path per user, so a second instance (a test run,
# a second replica on the host) would take it over; nothing here uses it.
control_socket_disable = True
accesslog = "-"
# No query strings in the access log: an authorize URL carries state and PKCE values.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
errorlog = "-"


class _NoQueryString(logging.Filter):
    """Drop the query from uvicorn's access lines, which ignore ``access_log_format`` above.

    Under ``mcpgate.workers.Worker`` (``worker_class`` above) the access line is uvicorn's own
    ('%s - "%s %s HTTP/%s" %d', with the path and query as the third argument); a token a
    client wrongly put in the URL (refused by /mcp, RFC 6750 §2.3) must not end up in the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


def post_worker_init(worker: object) -> None:
    logging.getLogger("uvicorn.access").addFilter(_NoQueryString())


# Where the workers listen (mcpgate.workers): decided before gunicorn binds, kept on reload.
def on_starting(server: object) -> None:
    listen_per_worker(server)


# Prometheus with several workers (mcpgate.observability.metrics): each worker writes its values to
# PROMETHEUS_MULTIPROC_DIR and /metrics merges them. The directory must start empty (values of a
# previous run would be added in), and a dead worker's live gauges must go with it. Emptied once the
# address is held (when_ready comes after the bind, before the first worker), so that a second
# server that cannot bind (a second `make run`) leaves the running one's values alone.
def when_ready(server: object) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()


def on_reload(server: object) -> None:
    listen_as_started(server)


def child_exit(server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
