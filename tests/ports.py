"""Free TCP ports on loopback for the servers the tests start, outside the range client connections take theirs from."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

# Linux's default ephemeral range, when /proc cannot say (net.ipv4.ip_local_port_range).
DEFAULT_EPHEMERAL = (32768, 60999)
LOWEST = 10000  # below this: well-known and registered services a developer may run
TRIES = 200

_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives a connecting socket (and a ``bind`` to port 0)."""
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def free_port() -> int:
    """A port on 127.0.0.1 nothing is bound to, below the ephemeral range, not handed out before in this process.

    A port from ``bind(("127.0.0.1", 0))`` comes from the ephemeral range, the one ``connect()`` also draws
    each client socket's local port from. Between that check and the server's own ``bind``, any of the
    run's outgoing connections (thousands: PostgreSQL, HTTP clients, the proxies) may be given the same
    number, and the server then fails with "address already in use": CI met it on 3cebf93 with
    oauth2-proxy on 127.0.0.1:38759. Below that range only a listener takes a port, and binding here
    checks there is none; a port handed out once is never handed out again, so several taken before any
    server binds (one deployment's three) differ.
    """
    low, _high = ephemeral_range()
    candidates = range(LOWEST, low) if low - LOWEST >= 1000 else None
    with _lock:
        for _ in range(TRIES):
            port = random.choice(candidates) if candidates else _any_port()
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 after {TRIES} tries")


def _any_port() -> int:
    """What the kernel picks, where there is no room below the ephemeral range."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
