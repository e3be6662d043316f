"""mcpgate.workers: a listening socket per worker where it works, a taken port refused; the loaded app frozen."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config

from mcpgate.workers import listen_as_started, listen_per_worker
from tests.ports import free_port


@dataclass
class Arbiter:
    """What ``on_starting`` and ``on_reload`` are handed: gunicorn's own configuration, a log, the arbiter's sockets."""

    cfg: Config = field(default_factory=Config)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("tests.gunicorn"))
    LISTENERS: list[object] = field(default_factory=list)


def arbiter(*binds: str, reuse_port: bool = True) -> Arbiter:
    server = Arbiter()
    server.cfg.set("bind", list(binds))
    server.cfg.set("reuse_port", reuse_port)
    return server


@pytest.fixture(autouse=True)
def _no_inherited_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_FDS", "LISTEN_PID", "GUNICORN_FD"):
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def listening(host: str = "127.0.0.1", *, reuse_port: bool = False) -> Iterator[int]:
    """A port some other server listens on (with ``reuse_port``: as a running mcpgate's worker does)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as other:
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind((host, 0))
        other.listen()
        yield int(other.getsockname()[1])


def refusal(bind: str) -> str:
    with pytest.raises(RuntimeError) as refused:
        listen_per_worker(arbiter(bind))
    return str(refused.value)


def test_a_free_tcp_port_keeps_a_socket_per_worker_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    server = arbiter(f"127.0.0.1:{port}")
    with caplog.at_level(logging.INFO, logger="tests.gunicorn"):
        listen_per_worker(server)
    assert server.cfg.reuse_port is True
    assert caplog.messages == [f"Each worker listens on a socket of its own at 127.0.0.1:{port} (SO_REUSEPORT)"]
    # The check let the port go again: the workers bind it.
    with socket.socket() as worker:
        worker.bind(("127.0.0.1", port))


def test_every_address_is_checked_and_named(caplog: pytest.LogCaptureFixture) -> None:
    first, second = free_port(), free_port()
    server = arbiter(f"127.0.0.1:{first}", f"[::1]:{second}")
    with caplog.at_level(logging.INFO, logger="tests.gunicorn"):
        listen_per_worker(server)
    assert server.cfg.reuse_port is True
    assert caplog.messages == [
        f"Each worker listens on a socket of its own at 127.0.0.1:{first}, [::1]:{second} (SO_REUSEPORT)"
    ]


def test_a_port_another_server_listens_on_refuses_to_start() -> None:
    with listening() as port:
        assert refusal(f"127.0.0.1:{port}") == f"Cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_port_a_second_mcpgate_listens_on_with_so_reuseport_refuses_to_start() -> None:
    """Without the check, this is the case that would start and silently take half the connections."""
    with listening(reuse_port=True) as port:
        assert refusal(f"127.0.0.1:{port}") == f"Cannot listen on 127.0.0.1:{port}: Address already in use"


def test_an_ipv6_port_in_use_is_named_in_brackets() -> None:
    with listening("::1") as port:
        assert refusal(f"[::1]:{port}") == f"Cannot listen on [::1]:{port}: Address already in use"


def test_an_address_this_machine_does_not_have_refuses_to_start() -> None:
    # TEST-NET-1 (RFC 5737): never a local address.
    assert refusal("192.0.2.1:8000") == "Cannot listen on 192.0.2.1:8000: Cannot assign requested address"


@pytest.mark.parametrize(
    "binds",
    [
        pytest.param(("unix:/run/mcpgate/gunicorn.sock",), id="unix socket"),
        pytest.param(("fd://3",), id="file descriptor"),
        pytest.param(("127.0.0.1:0",), id="port 0"),
        pytest.param(("127.0.0.1:8000", "unix:/run/mcpgate/gunicorn.sock"), id="tcp and unix"),
    ],
)
def test_addresses_a_socket_per_worker_cannot_serve_share_one_socket(
    binds: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    server = arbiter(*binds)
    with caplog.at_level(logging.INFO, logger="tests.gunicorn"):
        listen_per_worker(server)
    assert server.cfg.reuse_port is False
    assert caplog.messages == [
        "Listening on one socket shared by the workers (reuse_port needs TCP addresses with a port)"
    ]


def test_sockets_from_systemd_socket_activation_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    server = arbiter(f"127.0.0.1:{free_port()}")
    listen_per_worker(server)
    assert server.cfg.reuse_port is False
    # gunicorn reads them after this hook: they are left for it.
    assert os.environ["LISTEN_FDS"] == "1"


def test_sockets_handed_over_by_a_re_executing_arbiter_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUNICORN_FD", "3")
    server = arbiter(f"127.0.0.1:{free_port()}")
    listen_per_worker(server)
    assert server.cfg.reuse_port is False


def test_with_reuse_port_off_nothing_is_checked_or_changed(caplog: pytest.LogCaptureFixture) -> None:
    """MCPGATE_REUSE_PORT=false: the arbiter binds as gunicorn always did (and reports a taken port itself)."""
    with listening() as port, caplog.at_level(logging.INFO, logger="tests.gunicorn"):
        server = arbiter(f"127.0.0.1:{port}", reuse_port=False)
        listen_per_worker(server)
    assert server.cfg.reuse_port is False
    assert caplog.messages == []


def test_a_reload_keeps_a_socket_per_worker_when_the_arbiter_holds_none() -> None:
    server = arbiter(f"127.0.0.1:{free_port()}", reuse_port=False)  # as the configuration read again may say
    listen_as_started(server)
    assert server.cfg.reuse_port is True


def test_a_reload_keeps_the_shared_socket_when_the_arbiter_holds_it() -> None:
    """A Unix socket, say: ``reuse_port`` read again from the configuration is true, and must not be."""
    server = arbiter("unix:/run/mcpgate/gunicorn.sock")
    server.LISTENERS = [object()]
    listen_as_started(server)
    assert server.cfg.reuse_port is False


# -- the loaded application, frozen (Worker.load_wsgi) ----------------------------------------------


@dataclass
class Served:
    """What tests.mcpgate.frozen_app answered under gunicorn, and gunicorn's log once it stopped."""

    answer: dict[str, Any]
    log: str


def _served_by(worker_class: str, *options: str) -> Served:
    """tests.mcpgate.frozen_app under gunicorn with one ``worker_class`` worker, asked once, then stopped (SIGTERM)."""
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "--bind", f"127.0.0.1:{port}", "-w", "1", "-k", worker_class, *options]
    root = Path(__file__).resolve().parents[2]
    arbiter = subprocess.Popen(
        [*command, "tests.mcpgate.frozen_app:app"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    answer: dict[str, Any] = json.loads(response.read())
                    break
            except OSError:
                assert arbiter.poll() is None, arbiter.stderr.read() if arbiter.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        arbiter.send_signal(signal.SIGTERM)
        _, log = arbiter.communicate(timeout=30)
    assert "Finished server process" in log, log  # uvicorn's last line in the worker: its shutdown ran
    return Served(answer=answer, log=log)


def test_the_worker_freezes_what_the_application_loaded_and_still_collects_the_rest() -> None:
    answer = _served_by("mcpgate.workers.Worker").answer
    assert answer["frozen"] > 1000  # gunicorn, uvicorn and uvloop alone; mcpgate's application adds ~150,000
    assert answer["collecting"] is True


def test_uvicorns_own_worker_freezes_nothing() -> None:
    """The difference is mcpgate's worker, not something gunicorn or uvicorn do anyway."""
    assert _served_by("uvicorn_worker.UvicornWorker").answer == {"frozen": 0, "collecting": True}


# -- the listening socket, closed once (Worker.run) -------------------------------------------------

DOUBLE_CLOSE = "Error while closing socket [Errno 9] Bad file descriptor"


@pytest.mark.parametrize("options", [(), ("--reuse-port",)], ids=["shared socket", "socket per worker"])
def test_the_worker_closes_its_listening_socket_once_when_it_stops(options: tuple[str, ...]) -> None:
    """uvloop owns the socket it serves and closes it; a second close of the same number could close
    whatever another thread had opened in between."""
    log = _served_by("mcpgate.workers.Worker", *options).log
    assert DOUBLE_CLOSE not in log, log


def test_uvicorns_own_worker_on_uvloop_closes_it_twice() -> None:
    """The difference is mcpgate's worker: uvicorn's own (on uvloop here, its "auto" loop) hands over
    gunicorn's wrapper."""
    log = _served_by("uvicorn_worker.UvicornWorker", "--reuse-port").log
    assert DOUBLE_CLOSE in log, log
