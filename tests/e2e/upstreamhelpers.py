"""Real upstream MCP servers for the gateway's end-to-end tests: started as processes, stopped, restarted.

- ``@modelcontextprotocol/server-everything`` (pinned in tests/e2e/node) over stdio, Streamable HTTP
  (``/mcp``) and legacy SSE (``/sse``), run by the system ``node``;
- ``mcp-server-time`` (Python, stdio) from its own environment, tests/e2e/upstreams/.venv;
- a header recorder: a Streamable HTTP MCP server on the ``mcp`` SDK's ``MCPServer`` under uvicorn that
  writes the headers of every request it receives to a file (``python -m tests.e2e.upstreamhelpers
  record-headers PORT FILE``), so a test can see exactly what the gateway sent upstream.

Every tool that is missing fails the test in CI and skips it elsewhere (tests.e2e.tools.unavailable).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .server import REPO
from .tools import NODE_MODULES, unavailable

EVERYTHING = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
EVERYTHING_DOCS = EVERYTHING.parent / "docs"
TIME_SERVER = REPO / "tests" / "e2e" / "upstreams" / ".venv" / "bin" / "mcp-server-time"
START_TIMEOUT = 20.0


def node() -> str:
    """The system ``node`` that runs server-everything (its package needs Node 18 or later)."""
    found = shutil.which("node")
    if found is None:
        unavailable("no `node` on PATH to run @modelcontextprotocol/server-everything")
    if not EVERYTHING.exists():
        unavailable("@modelcontextprotocol/server-everything is not installed: run `make e2e-tools`")
    return found


def time_server() -> str:
    if not TIME_SERVER.exists():
        unavailable("mcp-server-time is not installed in tests/e2e/upstreams/.venv: run `make e2e-tools`")
    return str(TIME_SERVER)


def everything_command(transport: str) -> list[str]:
    """``node …/server-everything/dist/index.js stdio|sse|streamableHttp``."""
    return [node(), str(EVERYTHING), transport]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class UpstreamProcess:
    """An HTTP upstream run as a process on a fixed port, which a test may kill and start again."""

    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[:3]} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[:3]} did not listen on {self.port}:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to the sessions it holds."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running(process: UpstreamProcess) -> Iterator[UpstreamProcess]:
    process.start()
    try:
        yield process
    finally:
        process.kill()


def everything_http(port: int, log_path: Path) -> UpstreamProcess:
    """server-everything over Streamable HTTP: the endpoint is ``http://127.0.0.1:PORT/mcp``."""
    return UpstreamProcess(everything_command("streamableHttp"), port, log_path, env={"PORT": str(port)})


def everything_sse(port: int, log_path: Path) -> UpstreamProcess:
    """server-everything over legacy HTTP+SSE (2024-11-05): the stream is ``http://127.0.0.1:PORT/sse``."""
    return UpstreamProcess(everything_command("sse"), port, log_path, env={"PORT": str(port)})


def identity_verifier(
    port: int, log_path: Path, *, jwks_url: str, issuer: str, cache_seconds: float
) -> UpstreamProcess:
    """tests/e2e/identity_verifier.py: verifies mcpgate's identity assertions against ``jwks_url``."""
    argv = [sys.executable, "-m", "tests.e2e.identity_verifier", str(port), jwks_url, issuer, str(cache_seconds)]
    return UpstreamProcess(argv, port, log_path, env={"PYTHONPATH": str(REPO)})


def header_recorder(port: int, log_path: Path, record: Path) -> UpstreamProcess:
    """The header recorder (``record-headers`` below), on the test run's own Python."""
    argv = [sys.executable, "-m", "tests.e2e.upstreamhelpers", "record-headers", str(port), str(record)]
    return UpstreamProcess(argv, port, log_path, env={"PYTHONPATH": str(REPO)})


def recorded_headers(record: Path) -> list[dict[str, str]]:
    """Every request's headers the recorder saw, in order (names lower-cased)."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


# -- the header recorder itself (a subprocess) -----------------------------------------------------


def _recorder_app(record: Path) -> Any:
    from mcp.server.mcpserver import MCPServer  # only in the recorder's process

    server = MCPServer("header-recorder")

    @server.tool()
    def hello(name: str) -> str:
        """Say hello (the test only needs a call to go through)."""
        return f"Hello, {name}"

    app = server.streamable_http_app()

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            with record.open("a") as out:
                out.write(json.dumps({"method": scope["method"], "path": scope["path"], **headers}) + "\n")
        await app(scope, receive, send)

    return recording


def main(argv: list[str]) -> None:
    command, port, record = argv
    assert command == "record-headers", argv
    import uvicorn  # only in the recorder's process

    uvicorn.run(_recorder_app(Path(record)), host="127.0.0.1", port=int(port), log_level="warning", lifespan="on")


if __name__ == "__main__":
    main(sys.argv[1:])
