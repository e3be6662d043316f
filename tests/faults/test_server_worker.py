"""The production worker (mcpgate.workers.Worker): uvloop, and headers still incomplete past 16 KB refused."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx2
import pytest

from .deployment import Deployment

pytestmark = pytest.mark.e2e

HEADER_BOUND = 16 * 1024  # h11's max_incomplete_event_size, uvicorn's default


def test_every_worker_runs_on_uvloop(faults_deployment: Deployment) -> None:
    workers = faults_deployment.workers()
    assert workers
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/uvloop/loop." in maps, f"worker {pid} has not loaded uvloop"


def _raw_request(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` on a connection of its own (``pause`` seconds apart) and read what comes back
    until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_headers_still_incomplete_past_16_kb_are_answered_400_and_closed(faults_deployment: Deployment) -> None:
    """The bound the worker keeps by parsing with h11: a client that keeps sending one header (here
    17 KB of it, 1 KB at a time) is cut off, not buffered (httptools, under uvicorn, read 200 MB)."""
    port = faults_deployment.server.port
    head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: ".encode()
    padding = [b"a" * 1024] * (HEADER_BOUND // 1024 + 1)

    answer = _raw_request(port, head, *padding, pause=0.005)

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert b"connection: close" in rest.lower()
    # The worker goes on serving.
    assert httpx2.get(f"{faults_deployment.server.internal}/healthz", timeout=10).status_code == 200


def test_headers_just_under_the_bound_still_reach_the_application(faults_deployment: Deployment) -> None:
    """A request whose 8 KB of headers arrive at once gets mcpgate's own answer: 401, no token."""
    port = faults_deployment.server.port
    padding = "a" * (HEADER_BOUND // 2)
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: {padding}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()

    answer = _raw_request(port, head)

    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"www-authenticate: bearer" in answer.lower()
