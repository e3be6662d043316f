"""`make run` serves with the .env file's settings, and the real environment wins over them.

It used to source .env over the environment (``set -a; source .env``), so ``MCPGATE_BIND=… make
run`` or ``SECRET_KEY=… make run`` silently used the file's values. Each case starts the real
``make run`` (migrate, then gunicorn) with a temporary .env named by MCPGATE_ENV_FILE and asks the
server over HTTP which settings it runs with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 40


def resource_name(port: int) -> str | None:
    """``resource_name`` from the protected resource metadata at ``port``, or None if nothing answers."""
    url = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
    try:
        # A worker's first request imports the app: give it time on a busy machine.
        with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
            return str(json.load(response)["resource_name"])
    except OSError:  # refused, reset or timed out (URLError is an OSError too)
        return None


@contextmanager
def make_run(env_file: Path, environment: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``make run`` with ``environment`` (nothing else inherited) until the block ends.

    ``-o .venv/.installed``: the test uses the virtualenv as it is, never reinstalls it.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MCPGATE_ENV_FILE": str(env_file),
        **environment,
    }
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # make, its shell and gunicorn in a group of their own, stopped together
    )
    try:
        yield process
    finally:
        # SIGINT: gunicorn's quick shutdown (SIGTERM waits graceful_timeout for the workers); make stops too.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(port: int, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        name = resource_name(port)
        if name is not None:
            return name
        if process.poll() is not None:
            pytest.fail(f"make run exited with {process.returncode} before serving on {port}")
        time.sleep(0.2)
    pytest.fail(f"make run did not serve on port {port} within {START_SECONDS} s")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Database and cache shared by the cases: the second `make run` has nothing left to migrate."""
    return tmp_path_factory.mktemp("make-run")


@pytest.fixture
def env_file(tmp_path: Path, state_dir: Path) -> tuple[Path, int]:
    """A developer's .env: its own key, address and resource name; the port it binds."""
    port = free_port()
    path = tmp_path / "local.env"
    path.write_text(
        "SECRET_KEY='from-the-env-file-0123456789abcdefghijklmnopqrstuvwxyz'\n"
        f"MCPGATE_INTERNAL_URL='http://127.0.0.1:{port}'\n"
        f"MCPGATE_BIND='127.0.0.1:{port}'\n"
        "MCPGATE_RESOURCE_NAME='from-the-env-file'\n"
        "MCPGATE_WORKERS='1'\n"
        f"MCPGATE_SQLITE_PATH='{state_dir / 'db.sqlite3'}'\n"
        f"MCPGATE_CACHE_DIR='{state_dir / 'cache'}'\n"
    )
    return path, port


def test_make_run_serves_with_the_env_files_settings(env_file: tuple[Path, int]) -> None:
    path, port = env_file
    with make_run(path, {}) as process:
        assert wait_for(port, process) == "from-the-env-file"


def test_make_run_lets_the_real_environment_win_over_the_env_file(env_file: tuple[Path, int]) -> None:
    path, file_port = env_file
    port = free_port()
    environment = {
        "MCPGATE_BIND": f"127.0.0.1:{port}",
        "MCPGATE_INTERNAL_URL": f"http://127.0.0.1:{port}",
        "MCPGATE_RESOURCE_NAME": "from-the-shell",
    }
    with make_run(path, environment) as process:
        assert wait_for(port, process) == "from-the-shell"
        assert resource_name(file_port) is None
