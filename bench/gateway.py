"""The gateway case of the benchmark: tools/call through an HTTP upstream vs that upstream called directly.

    .venv/bin/python -m bench.run --only gateway [--seconds 3] [--runs 3]

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

Each figure is the median of ``runs`` runs (bench/cases.py). Every answer is checked: by wrk during the
runs (bench/wrk/post.lua: 2xx, the echoed text or the caller's email, never an ``isError`` result) and
once before and after them, and the audit trail must hold no tools/call through the upstream with an
outcome other than ``ok``. bench/run.py writes the table into BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet

from bench.cases import ROOT, VENV_BIN, Results, Target, measure, median, serving
from tests.ports import free_port

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


def target(label: str, url: str, token: str, body: dict[str, Any]) -> Target:
    """A POST of one JSON-RPC message; wrk checks every answer: the echoed text for an upstream call,
    the caller's email for the local tool, every upstream's tool for tools/list, and never ``isError``."""
    if body["method"] == "tools/list":
        expect = f"{NAMES[-1]}__echo"
    elif body["params"]["name"] == "whoami":
        expect = "alice@example.com"
    else:
        expect = ECHO_TEXT
    return Target(
        label,
        url,
        body=json.dumps(body, separators=(",", ":")),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {token}",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        },
        expect=expect,
        reject='"isError":true',
    )


def post(target: Target) -> dict[str, Any]:
    """One request outside wrk, to check what is being measured answers what it should."""
    request = urllib.request.Request(target.url, data=target.body.encode(), headers=target.headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def check(target: Target) -> None:
    """The call echoes the text (not an isError result); the list holds every upstream's echo."""
    result = post(target).get("result") or {}
    body = json.loads(target.body)
    if target.label == "local":
        if result.get("isError") or "email" not in (result.get("structuredContent") or {}):
            raise SystemExit(f"{target.label}: unexpected answer {result!r:.300}")
    elif body["method"] == "tools/call":
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

ROWS = [
    ("tools/call echo, direct to the upstream", ("direct", 1)),
    ("tools/call up__echo, through mcpgate", ("through", 1)),
    ("tools/call whoami (local tool), mcpgate", ("local", 1)),
    ("tools/list through mcpgate (3 upstreams)", ("list", 1)),
    ("tools/call echo, direct to the upstream", ("direct", 16)),
    ("tools/call up__echo, through mcpgate", ("through", 16)),
]


@dataclass(frozen=True)
class GatewayResult:
    """The gateway case's samples and what the audit trail holds afterwards."""

    results: Results
    audited_calls: int
    audited_not_ok: int


def run_gateway_case(
    *,
    env: dict[str, str],
    gunicorn: list[str],
    base: str,
    token: str,
    seconds: float,
    runs: int,
    say: Callable[[str], None] = print,
) -> GatewayResult:
    """Register the upstream three times, start it and mcpgate, measure, check the audit trail."""
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
    direct = target("direct", upstream_url, UPSTREAM_TOKEN, tools_call("echo"))
    through = target("through", base + "/mcp", token, tools_call("up__echo"))
    listing = target("list", base + "/mcp", token, LIST)
    local = target("local", base + "/mcp", token, tools_call_local("whoami"))
    uvicorn = [str(VENV_BIN / "uvicorn"), "bench.upstream_server:app", "--host", "127.0.0.1"]
    uvicorn += ["--port", str(upstream_port), "--workers", "1", "--log-level", "warning", "--no-access-log"]
    mcpgate = [*gunicorn, "-k", "mcpgate.workers.Worker", "mcpgate.asgi:application"]
    with (
        serving(uvicorn, {**env, "BENCH_UPSTREAM_TOKEN": UPSTREAM_TOKEN}, upstream_url),
        serving(mcpgate, env, base + "/healthz"),
    ):
        wait_listed(listing)
        for each in (direct, through, local, listing):
            check(each)
        plan = [(direct, 1), (through, 1), (local, 1), (listing, 1), (direct, 16), (through, 16)]
        results = measure(plan, seconds=seconds, runs=runs, say=say)
        for each in (direct, through, local, listing):
            check(each)
    audited = subprocess.run(
        [*manage, "shell", "-v0", "-c", AUDIT_CHECK], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    return GatewayResult(results, int(audited[0]), int(audited[1]))


def summary(gateway: GatewayResult) -> list[str]:
    """What issue 10 asks of the gateway, from the medians: the added latency, tools/list, the audit trail."""
    m = {key: median(values) for key, values in gateway.results.items()}
    added = m[("through", 1)].p50 - m[("direct", 1)].p50
    hop = m[("through", 1)].p50 - m[("local", 1)].p50
    listed = m[("list", 1)].p50
    return [
        f"- added by mcpgate at p50, 1 connection: {added:.3f} ms ({'met' if added <= 1.5 else 'missed'}: "
        "issue 10's target is 1.5 ms)",
        f"- added by the gateway hop over a local tool call at p50, 1 connection: {hop:.3f} ms",
        f"- tools/list p50, 1 connection: {listed:.3f} ms ({'met' if listed < 5 else 'missed'}: target < 5 ms)",
        f"- audit: {gateway.audited_calls} upstream tools/call rows, {gateway.audited_not_ok} with an outcome "
        "other than ok",
    ]


def problems(gateway: GatewayResult) -> list[str]:
    """The audit trail's verdict (bench/run.py checks every figure itself)."""
    if gateway.audited_not_ok:
        return [f"gateway: {gateway.audited_not_ok} upstream tools/call audit rows with an outcome other than ok"]
    return []
