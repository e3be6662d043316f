"""A gunicorn worker killed (SIGKILL) in the middle of load: only its own requests fail.

Two kinds of requests are in flight when the worker dies:
- slow uploads: tools/call requests whose body is sent in two parts, held open on a known worker
  (found through /proc: which worker holds the accepted socket), so some are certainly in flight
  on each worker at the moment of the kill;
- the soak's mixed load (bench/soak.py) from concurrent clients, which may have a request on the
  dying worker or not.
The survivor's uploads complete with 200; the victim's fail on the connection (nothing else could
answer them). Every other request succeeds, the arbiter starts a replacement, which then serves,
and no token was lost or duplicated.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from bench import soak

from .deployment import Deployment

pytestmark = pytest.mark.e2e

LOAD_SECONDS = 90.0  # at most: the load is stopped once the replacement has served for a while
AFTER_REPLACEMENT = 3.0
CLIENTS = 8  # soak.client_kinds(8) has every kind
KILL_AFTER = 3.0
UPLOADS_PER_WORKER = 2
MAX_CONNECTIONS = 100


@dataclass
class Answer:
    status: int | None
    body: bytes
    error: str = ""


class SlowUpload:
    """POST /mcp tools/call whoami over a raw connection, the body's last part held back until ``finish()``."""

    def __init__(self, port: int, token: str, request_id: int) -> None:
        self.body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        ).encode()
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"MCP-Protocol-Version: {soak.PROTOCOL_VERSION}\r\nContent-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=soak.REQUEST_TIMEOUT)
        self.local_port = int(self.sock.getsockname()[1])
        self.sock.sendall(head + self.body[:10])

    def finish(self) -> Answer:
        try:
            self.sock.sendall(self.body[10:])
            data = b""
            while chunk := self.sock.recv(65536):
                data += chunk
        except OSError as exc:
            return Answer(None, b"", f"{type(exc).__name__}: {exc}")
        finally:
            self.sock.close()
        if not data:
            return Answer(None, b"", "connection closed without an answer")
        head, _, body = data.partition(b"\r\n\r\n")
        return Answer(int(head.split()[1]), body)


def served_by(deployment: Deployment, upload: SlowUpload) -> int | None:
    """The worker that accepted ``upload``'s connection (it has read the headers by then)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        worker = deployment.worker_serving(upload.local_port)
        if worker is not None:
            return worker
        time.sleep(0.02)
    return None


def uploads_on_each_worker(deployment: Deployment, token: str) -> dict[int, list[SlowUpload]]:
    """Open slow uploads until each worker holds ``UPLOADS_PER_WORKER`` of them (or give up)."""
    held: dict[int, list[SlowUpload]] = {pid: [] for pid in deployment.workers()}
    for request_id in range(MAX_CONNECTIONS):
        if all(len(uploads) >= UPLOADS_PER_WORKER for uploads in held.values()):
            break
        upload = SlowUpload(deployment.server.port, token, request_id)
        worker = served_by(deployment, upload)
        if worker in held and len(held[worker]) < UPLOADS_PER_WORKER:
            held[worker].append(upload)
        else:
            upload.finish()
    return held


def test_a_killed_worker_fails_only_its_own_requests_and_is_replaced(faults_deployment: Deployment) -> None:
    deployment = faults_deployment
    workers = deployment.workers()
    assert len(workers) == 2, workers

    runner = soak.Run(deployment, seconds=LOAD_SECONDS)
    ledgers = runner.prepare(CLIENTS)
    token = next(ledger.access_token for ledger in ledgers if ledger.kind == soak.Kind.MCP)
    results: list[soak.Result] = []
    load = threading.Thread(
        target=lambda: results.append(asyncio.run(runner.load(ledgers, outage_at=None, outage_seconds=0)))
    )
    load.start()
    try:
        time.sleep(KILL_AFTER)
        held = uploads_on_each_worker(deployment, token)
        assert all(len(uploads) == UPLOADS_PER_WORKER for uploads in held.values()), {
            pid: len(uploads) for pid, uploads in held.items()
        }
        victim, survivor = sorted(held)
        booted = deployment.booted()
        killed_at = runner.now()
        deployment.kill_worker(victim)

        # The survivor's requests complete; the victim's had nobody left to answer them.
        for upload in held[survivor]:
            answer = upload.finish()
            assert answer.status == 200, answer
            assert "result" in json.loads(answer.body), answer
        for upload in held[victim]:
            answer = upload.finish()
            assert answer.status is None, answer

        # The arbiter replaces the victim, and the replacement serves.
        replacement = next(
            pid
            for pid in deployment.wait_for_workers(2, without=frozenset({victim}), booted=booted + 1)
            if pid != survivor
        )
        replacement_ready = runner.now()
        for request_id in range(MAX_CONNECTIONS):
            upload = SlowUpload(deployment.server.port, token, 1000 + request_id)
            worker = served_by(deployment, upload)
            answer = upload.finish()
            assert answer.status == 200, answer
            if worker == replacement:
                break
        else:
            pytest.fail(f"no request reached the replacement worker {replacement} in {MAX_CONNECTIONS} connections")
        time.sleep(AFTER_REPLACEMENT)
    finally:
        runner.stop()
        load.join(timeout=LOAD_SECONDS + 120)
    assert not load.is_alive()
    (result,) = results

    # The mixed load: a request may have died with the worker (on the connection, while in flight
    # at the moment of the kill); nothing else failed, and every kind kept being served.
    unexpected = result.unexpected()
    with_the_worker = [
        o for o in unexpected if o.detail.startswith("transport:") and o.started <= killed_at + 1.0 <= o.ended + 1.0
    ]
    others = [o for o in unexpected if o not in with_the_worker]
    assert not others, Counter((o.kind, o.detail) for o in others)
    assert len(with_the_worker) <= CLIENTS, with_the_worker
    served_after = Counter(
        o.kind for o in result.outcomes if o.verdict == soak.Verdict.OK and o.started > replacement_ready
    )
    for kind in soak.Kind:
        assert served_after[kind] > 0, (kind, served_after)
    assert soak.verify_ledgers(deployment, ledgers) == []
