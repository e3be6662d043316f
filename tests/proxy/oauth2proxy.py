"""oauth2-proxy, built from the Go module proxy at a pinned version and cached under .cache/.

``ensure_binary()`` runs ``GOBIN=.cache/oauth2-proxy/<version> go install
github.com/oauth2-proxy/oauth2-proxy/v7@<version>`` unless that binary is already there (a cold build
takes about 2.5 minutes on a 2-core machine; nothing prebuilt is committed). Without Go the
tests are skipped, except under ``CI=true``, where a missing tool fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.server import stop
from tests.e2e.tools import unavailable

REPO = Path(__file__).resolve().parents[2]
VERSION = "v7.15.6"
MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
CACHE_DIR = REPO / ".cache" / "oauth2-proxy" / VERSION
BINARY = CACHE_DIR / "oauth2-proxy"
CONFIG = REPO / "deploy" / "oauth2-proxy.cfg"
ALPHA_CONFIG = REPO / "deploy" / "oauth2-proxy.yaml"
BUILD_TIMEOUT = 900
START_TIMEOUT = 20.0


def ensure_binary() -> Path:
    """The cached oauth2-proxy binary of VERSION, built first if needed."""
    if BINARY.is_file() and os.access(BINARY, os.X_OK):
        return BINARY
    go = shutil.which("go")
    if go is None:
        unavailable("Go is not installed: cannot build oauth2-proxy")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(CACHE_DIR), "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    result = subprocess.run(
        [str(go), "install", f"{MODULE}@{VERSION}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0 or not BINARY.is_file():
        pytest.fail(f"go install {MODULE}@{VERSION} failed:\n{result.stderr[-4000:]}")
    return BINARY


@contextlib.contextmanager
def oauth2_proxy(
    *, args: list[str], env: dict[str, str], address: str, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``oauth2-proxy --config deploy/oauth2-proxy.cfg --alpha-config deploy/oauth2-proxy.yaml ARGS``
    until it answers /ping at ``address``."""
    binary = ensure_binary()
    command = [str(binary), "--config", str(CONFIG), "--alpha-config", str(ALPHA_CONFIG), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_ready(
            process,
            f"http://{address}",
            "/ping",
            what="oauth2-proxy",
            log_path=log_path,
            timeout=START_TIMEOUT,
            interval=0.05,
        )
        yield process
    finally:
        stop(process, timeout=10)


def wait_until_ready(
    process: subprocess.Popen[bytes],
    base_url: str,
    path: str,
    *,
    what: str,
    log_path: Path,
    timeout: float,
    interval: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll ``path`` until it answers 200; fail the test (with the log) if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    with httpx2.Client(base_url=base_url, headers=headers or {}, trust_env=False, timeout=2.0) as http:
        while True:
            if process.poll() is not None:
                pytest.fail(f"{what} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            with contextlib.suppress(httpx2.TransportError):
                if http.get(path).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer {path}:\n{log_path.read_text(errors='replace')}")
            time.sleep(interval)
