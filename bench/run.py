"""The benchmark of issue 11 (``make bench``): /mcp, OAuth and the gateway next to their reference points, into BENCHMARKS.md.

    .venv/bin/python -m bench.run                              # every case, writes BENCHMARKS.md and bench/plots/
    .venv/bin/python -m bench.run --only mcp --only peer       # some cases: the report goes to stdout
    .venv/bin/python -m bench.run --seconds 2 --runs 1 --out /tmp/bench.md   # a quick look

Needs ``wrk`` (``apt-get install wrk``) and the PostgreSQL binaries. Loopback only. Starts a throw-away
PostgreSQL cluster (tests.pgcluster), migrates, seeds it (bench/fixtures.py: the bench token, a
confidential and a public client, 1,000 more clients and 10,000 live tokens, one-time codes and
refresh tokens for the OAuth case), then starts each server in turn and measures it with wrk in a
process of its own (bench/cases.py, bench/wrk/post.lua). Every server runs as mcpgate does in
production: gunicorn, ``mcpgate.workers.Worker``, a listening socket per worker (``--reuse-port``), one
worker unless said otherwise. Cases:

  limits   a bare ASGI JSON response (bench/asgi_hello.py) and mcpgate's /healthz (a trivial Django view)
  mcp      mcpgate POST /mcp tools/call ``whoami`` and tools/list, 2025-06-18 and 2026-07-28, 1/16/64 connections
  peer     the mcp SDK's MCPServer with its bearer auth (bench/sdk_server.py), tools/call ``whoami``
  oauth    /oauth/token code exchange (public, confidential client), refresh; /oauth/register
  gateway  tools/call through an HTTP upstream vs that upstream directly (bench/gateway.py)
  scale    tools/call at 1, 2 and 4 workers; EXPLAIN ANALYZE of the token lookup over the seeded tables

Each figure is the median of ``--runs`` (3) runs of ``--seconds`` (3) each; see BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import clients
from bench.cases import ROOT, VENV_BIN, Plan, Results, Target, measure, median, serving
from bench.gateway import ROWS as GATEWAY_ROWS
from bench.gateway import problems as gateway_problems
from bench.gateway import run_gateway_case
from bench.gateway import summary as gateway_summary
from bench.report import Section, machine, write
from tests.pgcluster import cluster
from tests.ports import free_port

TOKEN = "benchtoken123"
CASES = ("limits", "mcp", "peer", "oauth", "gateway", "scale")
CONNECTIONS = (1, 16, 64)
VERSIONS = ("2025-06-18", "2026-07-28")
# One-time inputs minted per run and connection count: more than a single worker answers in the run's
# seconds on any machine we know of (a run that runs out is refused, not reported).
FEED_PER_SECOND = {1: 400, 16: 600}
OAUTH_FEEDS = ("code-public", "code-confidential", "refresh")
CLIENTS = 1000
LIVE_TOKENS = 10000
PEOPLE = 1000
EMAIL = "alice@example.com"
BARE_WORKERS = {1: "bare ASGI JSON response, 1 worker", 2: "bare ASGI JSON response, 2 workers"}


def mcp_target(method: str, version: str, url: str) -> Target:
    """A POST /mcp as a client of that protocol version sends it; every answer must be the right result."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {TOKEN}",
        "MCP-Protocol-Version": version,
    }
    params: dict[str, object] = {"name": "whoami", "arguments": {}} if method == "tools/call" else {}
    if version == "2026-07-28":  # the stateless envelope: routing headers, per-request _meta
        headers["Mcp-Method"] = method
        if method == "tools/call":
            headers["Mcp-Name"] = "whoami"
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, separators=(",", ":"))
    expect = EMAIL if method == "tools/call" else '"whoami"'
    return Target(f"{method} {version}", url, body=body, headers=headers, expect=expect, reject='"isError":true')


def oauth_targets(base: str) -> list[Target]:
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    registration = {
        "client_name": "bench",
        "redirect_uris": [clients.REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    return [
        Target(
            "code exchange, public client",
            base + "/oauth/token",
            headers=form,
            expect="access_token",
            feed="code-public",
        ),
        Target(
            "code exchange, confidential client",
            base + "/oauth/token",
            headers={**form, "Authorization": clients.basic_auth()},
            expect="access_token",
            feed="code-confidential",
        ),
        Target("refresh, public client", base + "/oauth/token", headers=form, expect="access_token", feed="refresh"),
        Target(
            "registration (RFC 7591)",
            base + "/oauth/register",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body=json.dumps(registration, separators=(",", ":")),
            expect="client_id",
        ),
    ]


def say(line: str) -> None:
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="per wrk run (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure, the median reported (default 3)")
    parser.add_argument("--only", choices=CASES, action="append", help="a case to run (repeatable); default all")
    parser.add_argument("--out", type=Path, help="the report (default BENCHMARKS.md for all cases, else stdout)")
    parser.add_argument(
        "--plots", type=Path, help="where the PNGs go (default bench/plots/ for BENCHMARKS.md, else next to --out)"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: install it (Debian/Ubuntu: apt-get install wrk)")
    cases = [c for c in CASES if c in (args.only or CASES)]
    out = args.out.resolve() if args.out else (ROOT / "BENCHMARKS.md" if not args.only else None)
    started = time.monotonic()
    load_before = os.getloadavg()
    port = free_port()  # every server in turn: tokens and codes are bound to this base URL's /mcp
    base = f"http://127.0.0.1:{port}"
    feeds = Path(tempfile.mkdtemp(prefix="mcpgate-bench-feeds-"))
    sections: list[Section] = []
    problems: list[str] = []
    plan_lines: list[str] = []
    seconds, runs = args.seconds, args.runs
    with cluster() as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "MCPGATE_INTERNAL_URL": base,
            "MCPGATE_ENV_FILE": os.devnull,  # the bench's settings, not a developer's .env
            "PYTHONPATH": str(ROOT),
            # One wrk process is one client address and one token: the limits would refuse most requests at
            # once. The benchmark measures the paths, not the limiter, whose counters still run on every call.
            "MCPGATE_RATE_LIMIT_MCP": "1000000/s",
            "MCPGATE_RATE_LIMIT_TOKEN": "1000000/s",
            "MCPGATE_RATE_LIMIT_TOKEN_CLIENT": "1000000/s",
            "MCPGATE_REGISTRATION_RATE_PER_MINUTE": "100000000",
            "MCPGATE_CACHE_DIR": tempfile.mkdtemp(prefix="mcpgate-bench-cache-"),
        }
        env.pop("MCPGATE_PUBLIC_URL", None)
        manage = [str(VENV_BIN / "python"), "manage.py"]
        say(f"PostgreSQL at {database_url.rsplit('@', 1)[-1]}; migrating and seeding")
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        spec = [  # run 0 is the one-second warm-up
            [feed, c, run, FEED_PER_SECOND[c] * (seconds if run else 1)]
            for feed in (OAUTH_FEEDS if "oauth" in cases else ())
            for c in FEED_PER_SECOND
            for run in range(runs + 1)
        ]
        seed_env = {
            **env,
            "BENCH_BASE": base,
            "BENCH_TOKEN": TOKEN,
            "BENCH_FEEDS": str(feeds),
            "BENCH_FEED_SPEC": json.dumps(spec),
            "BENCH_CLIENTS": str(CLIENTS if "scale" in cases else 0),
            "BENCH_TOKENS": str(LIVE_TOKENS if "scale" in cases else 0),
            "BENCH_PEOPLE": str(PEOPLE if "scale" in cases else 0),
        }
        seed = "from bench.fixtures import seed; seed()"
        subprocess.run([*manage, "shell", "-v0", "-c", seed], cwd=ROOT, env=seed_env, check=True)
        say(f"seeded in {time.monotonic() - started:.0f} s")
        # --reuse-port: a listening socket per worker, as deploy/gunicorn.conf.py has it (mcpgate.workers).
        gunicorn = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--reuse-port"]
        asgi = ["-k", "mcpgate.workers.Worker"]
        mcpgate_cmd = [*gunicorn, "-w", "1", *asgi, "mcpgate.asgi:application"]

        def run(name: str, cmd: list[str], server_env: dict[str, str], ready: str, plan: Plan) -> Results:
            say(f"{name}: {len(plan)} targets, {runs} runs of {seconds} s")
            with serving(cmd, server_env, ready):
                return measure(plan, seconds=seconds, runs=runs, feeds=feeds, say=say)

        if "limits" in cases:
            bare = Target("bare ASGI JSON response", base + "/", method="GET", expect='"ok"')
            limits = run(
                "bare ASGI",
                [*gunicorn, "-w", "1", *asgi, "bench.asgi_hello:app"],
                env,
                base + "/",
                [(bare, 1), (bare, 16)],
            )
        mcp_plan: Plan = []
        healthz = Target("Django view /healthz", base + "/healthz", method="GET", expect='"ok"')
        if "limits" in cases:
            mcp_plan += [(healthz, 1), (healthz, 16)]
        mcp_targets = [mcp_target(m, v, base + "/mcp") for v in VERSIONS for m in ("tools/call", "tools/list")]
        if "mcp" in cases:
            mcp_plan += [(t, c) for t in mcp_targets for c in CONNECTIONS]
        oauth = oauth_targets(base)
        if "oauth" in cases:
            mcp_plan += [(t, c) for t in oauth for c in FEED_PER_SECOND]
        # The SDK peer is served beside mcpgate (its own port; tokens are checked against its own base) and
        # measured in the same interleaved rounds, so that drift on the machine touches both alike: measured
        # one after the other, the ratio moved with the machine's speed between the two.
        peer_base = f"http://127.0.0.1:{free_port()}"
        peer_call = mcp_target("tools/call", "2025-06-18", peer_base + "/mcp")
        peer_target = dataclasses.replace(peer_call, label=f"SDK peer {peer_call.label}")
        if "peer" in cases:
            mcp_plan += [(peer_target, c) for c in CONNECTIONS]
        if mcp_plan:
            with contextlib.ExitStack() as beside:
                if "peer" in cases:
                    peer_cmd = [
                        str(VENV_BIN / "gunicorn"),
                        "--bind",
                        peer_base.removeprefix("http://"),
                        "--log-level",
                        "warning",
                        "-w",
                        "1",
                        *asgi,
                        "bench.sdk_server:app",
                    ]
                    peer_env = {**env, "BENCH_BASE": peer_base, "BENCH_TOKEN": TOKEN}
                    beside.enter_context(serving(peer_cmd, peer_env, peer_base + "/mcp"))
                mcpgate = run("mcpgate, one worker", mcpgate_cmd, env, base + "/healthz", mcp_plan)
        if "limits" in cases:
            sections.append(
                Section(
                    "limits",
                    "Limits: the server alone, and a trivial Django view",
                    "What gunicorn + one uvicorn worker answer with no application (a bare ASGI app returning a "
                    "small JSON body), and with mcpgate's Django stack around its cheapest view (`/healthz`, no "
                    "database). No /mcp figure can beat the first; the second is what Django costs before /mcp "
                    "does anything.",
                    [
                        ("bare ASGI JSON response", (bare.label, 1)),
                        ("bare ASGI JSON response", (bare.label, 16)),
                        ("Django view /healthz (mcpgate)", (healthz.label, 1)),
                        ("Django view /healthz (mcpgate)", (healthz.label, 16)),
                    ],
                    {**limits, **{k: v for k, v in mcpgate.items() if k[0] == healthz.label}},
                )
            )
        if "mcp" in cases:
            sections.append(
                Section(
                    "mcp",
                    "mcpgate /mcp: tools/call and tools/list",
                    "POST /mcp with Alice's bearer token, tools/call `whoami` (a local tool: one token lookup, "
                    "one audit row) and tools/list, in the 2025-06-18 shape (MCP-Protocol-Version header) and the "
                    "2026-07-28 stateless envelope (Mcp-Method/Mcp-Name headers, `_meta` per request). Every "
                    "answer must carry the result (Alice's email, or `whoami` in the list) and no `isError`.",
                    [(t.label, (t.label, c)) for t in mcp_targets for c in CONNECTIONS],
                    {k: v for k, v in mcpgate.items() if k[0] in {t.label for t in mcp_targets}},
                )
            )
        if "peer" in cases:
            call = mcp_target("tools/call", "2025-06-18", base + "/mcp")
            peer = {k: v for k, v in mcpgate.items() if k[0] == peer_target.label}
            rows = [("SDK MCPServer tools/call 2025-06-18", (peer_target.label, c)) for c in CONNECTIONS]
            if "mcp" in cases:  # side by side with mcpgate's figures from the runs above
                rows += [("mcpgate tools/call 2025-06-18", (call.label, c)) for c in CONNECTIONS]
                peer.update({k: v for k, v in mcpgate.items() if k[0] == call.label})
            sections.append(
                Section(
                    "peer",
                    "The peer: the mcp SDK's MCPServer with its bearer auth, next to mcpgate",
                    "bench/sdk_server.py: the SDK's `MCPServer` with `token_verifier` and `AuthSettings` (a static "
                    "verifier, no database, no audit), one `whoami` tool, stateless JSON responses; the same "
                    "server settings (gunicorn, one uvicorn worker) and the same request as mcpgate's tools/call "
                    "2025-06-18, whose figures are repeated here from the table above. Both servers are up "
                    "together and measured in the same interleaved rounds (one idles while the other is measured).",
                    rows,
                    peer,
                )
            )
        if "oauth" in cases:
            sections.append(
                Section(
                    "oauth",
                    "OAuth: code exchange, refresh, registration",
                    "POST /oauth/token and /oauth/register on the mcpgate server above. Codes and refresh tokens "
                    "are single use, so each run takes fresh ones in order from a file (bench/wrk/post.lua): "
                    "bench/fixtures.py mints them into the database before the run as /oauth/authorize and "
                    "/oauth/token store them (PKCE S256, bound to /mcp). The confidential client authenticates "
                    "with client_secret_basic; registration registers a new public client each time. Every "
                    "answer must be 2xx and carry an `access_token` (or a `client_id`).",
                    [(t.label, (t.label, c)) for t in oauth for c in FEED_PER_SECOND],
                    {k: v for k, v in mcpgate.items() if k[0] in {t.label for t in oauth}},
                )
            )
        if "scale" in cases:
            call = mcp_target("tools/call", "2025-06-18", base + "/mcp")
            scale: Results = {}
            rows = []
            # The machine's own ceiling for the same question: the bare ASGI app at one and two workers.
            for workers in (1, 2):
                bare_target = Target(BARE_WORKERS[workers], base + "/", method="GET", expect='"ok"')
                cmd = [*gunicorn, "-w", str(workers), *asgi, "bench.asgi_hello:app"]
                scale.update(run(f"bare ASGI, {workers} workers", cmd, env, base + "/", [(bare_target, 16)]))
                rows.append((bare_target.label, (bare_target.label, 16)))
            for workers in (1, 2, 4):
                worker_target = dataclasses.replace(call, label=f"tools/call, {workers} worker{'s' * (workers > 1)}")
                cmd = [*gunicorn, "-w", str(workers), *asgi, "mcpgate.asgi:application"]
                plan = [(worker_target, 16), (worker_target, 64)]
                scale.update(run(f"mcpgate, {workers} workers", cmd, env, base + "/healthz", plan))
                rows += [(worker_target.label, (worker_target.label, c)) for c in (16, 64)]
            explained = subprocess.run(
                [*manage, "shell", "-v0", "-c", "from bench.fixtures import explain; explain()"],
                cwd=ROOT,
                env=seed_env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            plan_info = json.loads(explained.strip().splitlines()[-1])
            plan_text = "\n".join(plan_info["plan"])
            one_hit, verdict = token_plan_verdict(plan_info["plan"], plan_info["table"])
            plan_lines = [
                "## The token lookup's plan",
                "",
                "The statement every /mcp call runs (mcp_bridge/tokens.py, imported, not copied: on PostgreSQL the "
                "lookup of the token, its person and its client, and the call counted against the token's rate "
                "limit in the same statement), under EXPLAIN "
                "ANALYZE for a live token, on the benchmark's database after the runs, tables ANALYZEd: "
                f"{plan_info['live_tokens']:,} live access tokens, {plan_info['clients']:,} clients and "
                f"{plan_info['people']:,} people ({LIVE_TOKENS:,}, {CLIENTS:,} and {PEOPLE:,} seeded; the rest "
                "made by the OAuth case).",
                "",
                f"token lookup: {verdict}",
                "",
                "```sql",
                plan_info["sql"],
                "```",
                "",
                "```",
                plan_text,
                "```",
                "",
            ]
            if not one_hit:
                problems.append(f"token lookup: {verdict}")
            sections.append(
                Section(
                    "scale",
                    "Scale: tools/call at 1, 2 and 4 workers",
                    "tools/call `whoami` (2025-06-18) with gunicorn `-w 1`, `-w 2` and `-w 4`, on the seeded "
                    f"database ({CLIENTS:,} extra clients, {PEOPLE:,} extra people, {LIVE_TOKENS:,} extra live tokens). wrk, PostgreSQL and "
                    "the workers share the machine's cores. First, for reference, the bare ASGI app (the limits "
                    "case's) at one and two workers: how far a second worker can go on this machine at all.",
                    rows,
                    scale,
                    [
                        f"- {w} workers vs 1 at {c} connections: ratio "
                        f"{median(scale[(f'tools/call, {w} workers', c)]).rps / median(scale[('tools/call, 1 worker', c)]).rps:.2f}"
                        for w in (2, 4)
                        for c in (16, 64)
                    ],
                )
            )
        # Last: it registers upstreams that every later mcpgate server would connect to.
        if "gateway" in cases:
            say(f"gateway: 6 targets, {runs} runs of {seconds} s")
            gateway = run_gateway_case(
                env=env, gunicorn=[*gunicorn, "-w", "1"], base=base, token=TOKEN, seconds=seconds, runs=runs, say=say
            )
            problems += gateway_problems(gateway)
            sections.append(
                Section(
                    "gateway",
                    "Gateway: tools/call through an HTTP upstream vs that upstream directly",
                    "bench/gateway.py (issue 10; docs/benchmarks-gateway.md): the SDK's MCPServer with one `echo` "
                    "tool behind a static bearer credential (uvicorn, one worker), registered in mcpgate three "
                    "times (`up`, `up2`, `up3`); tools/call `up__echo` through mcpgate, `echo` directly, a local "
                    "`whoami` and tools/list (3 upstreams) on the same mcpgate, in interleaved rounds.",
                    GATEWAY_ROWS,
                    gateway.results,
                    gateway_summary(gateway),
                )
            )
    load_after = os.getloadavg()
    shutil.rmtree(feeds, ignore_errors=True)
    for section in sections:
        for label, key in section.rows:
            trouble = section.sample(key).problems()
            if trouble:
                problems.append(f"{section.slug}: {label}, {key[1]} connections: {trouble}")
    targets = target_lines(sections)
    wall = time.monotonic() - started
    command = "make bench" if os.environ.get("MAKELEVEL") else ""
    invoked = shlex.join([".venv/bin/python", "-m", "bench.run", *sys.argv[1:]])
    command = f"{command}    # runs: {invoked}" if command else invoked
    method = [
        "## How",
        "",
        f"- Each figure is the **median of {runs} runs of {seconds} s** (`wrk -t1 -cN -d{seconds}s`, "
        "bench/wrk/post.lua), after one uncounted warm-up second per target; one server's targets run in "
        "interleaved rounds so that drift on the machine touches them alike. Short runs keep `make bench` under "
        "10 minutes on 2 cores; the median of three damps a run disturbed by other work.",
        "- Everything on one machine over loopback: wrk (one thread, its own process), the server under test "
        "(gunicorn, `mcpgate.workers.Worker`, a listening socket per worker as deploy/gunicorn.conf.py has it, "
        "one worker unless said), PostgreSQL (a throw-away cluster, "
        "tests.pgcluster). Rate limits are lifted (one wrk process is one address and one token); their "
        "counters still run on every request.",
        "- Checked, not assumed: wrk checks every answer (2xx, the expected content, no `isError` result); a "
        "figure with any bad answer, socket error, or one-time input reused is refused and listed under "
        "INVALID, and the run exits non-zero.",
        "- p50/p99 are wrk's latency percentiles; `runs:` columns give each run's figure.",
    ]
    to_stdout = out is None
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="mcpgate-bench-")) / "BENCHMARKS.md"
    plots = args.plots or (ROOT / "bench" / "plots" if out == ROOT / "BENCHMARKS.md" else out.parent / "plots")
    write(
        out=out,
        plots=plots,
        command=command,
        method=method,
        machine_lines=machine(load_before, load_after),
        targets=targets,
        sections=sections,
        plan=plan_lines,
        wall=wall,
        problems=problems,
    )
    if to_stdout:
        print(out.read_text())
    say("")
    for line in targets:
        say(line)
    say(f"wrote {out} and {plots}/*.png in {wall / 60:.1f} min")
    if problems:
        raise SystemExit("errors during the benchmark, the figures are not valid:\n" + "\n".join(problems))


def token_plan_verdict(plan: list[str], table: str) -> tuple[bool, str]:
    """Whether the token table is read by one index scan returning one row, and no table is scanned whole."""
    scans = [line.strip() for line in plan if f" on {table} " in line]
    by_index = len(scans) == 1 and scans[0].startswith(("->  Index Scan", "Index Scan", "->  Index Only Scan"))
    by_index = by_index and "rows=1 loops=1" in scans[0]
    whole = [line.strip().removeprefix("->  ") for line in plan if "Seq Scan" in line]
    if not by_index:
        return False, f"NOT one index hit on {table}: {'; '.join(scans) or 'not in the plan'}"
    text = f"one index hit on {table} (by token_checksum, one row)"
    if whole:
        text += f"; sequential scans elsewhere: {'; '.join(whole)}"
    else:
        text += "; the user and the client joined by primary key, no sequential scan"
    arbiters = [line.strip() for line in plan if "Conflict Arbiter Indexes:" in line]
    if arbiters:
        text += f"; the call counted by an upsert ({arbiters[0]})"
    return True, text


def target_lines(sections: list[Section]) -> list[str]:
    """Issue 11's targets, each with its ratio on a line of its own and whether it is met."""
    by_slug = {s.slug: s for s in sections}
    lines: list[str] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    mcp, peer = by_slug.get("mcp"), by_slug.get("peer")
    if mcp and peer:
        ours16 = mcp.sample(("tools/call 2025-06-18", 16))
        theirs16 = peer.sample(("SDK peer tools/call 2025-06-18", 16))
        ours1 = mcp.sample(("tools/call 2025-06-18", 1))
        theirs1 = peer.sample(("SDK peer tools/call 2025-06-18", 1))
        throughput = ours16.rps / theirs16.rps
        p99 = ours16.p99 / theirs16.p99
        p50 = ours1.p50 / theirs1.p50
        lines += [
            f"tools/call vs SDK peer: ratio {throughput:.2f}",
            f"- throughput ≥ the peer's at 16 connections (ratio ≥ 1.00): {verdict(throughput >= 1)} "
            f"({ours16.rps:.0f} vs {theirs16.rps:.0f} req/s)",
            "",
            f"tools/call p99 at 16 vs SDK peer: ratio {p99:.2f}",
            f"- p99 at 16 connections ≤ the peer's (ratio ≤ 1.00): {verdict(p99 <= 1)} "
            f"({ours16.p99:.1f} vs {theirs16.p99:.1f} ms)",
            "",
            f"tools/call p50 at 1 vs SDK peer: ratio {p50:.2f}",
            f"- p50 at one connection ≤ 1.2 x the peer's (ratio ≤ 1.20): {verdict(p50 <= 1.2)} "
            f"({ours1.p50:.2f} vs {theirs1.p50:.2f} ms)",
            "",
        ]
    oauth = by_slug.get("oauth")
    if oauth:
        for label, name in (
            ("code exchange, confidential client", "confidential code exchange"),
            ("refresh, public client", "refresh"),
        ):
            p = oauth.sample((label, 1)).p50
            lines += [
                f"{name} p50: {p:.2f} ms (target < 20 ms)",
                f"- {name} < 20 ms p50 at one connection: {verdict(p < 20)}",
                "",
            ]
    scale = by_slug.get("scale")
    if scale:
        one, two = scale.sample(("tools/call, 1 worker", 16)), scale.sample(("tools/call, 2 workers", 16))
        ratio = two.rps / one.rps
        bare = scale.sample((BARE_WORKERS[2], 16)).rps / scale.sample((BARE_WORKERS[1], 16)).rps
        lines += [
            f"2 workers vs 1: ratio {ratio:.2f}",
            f"- 2 workers ≥ 1.8 x one worker at 16 connections: {verdict(ratio >= 1.8)} "
            f"({two.rps:.0f} vs {one.rps:.0f} req/s; {os.cpu_count()} cores)",
            f"- this machine's ceiling, the bare ASGI app with 2 workers vs 1 under the same wrk: ratio {bare:.2f}",
            "",
        ]
    return lines or ["(no target's cases were run)"]


if __name__ == "__main__":
    main()
