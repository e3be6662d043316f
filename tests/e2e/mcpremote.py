"""Driving mcp-remote from a test: its ``BROWSER`` script, its command line, and one run over stdio.

Shared by tests/e2e/test_mcp_remote.py (gunicorn alone) and tests/proxy/test_mcp_remote.py
(through oauth2-proxy); each passes the ``BROWSER`` module it needs and its environment.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from .server import REPO
from .tools import NodeTools

RUN_TIMEOUT = 90.0


def browser_script(directory: Path, module: str) -> tuple[Path, Path]:
    """A ``BROWSER`` command that runs ``python -m MODULE`` in the background; and its record file."""
    record = directory / "browser.jsonl"
    log = directory / "browser.log"
    script = directory / "browser.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(REPO))} || exit 1\n"
        f'{shlex.quote(sys.executable)} -m {module} "$1" </dev/null >>{shlex.quote(str(log))} 2>&1 &\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script, record


def mcp_remote_params(
    tools: NodeTools, url: str, callback_port: int, *, config_dir: Path, browser: Path, env: dict[str, str]
) -> StdioServerParameters:
    """``mcp-remote URL PORT --host 127.0.0.1 --allow-http --transport http-only --auth-timeout 60``."""
    return StdioServerParameters(
        command=str(tools.node),
        args=[
            str(tools.mcp_remote),
            url,
            str(callback_port),
            "--host",
            "127.0.0.1",
            "--allow-http",
            "--transport",
            "http-only",
            "--auth-timeout",
            "60",
        ],
        env={"MCP_REMOTE_CONFIG_DIR": str(config_dir), "BROWSER": str(browser), **env},
    )


def run_mcp_remote(
    params: StdioServerParameters,
    steps: Callable[[Client], Awaitable[None]],
    *,
    stderr_path: Path,
    record: Path,
    timeout: float = RUN_TIMEOUT,
) -> None:
    """Start mcp-remote, connect to its stdio side (``mode="legacy"``) and run ``steps``.

    A failure is re-raised as an AssertionError carrying mcp-remote's stderr and the browser's record.
    """

    async def main() -> None:
        with stderr_path.open("w") as errlog, anyio.fail_after(timeout):
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                await steps(client)

    try:
        anyio.run(main)
    except BaseException as exc:
        browsed = record.read_text() if record.exists() else "(the browser was never opened)"
        raise AssertionError(
            f"mcp-remote failed\n--- stderr:\n{stderr_path.read_text()}\n--- browser:\n{browsed}"
        ) from exc


def browser_visits(record: Path) -> list[dict[str, Any]]:
    """The browser script's records, one per authorization URL it opened."""
    return [json.loads(line) for line in record.read_text().splitlines()]


def stored_tokens(config_dir: Path) -> Iterator[tuple[Any, Any]]:
    """(access_token, refresh_token) of every token file mcp-remote kept under ``config_dir``."""
    for stored in config_dir.rglob("*_tokens.json"):
        saved = json.loads(stored.read_text())
        yield saved.get("access_token"), saved.get("refresh_token")
