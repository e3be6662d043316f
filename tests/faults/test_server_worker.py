"""The production worker (mcpgate.workers): uvloop, headers past 16 KB refused, a listening socket each."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx2
import pytest

from tests.e2e.server import REPO, VENV_BIN, gunicorn_command, stop

from .deployment import STARTUP_LINE, Deployment, children_of, socket_inodes

pytestmark = pytest.mark.e2e

HEADER_BOUND = 16 * 1024  # h11's max_incomplete_event_size, uvicorn's default
# What gunicorn logs when a worker's listening socket is closed a second time (tests/mcpgate/test_workers.py).
DOUBLE_CLOSE = "Error while closing socket"


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


# -- where the workers listen (mcpgate.workers.listen_per_worker) ----------------------------------


def test_each_worker_listens_on_a_socket_of_its_own_and_the_arbiter_on_none(faults_deployment: Deployment) -> None:
    port = faults_deployment.server.port
    listeners = faults_deployment.listeners()
    assert listeners.pop(faults_deployment.arbiter.pid) == set()
    assert len(listeners) == 2, listeners
    (first, second) = listeners.values()
    assert len(first) == len(second) == 1, listeners
    assert first != second
    assert f"Each worker listens on a socket of its own at 127.0.0.1:{port} (SO_REUSEPORT)" in (
        faults_deployment.server.log()
    )


def test_connections_opened_together_are_spread_over_both_workers(faults_deployment: Deployment) -> None:
    """Linux hands each new connection to one worker's socket by a hash of its addresses: 32 connections
    all on one of two workers would be a 1 in 2**31 chance. On one shared socket, the first worker to
    wake could take them all (BENCHMARKS.md, "2 workers")."""
    port = faults_deployment.server.port
    connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
    try:
        served: Counter[int | None] = Counter()
        for connection in connections:
            client_port = int(connection.getsockname()[1])
            deadline = time.monotonic() + 5
            worker = faults_deployment.worker_serving(client_port)
            while worker is None and time.monotonic() < deadline:  # accepted a moment later
                time.sleep(0.02)
                worker = faults_deployment.worker_serving(client_port)
            served[worker] += 1
    finally:
        for connection in connections:
            connection.close()
    assert set(served) == set(faults_deployment.workers()), served
    assert sum(served.values()) == 32


def _second_server(deployment: Deployment, metrics: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """gunicorn started again on the deployment's port, sharing ``metrics`` as its Prometheus directory
    (as a second ``make run`` in the same checkout would share cache/metrics)."""
    (metrics / "counter_4242.db").write_bytes(b"the running server's values")
    server = deployment.server
    return subprocess.run(
        gunicorn_command(server.port),
        cwd=REPO,
        env={**server.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_second_server_on_the_same_port_refuses_to_start_and_the_first_serves_on(
    faults_deployment: Deployment, tmp_path: Path
) -> None:
    """Without the arbiter's check, its workers would bind beside the first server's (SO_REUSEPORT) and
    take a share of its connections."""
    server = faults_deployment.server
    second = _second_server(faults_deployment, tmp_path)
    assert second.returncode == 1, second.stderr
    assert f"Error: Cannot listen on 127.0.0.1:{server.port}: Address already in use" in second.stderr
    assert "Booting worker" not in second.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["counter_4242.db"]
    assert len(faults_deployment.listeners()) == 3  # the arbiter (none) and its two workers
    assert httpx2.get(f"{server.internal}/healthz", timeout=10).status_code == 200


def test_a_second_server_sharing_one_socket_fails_to_bind_and_leaves_the_metrics_alone(
    faults_deployment: Deployment, tmp_path: Path
) -> None:
    """MCPGATE_REUSE_PORT=false: gunicorn's own bind fails (after its five tries), before the Prometheus
    directory is emptied (deploy/gunicorn.conf.py's when_ready)."""
    server = faults_deployment.server
    second = _second_server(faults_deployment, tmp_path, MCPGATE_REUSE_PORT="false")
    assert second.returncode == 1, second.stderr
    assert f"Can't connect to ('127.0.0.1', {server.port})" in second.stderr
    assert "Booting worker" not in second.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["counter_4242.db"]
    assert httpx2.get(f"{server.internal}/healthz", timeout=10).status_code == 200


def _unix_listener(path: Path) -> int | None:
    """The inode of the socket listening at ``path`` (/proc/net/unix: flags 00010000, __SO_ACCEPTCON)."""
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == str(path) and fields[3] == "00010000":
            return int(fields[6])
    return None


def test_a_unix_socket_is_one_socket_that_both_workers_share(faults_deployment: Deployment, tmp_path: Path) -> None:
    """A socket per worker cannot work there (each worker would replace the path): the workers share one."""
    server = faults_deployment.server
    path = tmp_path / "gunicorn.sock"
    command = [str(VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "--bind", f"unix:{path}"]
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        arbiter = subprocess.Popen(
            [*command, "mcpgate.asgi:application"],
            cwd=REPO,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    transport = httpx2.HTTPTransport(uds=str(path))
    try:
        deadline = time.monotonic() + 60
        with httpx2.Client(transport=transport, base_url=server.internal, timeout=5) as http:
            while True:
                assert arbiter.poll() is None, log_path.read_text()
                if log_path.read_text().count(STARTUP_LINE) == 2 and path.exists():
                    with contextlib.suppress(httpx2.TransportError):
                        if http.get("/healthz").status_code == 200:
                            break
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            workers = children_of(arbiter.pid)
            listener = _unix_listener(path)
            assert listener is not None
            assert len(workers) == 2
            for pid in (arbiter.pid, *workers):
                assert listener in socket_inodes(pid), pid
            assert (
                "Listening on one socket shared by the workers (reuse_port needs TCP addresses with a port)"
                in log_path.read_text()
            )
            answers = {http.get("/healthz").status_code for _ in range(10)}
            assert answers == {200}

            # A reload (SIGHUP) reads the configuration again, reuse_port with it: the new workers
            # still share the arbiter's socket (mcpgate.workers.listen_as_started).
            arbiter.send_signal(signal.SIGHUP)
            while log_path.read_text().count(STARTUP_LINE) < 4 or set(children_of(arbiter.pid)) & set(workers):
                assert arbiter.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline + 60, log_path.read_text()
                time.sleep(0.1)
            reloaded = children_of(arbiter.pid)
            assert len(reloaded) == 2
            assert _unix_listener(path) == listener
            for pid in reloaded:
                assert listener in socket_inodes(pid), pid
            answers = {http.get("/healthz").status_code for _ in range(10)}
            assert answers == {200}
            assert DOUBLE_CLOSE not in log_path.read_text()  # the old workers closed their copy once
    finally:
        stop(arbiter)


def test_after_a_reload_each_new_worker_listens_on_a_socket_of_its_own(faults_deployment: Deployment) -> None:
    """``systemctl reload`` (SIGHUP): new workers, each binding its own socket beside the old ones' while
    they finish; the arbiter still holds none."""
    old = frozenset(faults_deployment.workers())
    booted = faults_deployment.booted()
    faults_deployment.arbiter.send_signal(signal.SIGHUP)
    new = faults_deployment.wait_for_workers(2, without=old, booted=booted + 2)
    listeners = faults_deployment.listeners()
    assert listeners.pop(faults_deployment.arbiter.pid) == set()
    assert set(listeners) == set(new)
    assert all(len(sockets) == 1 for sockets in listeners.values()), listeners
    with httpx2.Client(base_url=faults_deployment.server.internal, timeout=10) as http:
        assert {http.get("/healthz").status_code for _ in range(10)} == {200}
    # The old workers are gone, each having closed its listening socket once (mcpgate.workers.Worker.run).
    assert DOUBLE_CLOSE not in faults_deployment.server.log()
