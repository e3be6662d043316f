"""A throw-away deployment for fault tests and the soak: a PostgreSQL that can be stopped and started, gunicorn on it.

``tests.pgcluster.cluster()`` makes a cluster that lives as long as its ``with`` block; the fault
tests also need to stop it in the middle (``pg_ctl stop -m fast``, as an operator or a failing
host would) and start it again on the same port and data directory, so that the workers' next
connection attempt reaches it. gunicorn is started with the production command line
(``tests.e2e.server.gunicorn_command``) and environment (``server_env``), keeping its arbiter's
process so a test can find and kill a worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from tests.e2e.server import (
    REPO,
    GunicornServer,
    ServerFailed,
    gunicorn_command,
    manage,
    server_env,
    stop,
)
from tests.pgcluster import pg_bindir
from tests.ports import free_port

# Every rate limit well above what a bounded load from one address can reach: these runs measure
# the service under faults and load, not the limits (tests/security covers those).
GENEROUS_LIMITS = {
    "MCPGATE_REGISTRATION_RATE_PER_MINUTE": "1000000",
    **{
        f"MCPGATE_RATE_LIMIT_{door}": "1000000/s"
        for door in ("TOKEN", "TOKEN_CLIENT", "REVOKE", "AUTHORIZE", "LOGIN", "MCP")
    },
    "MCPGATE_AUDIT_ANONYMOUS_RATE": "1000000/s",
}
READY_TIMEOUT = 60.0
# uvicorn's line once a worker's lifespan (the MCP SDK's task group) has started.
STARTUP_LINE = "Application startup complete"


class PostgresMissing(RuntimeError):
    """The machine has no PostgreSQL binaries (initdb, pg_ctl)."""


def postgres_available() -> bool:
    try:
        bindir = pg_bindir()
    except SystemExit:
        return False
    return (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()


@dataclass
class PostgresCluster:
    """A cluster in a temporary directory on 127.0.0.1:``port``; ``stop()`` and ``start()`` keep both."""

    bindir: Path
    root: Path
    port: int
    max_connections: int = 100

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://mcpgate@127.0.0.1:{self.port}/mcpgate"

    def _run(self, *args: str) -> None:
        # initdb and the server refuse to run as root: as root, run them as the postgres user.
        user = "postgres" if os.geteuid() == 0 else None
        result = subprocess.run(
            args, cwd=self.root, user=user, group=user, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "mcpgate", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mcpgate", "mcpgate")

    def start(self) -> None:
        """Start the server and return once it accepts connections (``pg_ctl -w``)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            f"-c fsync=off -c full_page_writes=off -c max_connections={self.max_connections}"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: open transactions are rolled back and every session is cut off."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def postgres_cluster(*, max_connections: int = 100) -> Iterator[PostgresCluster]:
    """A fresh cluster (as ``tests.pgcluster.cluster()`` makes one), removed on exit.

    ``max_connections`` is PostgreSQL's default, 100, as on a production server left at defaults.
    """
    if not postgres_available():
        raise PostgresMissing("PostgreSQL binaries not found (install postgresql, or set PG_BINDIR)")
    root = Path(tempfile.mkdtemp(prefix="mcpgate-faults-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PostgresCluster(bindir=pg_bindir(), root=root, port=free_port(), max_connections=max_connections)
    try:
        cluster.init()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def rss_kib(pid: int) -> int | None:
    """A process's resident memory (VmRSS in /proc/PID/status), in KiB; None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc/*/stat), oldest first."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "PID (comm) STATE PPID ...": comm may contain spaces and parentheses.
        fields = text.rpartition(")")[2].split()
        if len(fields) > 20 and fields[1] == str(pid) and fields[0] != "Z":
            found.append((int(fields[19]), int(stat.parent.name)))  # start time, then pid
    return [child for _, child in sorted(found)]


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def server_side_inode(client_port: int, server_port: int) -> int | None:
    """The inode of the accepted socket whose peer is 127.0.0.1:``client_port`` (from /proc/net/tcp)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            remote_port = int(fields[2].rpartition(":")[2], 16)
            if local_port == server_port and remote_port == client_port:
                return int(fields[9])
    return None


def listening_inodes(server_port: int) -> set[int]:
    """The inodes of the TCP sockets listening on ``server_port`` (state 0A in /proc/net/tcp)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == server_port:
                inodes.add(int(fields[9]))
    return inodes


@dataclass
class Deployment:
    """mcpgate under gunicorn on a cluster of its own."""

    cluster: PostgresCluster
    server: GunicornServer
    arbiter: subprocess.Popen[bytes]

    def workers(self) -> list[int]:
        return children_of(self.arbiter.pid)

    def worker_serving(self, client_port: int) -> int | None:
        """The worker that accepted the TCP connection from local port ``client_port``, if any."""
        inode = server_side_inode(client_port, self.server.port)
        if inode is None:
            return None
        for pid in self.workers():
            if inode in socket_inodes(pid):
                return pid
        return None

    def listeners(self) -> dict[int, set[int]]:
        """The listening sockets on the server's port, by the process holding them (the arbiter included)."""
        listening = listening_inodes(self.server.port)
        return {pid: socket_inodes(pid) & listening for pid in [self.arbiter.pid, *self.workers()]}

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker (never the arbiter): the arbiter notices and starts a replacement."""
        if pid not in self.workers():
            raise ValueError(f"{pid} is not a worker of gunicorn {self.arbiter.pid}")
        os.kill(pid, signal.SIGKILL)

    def booted(self) -> int:
        """How many workers have started serving so far (uvicorn logs this once per worker)."""
        return self.server.log().count(STARTUP_LINE)

    def wait_for_workers(
        self, count: int, *, without: frozenset[int] = frozenset(), booted: int = 0, timeout: float = READY_TIMEOUT
    ) -> list[int]:
        """Wait until ``count`` workers, none of them in ``without``, run and ``booted`` have started serving."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.workers()
            if len(workers) == count and not set(workers) & without and self.booted() >= booted:
                return workers
            time.sleep(0.05)
        raise ServerFailed(f"gunicorn has workers {self.workers()}, not {count} new ones:\n{self.server.log()}")


def _wait_until_ready(server: GunicornServer, process: subprocess.Popen[bytes], workers: int) -> None:
    """Until /healthz answers and every worker has booted (each worker's lifespan has started)."""
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx2.Client(base_url=server.internal, trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerFailed(f"gunicorn exited with status {process.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx2.TransportError):
                booted = server.log().count(STARTUP_LINE)
                if booted >= workers and http.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise ServerFailed(f"gunicorn was not ready within {READY_TIMEOUT:.0f}s:\n{server.log()}")


@contextlib.contextmanager
def deployment(
    *, log_dir: Path, workers: int = 2, overrides: dict[str, str] | None = None, max_connections: int = 100
) -> Iterator[Deployment]:
    """A new cluster, migrated, with gunicorn (``workers`` uvicorn workers) on it; all removed on exit."""
    with postgres_cluster(max_connections=max_connections) as cluster:
        port = free_port()
        env = server_env(
            port,
            {"DATABASE_URL": cluster.url},
            {
                **GENEROUS_LIMITS,
                # The rate limits' counters: this deployment's own, shared by its workers.
                "MCPGATE_CACHE_DIR": str(log_dir / "cache"),
                "MCPGATE_WORKERS": str(workers),
                **(overrides or {}),
            },
        )
        manage(env, "migrate", "--noinput", "-v0")
        log_path = log_dir / "gunicorn.log"
        server = GunicornServer(port=port, env=env, log_path=log_path)
        server.remember(env["SECRET_KEY"])
        command = gunicorn_command(port, control_socket=log_dir / "gunicorn.ctl")
        with log_path.open("wb") as log:
            arbiter = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_until_ready(server, arbiter, workers)
            yield Deployment(cluster=cluster, server=server, arbiter=arbiter)
        finally:
            stop(arbiter)
