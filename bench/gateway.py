"""The gateway case of the benchmark: tools/call through an HTTP upstream vs that upstream called directly.

    .venv/bin/python -m bench.run --only gateway [--seconds 6] [--runs 3]

Started by ``bench.run`` (which supplies the PostgreSQL cluster, the migrated database and the
minted mcpgate token). In one run on one machine it starts:

- the upstream, ``bench.upstream_server`` (the SDK's MCPServer, one ``echo`` tool, its own bearer
  credential), under uvicorn with one worker;
- mcpgate as ``bench.run`` starts it (gunicorn, one uvicorn worker), with that upstream registered
  three times by ``manage.py add_upstream`` (``up``, ``up2``, ``up3``: one server under three
  prefixes) with its credential as ``--header "Authorization: Bearer …"``.

and measures with wrk, the rounds interleaved so that both sides see the same machine:

  direct    POST upstream /mcp tools/call echo with the upstream's credential   (1 and 16 connections)
  through   POST mcpgate /mcp tools/call up__echo with an mcpgate token          (1 and 16 connections)
  list      POST mcpgate /mcp tools/list (3 local tools + 3 upstreams, cached)   (1 connection)
  local     POST mcpgate /mcp tools/call whoami (a local tool: /mcp's own cost)  (1 connection)

"through minus direct" is what a client pays for going through mcpgate; "through minus local" is what the
gateway hop itself adds to an authenticated, audited /mcp call (whose own cost is issue 11's).

Each figure is the median of ``runs`` runs. Every answer is checked before and after the
measurement (the echoed text, not an ``isError`` result), and the audit trail must hold no
tools/call through the upstream with an outcome other than ``ok``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from tests.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
UPSTREAM_TOKEN = "upstreamtoken456"  # the upstream's own credential, known to mcpgate only as a sealed header
PROTOCOL_VERSION = "2025-06-18"
NAMES = ("up", "up2", "up3")
ECHO_TEXT = "hello from the benchmark"


def tools_call_local(name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def tools_call(name: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"text": ECHO_TEXT}},
    }


LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}

# wrk's script: one POST with the body and bearer token from the environment; the summary in
# microseconds-exact milliseconds (the added latency is a difference of two small numbers).
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["MCP-Protocol-Version"] = os.getenv("BENCH_PV")
wrk.body = os.getenv("BENCH_BODY")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests))
end
"""

Serve = Callable[[list[str], dict[str, str], str], subprocess.Popen[bytes]]


@dataclass(frozen=True)
class Sample:
    """One wrk run."""

    rps: float
    p50: float
    p99: float
    errors: int
    requests: int


@dataclass(frozen=True)
class Target:
    """Something wrk posts to: the URL, the credential and the JSON-RPC message."""

    label: str
    url: str
    token: str
    body: dict[str, Any]


def wrk(target: Target, *, seconds: int, connections: int) -> Sample:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    try:
        env = {
            **os.environ,
            "BENCH_TOKEN": target.token,
            "BENCH_PV": PROTOCOL_VERSION,
            "BENCH_BODY": json.dumps(target.body, separators=(",", ":")),
        }
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, target.url],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    finally:
        Path(script.name).unlink()
    match = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+) (\S+)", out)
    if not match:
        raise SystemExit(f"wrk gave no result:\n{out}")
    rps, p50, p99, errors, requests = match.groups()
    return Sample(float(rps), float(p50), float(p99), int(errors), int(requests))


def post(target: Target) -> dict[str, Any]:
    """One request outside wrk, to check what is being measured answers what it should."""
    request = urllib.request.Request(  # noqa: S310 - loopback only
        target.url,
        data=json.dumps(target.body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {target.token}",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def check(target: Target) -> None:
    """The call echoes the text (not an isError result); the list holds every upstream's echo."""
    result = post(target).get("result") or {}
    if target.label == "local":
        if result.get("isError") or "email" not in (result.get("structuredContent") or {}):
            raise SystemExit(f"{target.label}: unexpected answer {result!r:.300}")
    elif target.body["method"] == "tools/call":
        content = result.get("content") or [{}]
        if result.get("isError") or content[0].get("text") != ECHO_TEXT:
            raise SystemExit(f"{target.label}: unexpected answer {result!r:.300}")
    else:
        names = {tool["name"] for tool in result.get("tools", [])}
        wanted = {f"{name}__echo" for name in NAMES}
        if not wanted <= names:
            raise SystemExit(f"{target.label}: tools/list lacks {sorted(wanted - names)}")


def wait_listed(target: Target, timeout: float = 30) -> None:
    """mcpgate's worker connects to its upstreams in the background: wait until it lists all three."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check(target)
            return
        except (SystemExit, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


AUDIT_CHECK = """
from audit.models import AuditEvent, AuditKind
calls = AuditEvent.objects.filter(event=AuditKind.TOOL_CALL, detail__upstream__isnull=False)
print(calls.count(), calls.exclude(detail__outcome="ok").count())
"""


def median(samples: list[Sample]) -> Sample:
    return Sample(
        rps=statistics.median(s.rps for s in samples),
        p50=statistics.median(s.p50 for s in samples),
        p99=statistics.median(s.p99 for s in samples),
        errors=sum(s.errors for s in samples),
        requests=sum(s.requests for s in samples),
    )


def run_gateway_case(
    *, env: dict[str, str], gunicorn: list[str], base: str, token: str, serve: Serve, seconds: int, runs: int
) -> None:
    """Measure, print the table (markdown, for docs/benchmarks-gateway.md) and the commands' context."""
    load_before = os.getloadavg()[0]  # other work on the machine shows in every figure: say how much there was
    manage = [str(VENV_BIN / "python"), "manage.py"]
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    env = {**env, "MCPGATE_UPSTREAM_KEYS": Fernet.generate_key().decode()}
    for name in NAMES:
        subprocess.run(
            [
                *manage,
                "add_upstream",
                name,
                "--url",
                upstream_url,
                "--header",
                f"Authorization: Bearer {UPSTREAM_TOKEN}",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    direct = Target("direct", upstream_url, UPSTREAM_TOKEN, tools_call("echo"))
    through = Target("through", base + "/mcp", token, tools_call("up__echo"))
    listing = Target("list", base + "/mcp", token, LIST)
    local = Target("local", base + "/mcp", token, tools_call_local("whoami"))
    upstream = serve(
        [
            str(VENV_BIN / "uvicorn"),
            "bench.upstream_server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(upstream_port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        {**env, "BENCH_UPSTREAM_TOKEN": UPSTREAM_TOKEN},
        upstream_url,
    )
    gateway = None
    try:
        gateway = serve(
            [*gunicorn, "-k", "uvicorn_worker.UvicornWorker", "mcpgate.asgi:application"], env, base + "/healthz"
        )
        wait_listed(listing)
        plan = [(direct, 1), (through, 1), (local, 1), (listing, 1), (direct, 16), (through, 16)]
        for target in (direct, through, local, listing):
            check(target)
        for target, connections in plan:  # warm-up, not counted: open connections, first-call imports
            wrk(target, seconds=1, connections=connections)
        samples: dict[tuple[str, int], list[Sample]] = {(t.label, c): [] for t, c in plan}
        for _ in range(runs):  # interleaved rounds: drift on the machine touches every target alike
            for target, connections in plan:
                samples[(target.label, connections)].append(wrk(target, seconds=seconds, connections=connections))
        for target in (direct, through, local, listing):
            check(target)
        audited = subprocess.run(
            [*manage, "shell", "-v0", "-c", AUDIT_CHECK], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout.split()
    finally:
        for proc in (gateway, upstream):
            if proc is not None:
                proc.terminate()
                proc.wait()
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1 min)"
    report(samples, runs=runs, seconds=seconds, audited=audited, load=load)


def report(
    samples: dict[tuple[str, int], list[Sample]], *, runs: int, seconds: int, audited: list[str], load: str
) -> None:
    m = {key: median(values) for key, values in samples.items()}
    print(f"gateway case: median of {runs} runs of {seconds} s each, wrk -t1, one worker each, PostgreSQL")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}")
    print("| case | connections | req/s | p50 ms | p99 ms | non-2xx/socket errors | runs (p50 ms) |")
    print("|---|---|---|---|---|---|---|")
    rows = [
        ("tools/call echo, direct to the upstream", ("direct", 1)),
        ("tools/call up__echo, through mcpgate", ("through", 1)),
        ("tools/call whoami (local tool), mcpgate", ("local", 1)),
        ("tools/list through mcpgate (3 upstreams)", ("list", 1)),
        ("tools/call echo, direct to the upstream", ("direct", 16)),
        ("tools/call up__echo, through mcpgate", ("through", 16)),
    ]
    for label, key in rows:
        s = m[key]
        each = ", ".join(f"{x.p50:.3f}" for x in samples[key])
        print(f"| {label} | {key[1]} | {s.rps:.0f} | {s.p50:.3f} | {s.p99:.3f} | {s.errors} | {each} |")
    added = m[("through", 1)].p50 - m[("direct", 1)].p50
    verdict = "meets" if added <= 1.5 else "misses"
    print(f"added by mcpgate at p50, 1 connection: {added:.3f} ms ({verdict} the 1.5 ms target)")
    hop = m[("through", 1)].p50 - m[("local", 1)].p50
    print(f"added by the gateway hop over a local tool call at p50, 1 connection: {hop:.3f} ms")
    listed = m[("list", 1)].p50
    print(f"tools/list p50, 1 connection: {listed:.3f} ms ({'meets' if listed < 5 else 'misses'} the 5 ms target)")
    calls, not_ok = audited
    print(f"audit: {calls} upstream tools/call rows, {not_ok} with an outcome other than ok")
    if int(not_ok) or any(s.errors for s in m.values()):
        raise SystemExit("errors during the gateway case: the figures above are not valid")
