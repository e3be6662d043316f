"""Benchmark of /mcp: authenticated tools/call whoami, next to two reference points.

    .venv/bin/python -m bench.run [--seconds 10] [--connections 16] [--only TARGET]...
    .venv/bin/python -m bench.run --only gateway [--seconds 6] [--runs 3]

Needs ``wrk`` (Debian package) and the PostgreSQL binaries. Starts a throw-away PostgreSQL
cluster, migrates, mints an access token as /oauth/token would, and measures with one worker
and one wrk run each:

  mcpgate     POST /mcp tools/call whoami (MCP-Protocol-Version 2025-06-18), gunicorn + uvicorn worker
  mcpgate-26  the same in the 2026-07-28 stateless envelope
  (a) django  the fastest trivial Django JSON view (/healthz), gunicorn sync worker
  (b) sdk     the mcp SDK's own MCPServer with bearer auth (bench/sdk_server.py), uvicorn

Prints one line per target: requests/s, p50, p99, and non-2xx responses (which must be 0).

The ``gateway`` target (bench/gateway.py; not in the default set, ``--only gateway``) measures
tools/call through an HTTP upstream against that upstream called directly, and tools/list with
three upstreams: the median of ``--runs`` runs of ``--seconds`` (default 6) each, at 1 and 16
connections, printed as a markdown table (docs/benchmarks-gateway.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.gateway import run_gateway_case
from tests.pgcluster import cluster, free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TOKEN = "benchtoken123"

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
local pv = os.getenv("BENCH_PV")
wrk.headers["MCP-Protocol-Version"] = pv
if pv == "2026-07-28" then
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "whoami"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},'
    .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'
else
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.2f %.2f %d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""

GET_LUA = LUA.replace('wrk.method = "POST"', 'wrk.method = "GET"').replace("wrk.body =", "local _unused =")

MINT = f"""
from datetime import timedelta
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, set_token_value
from oauth_ext.models import Client, User
user, _ = User.objects.get_or_create(username="alice@example.com", defaults={{"email": "alice@example.com", "proxy_groups": ["eng"]}})
client = Client.objects.create(name="bench", client_type="public", authorization_grant_type="authorization-code",
                               redirect_uris="http://127.0.0.1/cb", client_secret="", token_endpoint_auth_method="none")
token = get_access_token_model()(user=user, application=client, scope="mcp", expires=timezone.now() + timedelta(days=1),
                                 resource=[__import__("os").environ["MCPGATE_INTERNAL_URL"] + "/mcp"])
set_token_value(token, "{TOKEN}")
token.save()
"""


def wait_ready(url: str, timeout: float = 20) -> None:
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


def run_wrk(url: str, lua: str, seconds: int, connections: int, env: dict[str, str]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    ).stdout
    Path(script.name).unlink()
    match = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+)", out)
    if not match:
        raise SystemExit(f"wrk gave no result:\n{out}")
    rps, p50, p99, errors = match.groups()
    return f"{float(rps):8.0f} req/s   p50 {float(p50):6.2f} ms   p99 {float(p99):6.2f} ms   errors {errors}"


def serve(cmd: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(ready_url)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, help="per wrk run (default 10; 6 for the gateway case)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", choices=["mcpgate", "mcpgate-26", "django", "sdk", "gateway"], action="append")
    parser.add_argument("--runs", type=int, default=3, help="gateway case: runs per figure, the median reported")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    targets = args.only or ["mcpgate", "mcpgate-26", "django", "sdk"]
    seconds = args.seconds or 10
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with cluster() as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "MCPGATE_INTERNAL_URL": base,
            "MCPGATE_ENV_FILE": os.devnull,  # the bench's settings, not a developer's .env
            "PYTHONPATH": str(ROOT),
            # One token from one wrk process would meet the per-token /mcp limit (600/m) at once: the
            # benchmark measures the path, not the limiter, whose counter still runs on every call.
            "MCPGATE_RATE_LIMIT_MCP": "1000000/s",
            "MCPGATE_CACHE_DIR": tempfile.mkdtemp(prefix="mcpgate-bench-cache-"),
        }
        env.pop("MCPGATE_PUBLIC_URL", None)
        manage = [str(VENV_BIN / "python"), "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "shell", "-v0", "-c", MINT], cwd=ROOT, env=env, check=True)
        wrk_env = {"BENCH_TOKEN": TOKEN}
        gunicorn = [str(VENV_BIN / "gunicorn"), "-w", "1", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
        if set(targets) - {"gateway"}:
            print(f"{args.connections} connections, {seconds} s each, one worker, PostgreSQL")
        if {"mcpgate", "mcpgate-26"} & set(targets):
            proc = serve(
                [*gunicorn, "-k", "uvicorn_worker.UvicornWorker", "mcpgate.asgi:application"], env, base + "/healthz"
            )
            try:
                for name, pv in (("mcpgate", "2025-06-18"), ("mcpgate-26", "2026-07-28")):
                    if name in targets:
                        result = run_wrk(base + "/mcp", LUA, seconds, args.connections, {**wrk_env, "BENCH_PV": pv})
                        print(f"{name:<12} tools/call whoami        {result}")
            finally:
                proc.terminate()
                proc.wait()
        if "django" in targets:
            proc = serve([*gunicorn, "mcpgate.wsgi"], env, base + "/healthz")
            try:
                result = run_wrk(base + "/healthz", GET_LUA, seconds, args.connections, {**wrk_env, "BENCH_PV": ""})
                print(f"{'(a) django':<12} trivial JSON view        {result}")
            finally:
                proc.terminate()
                proc.wait()
        if "gateway" in targets:
            run_gateway_case(
                env=env,
                gunicorn=gunicorn,
                base=base,
                token=TOKEN,
                serve=serve,
                seconds=args.seconds or 6,
                runs=args.runs,
            )
        if "sdk" in targets:
            sdk_env = {**env, "BENCH_BASE": base, "BENCH_TOKEN": TOKEN}
            proc = serve(
                [*gunicorn, "-k", "uvicorn_worker.UvicornWorker", "bench.sdk_server:app"], sdk_env, base + "/mcp"
            )
            try:
                result = run_wrk(base + "/mcp", LUA, seconds, args.connections, {**wrk_env, "BENCH_PV": "2025-06-18"})
                print(f"{'(b) sdk':<12} MCPServer tools/call    {result}")
            finally:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
