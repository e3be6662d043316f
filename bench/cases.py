"""What the benchmark measures and how: targets, wrk runs (bench/wrk/post.lua), medians, servers started and stopped.

Every figure is the median of ``runs`` wrk runs of ``seconds`` each, the runs of one server's targets
interleaved (round 1 of every target, then round 2, ...) so that drift on the machine touches them alike,
after one warm-up second per target that is not counted. wrk checks every answer (post.lua): a non-2xx
status, a missing ``expect`` or a present ``reject`` string counts as bad, and a figure with any bad
answer, socket error or exhausted one-time input is refused (``Sample.problems``), so a broken server
cannot look fast.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"


@dataclass(frozen=True)
class Sample:
    """One wrk run, or the median of several (``median``)."""

    rps: float
    p50: float
    p99: float
    bad: int  # answers that were not 2xx, or not the expected answer
    socket_errors: int
    requests: int
    exhausted: int = 0  # requests sent after the one-time inputs ran out

    def problems(self) -> str:
        """Why the figure cannot be trusted, or an empty string."""
        parts = []
        if self.bad:
            parts.append(f"{self.bad} bad answers")
        if self.socket_errors:
            parts.append(f"{self.socket_errors} socket errors")
        if self.exhausted:
            parts.append(f"one-time inputs ran out ({self.exhausted} requests past the end)")
        if not self.requests:
            parts.append("no requests completed")
        return ", ".join(parts)


@dataclass(frozen=True)
class Target:
    """Something wrk sends requests to: the URL, method, headers, body and what every answer must hold.

    ``feed`` names one-time inputs (a body a line, in order; see bench/fixtures.py): run ``i`` of the
    target reads ``<feed>-<i>.txt`` from the feeds directory (run 0 is the warm-up).
    """

    label: str
    url: str
    body: str = ""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    expect: str = ""
    reject: str = ""
    feed: str = ""


def median(samples: list[Sample]) -> Sample:
    return Sample(
        rps=statistics.median(s.rps for s in samples),
        p50=statistics.median(s.p50 for s in samples),
        p99=statistics.median(s.p99 for s in samples),
        bad=sum(s.bad for s in samples),
        socket_errors=sum(s.socket_errors for s in samples),
        requests=sum(s.requests for s in samples),
        exhausted=sum(s.exhausted for s in samples),
    )


def wrk(target: Target, *, seconds: float, connections: int, feeds: Path | None = None, run: int = 0) -> Sample:
    """One wrk run (one thread: the load generator takes one core's share, not both)."""
    env = {
        **os.environ,
        "BENCH_METHOD": target.method,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in target.headers.items()),
        "BENCH_BODY": target.body,
        "BENCH_EXPECT": target.expect,
        "BENCH_REJECT": target.reject,
        "BENCH_BODIES": str(feeds / f"{target.feed}-{connections}-{run}.txt") if target.feed and feeds else "",
    }
    duration = f"{max(1, round(seconds))}s"
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--timeout", "10s", "-s", str(LUA), target.url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\S+) (\S+) (\S+) (\d+) (\d+) (\d+) (\d+)", out)
    if not match:
        raise SystemExit(f"wrk gave no result for {target.label}:\n{out}")
    rps, p50, p99, bad, sock, requests, exhausted = match.groups()
    return Sample(float(rps), float(p50), float(p99), int(bad), int(sock), int(requests), int(exhausted))


Plan = list[tuple[Target, int]]  # (target, connections)
Results = dict[tuple[str, int], list[Sample]]  # (label, connections) -> one sample per run


def measure(plan: Plan, *, seconds: float, runs: int, feeds: Path | None = None, say: Callable[[str], None]) -> Results:
    """Warm up each target for a second, then ``runs`` interleaved rounds of every target."""
    for target, connections in plan:  # not counted: open connections, first-call imports, caches
        wrk(target, seconds=1, connections=connections, feeds=feeds, run=0)
    results: Results = {(t.label, c): [] for t, c in plan}
    for run in range(1, runs + 1):
        for target, connections in plan:
            sample = wrk(target, seconds=seconds, connections=connections, feeds=feeds, run=run)
            results[(target.label, connections)].append(sample)
            say(
                f"  {target.label:<44} c{connections:<3} run {run}: {sample.rps:8.0f} req/s  p50 {sample.p50:7.2f} ms"
                f"  p99 {sample.p99:7.2f} ms  {sample.problems() or 'ok'}"
            )
    return results


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up")


def start(cmd: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(ready_url)
    except SystemExit:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serving(cmd: list[str], env: dict[str, str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(cmd, env, ready_url)
    try:
        yield proc
    finally:
        stop(proc)
