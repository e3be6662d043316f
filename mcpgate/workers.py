"""The gunicorn worker mcpgate is served by (uvicorn's, on uvloop, parsing HTTP with h11), and where it listens.

``gunicorn -c deploy/gunicorn.conf.py mcpgate.asgi:application`` (its ``worker_class``;
``listen_per_worker`` and ``listen_as_started`` in its ``on_starting`` and ``on_reload``).

uvicorn's own ``UvicornWorker`` picks the event loop and the HTTP parser by what happens to be
installed ("auto"). This one names them, so what serves the internet does not change with an
image's extra packages:

- **uvloop** (libuv) instead of asyncio's own loop: the same asyncio API, and about 6 % more
  /mcp tools/call per worker at 16 connections (BENCHMARKS.md, "uvloop").
- **h11** as the HTTP/1.1 parser, as "auto" picks without httptools. httptools would give about
  7 % more again, but uvicorn sets no limit on a request's headers with it: it read one header of
  200 MB and answered 200. h11 answers 400 and closes once it holds 16 KB of headers it cannot
  yet complete (``h11_max_incomplete_event_size``), so what one connection can make a worker
  buffer stays bounded (that, plus whatever arrives complete in one read of the socket).
  /mcp and the token endpoint take connections that need not pass through oauth2-proxy.

It also takes what the application loaded out of the garbage collector's way (``load_wsgi``), and
has each listening socket closed once when it stops, not twice (``run``).
"""

from __future__ import annotations

import gc
import os
import socket
from typing import Any

from gunicorn import systemd, util
from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    """``uvicorn_worker.UvicornWorker`` with its loop and HTTP parser named (see the module)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "uvloop", "http": "h11"}
    sockets: list[Any]  # gunicorn's listeners (gunicorn.sock wrappers), set by the arbiter

    def load_wsgi(self) -> None:
        """Load the application, then freeze what it left (``gc.freeze``): Django, DRF, oauthlib, the MCP
        SDK and their pydantic models are about 150,000 objects that live as long as the worker,
        and every full collection walked them all again. Frozen, a collection walks only what requests
        made since. Garbage left by the loading is collected first, so that none is frozen with it.

        One worker, 16 connections, tools/call (BENCHMARKS.md, "gc.freeze"): p99 35-37 ms instead of
        44-64 ms, and 2-4 % more calls per second.
        """
        super().load_wsgi()
        gc.collect()
        gc.freeze()

    def run(self) -> None:
        """Serve, handing the event loop the listening sockets themselves rather than gunicorn's wrappers.

        The server an event loop makes on a socket owns it (asyncio's ``create_server(sock=...)``) and
        closes it when it closes, as uvicorn's shutdown has it do first. uvloop, given gunicorn's wrapper
        (a ``socket.socket`` look-alike), closes the descriptor and then calls the wrapper's ``close()``,
        which closes the same number again: "Error while closing socket [Errno 9] Bad file descriptor"
        at every worker's exit (gunicorn#3013), or, had another thread opened a file or a connection in
        between and been given that number (requests still drain then), that one closed under it.
        Given the socket, uvloop takes the descriptor from it, and every later ``close()`` does nothing.
        """
        self.sockets = [getattr(listener, "sock", listener) for listener in self.sockets]
        super().run()


def listen_per_worker(server: Any) -> None:
    """gunicorn's ``on_starting`` (``server``: the arbiter): each worker on a listening socket of its own
    where that works, and an address already in use refused before any worker starts.

    With ``reuse_port`` (``MCPGATE_REUSE_PORT``, on by default) gunicorn 27 binds nothing in the arbiter:
    each worker binds the address itself with ``SO_REUSEPORT``, and Linux hands each new connection to
    one of those sockets by a hash of its addresses (socket(7)). On the one socket all workers share
    otherwise, the worker that wakes first accepts every connection waiting (uvloop accepts until none
    is left), and a client's keep-alive connections opened together stay on that worker: with two
    workers, 2 of 6 bursts of 16 connections all landed on one of them, which served them at one
    worker's rate (docs/reliability.md, "How connections reach the workers").

    Turned off here, leaving the one shared socket, where a socket per worker cannot work: a Unix
    socket or file descriptor address (each worker would replace the one before it), port 0 (each
    would get a port of its own), and sockets handed over by systemd's socket activation or by a
    re-executing arbiter (USR2).

    Since the arbiter no longer holds the port, it checks the port is free itself, binding it once
    without ``SO_REUSEPORT``: otherwise a second server of the same user on the same port would share
    its connections silently, and a taken port would have each worker fail and be restarted, over and
    over, instead of gunicorn refusing to start ("Error: Cannot listen on HOST:PORT: Address already in
    use", exit status 1).
    """
    config = server.cfg
    if not config.reuse_port:
        return
    addresses = config.address
    handed_over = systemd.listen_fds(unset_environment=False) > 0 or "GUNICORN_FD" in os.environ
    if handed_over or not all(isinstance(address, tuple) and address[1] for address in addresses):
        config.set("reuse_port", False)
        server.log.info("Listening on one socket shared by the workers (reuse_port needs TCP addresses with a port)")
        return
    for host, port in addresses:
        family = socket.AF_INET6 if util.is_ipv6(host) else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Not SO_REUSEPORT: that is what would let the bind succeed beside another server.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise RuntimeError(f"Cannot listen on {_shown(host, port)}: {exc.strerror}") from None
    # gunicorn's own "Listening at:" line is empty then: it lists the arbiter's sockets.
    where = ", ".join(_shown(host, port) for host, port in addresses)
    server.log.info("Each worker listens on a socket of its own at %s (SO_REUSEPORT)", where)


def _shown(host: str, port: int) -> str:
    """An address as it is written in a URL or ``--bind``: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if util.is_ipv6(host) else f"{host}:{port}"


def listen_as_started(server: Any) -> None:
    """gunicorn's ``on_reload`` (SIGHUP): the new workers listen as the arbiter started them.

    A reload reads the configuration again, ``reuse_port`` with it, and ``listen_per_worker`` does not
    run again. The arbiter's sockets say what was decided at start: it holds some when the workers
    share them, none when each worker has its own. A Unix socket's workers given ``reuse_port`` back
    would each replace the path; workers given a socket of their own beside the arbiter's (bound
    without ``SO_REUSEPORT``) could not bind at all, and would be restarted over and over.
    """
    server.cfg.set("reuse_port", not server.LISTENERS)
