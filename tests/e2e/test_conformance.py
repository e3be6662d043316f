"""The official MCP conformance suite's server scenarios, against a fixture alone and through mcpgate (issues 3, 10).

``@modelcontextprotocol/conformance`` (pinned in tests/e2e/node, Node 22) tests a server by calling
fixtures of fixed names. tests/e2e/upstreams/conformance_fixture.py implements them on the Python
SDK. The suite runs twice, at once:

- against the fixture alone (its own stateful Streamable HTTP endpoint, no auth);
- through mcpgate under gunicorn, with the fixture mounted as a stdio upstream with an empty prefix,
  so that a client sees the fixture's own names ("Transparency"). The suite has no option for an
  Authorization header, so a preload (tests/e2e/node/bearer-preload.mjs) adds Alice's bearer token,
  obtained through the real OAuth flow, to every request it makes.

Every scenario that passes against the fixture alone must pass through mcpgate, except those of
tests/e2e/conformance-expected-failures.yml: each needs what a stateless gateway cannot relay (a
session, a notification or a server-to-client request mid-call, logging/setLevel, subscriptions),
and must fail through mcpgate for that reason and no other. The table, fixture alone against
through mcpgate, is printed and written to test-artifacts/conformance/table.md.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.ports import free_port

from .oauthclient import person_token
from .server import REPO, GunicornServer, stop
from .tools import NODE_DIR, NodeTools, node_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXPECTED_FAILURES = REPO / "tests" / "e2e" / "conformance-expected-failures.yml"
FIXTURE = REPO / "tests" / "e2e" / "upstreams" / "conformance_fixture.py"
TABLE = REPO / "test-artifacts" / "conformance" / "table.md"
PRELOAD = NODE_DIR / "bearer-preload.mjs"
REDIRECT_URI = "http://127.0.0.1:33420/callback"
# Each run takes seconds (both run at once); the bound only stops a hung suite.
SUITE_TIMEOUT = 180
FIXTURE_START_TIMEOUT = 15.0
# Both gunicorn workers must have connected the upstream (each polls the database every 2 s).
UPSTREAM_READY_TIMEOUT = 30.0
READY_IN_A_ROW = 12

# The scenarios that applied to mcpgate before it had upstreams: they must still pass through it.
APPLICABLE = frozenset({"server-initialize", "ping", "tools-list", "dns-rebinding-protection"})
# What a stateless gateway cannot relay (the first word of an expected failure's reason), and the
# only way the suite may then report the scenario's failure through mcpgate.
METHOD_NOT_FOUND = re.compile(r"MCP error -32601: Method not found\Z")
STATELESS_LIMITS = {
    # logging/setLevel: per session, and mcpgate answers JSON with no notifications in between.
    "logging": METHOD_NOT_FOUND,
    # resources/subscribe: updates would arrive later, on a session's stream.
    "subscriptions": METHOD_NOT_FOUND,
    # notifications/progress while the call runs: the gateway answers with one JSON response.
    "progress": re.compile(r"\ANo progress notifications received\Z"),
    # sampling/createMessage and elicitation/create from the upstream need a way back to the client.
    "sampling": re.compile(r"\AServer did not request sampling from client\Z"),
    "elicitation": re.compile(r"\AServer did not request elicitation from client\Z"),
    # A session id (SEP-1699 streams): /mcp is stateless by design (checklist H6).
    "session": re.compile(r"\AServer did not provide session ID"),
}
ENTRY = re.compile(r"^\s+- ([\w-]+)\s+# ([a-z]+): (\S.*)$")


@pytest.fixture(scope="module")
def gunicorn_env() -> dict[str, str]:
    """A key for sealing upstream credentials (the fixture has none, but an operator's would)."""
    return {"MCPGATE_UPSTREAM_KEYS": Fernet.generate_key().decode()}


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return node_tools()


@pytest.fixture(scope="module")
def fixture_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fixture as its own Streamable HTTP server on loopback; its /mcp URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("conformance-fixture") / "fixture.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(FIXTURE), "--port", str(port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + FIXTURE_START_TIMEOUT
        while True:
            assert process.poll() is None, f"the fixture exited:\n{log_path.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"the fixture did not listen:\n{log_path.read_text()}"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process, timeout=10)


@dataclass(frozen=True)
class Limit:
    """An expected failure: what a stateless gateway cannot relay, and why, in words."""

    kind: str
    reason: str


def stateless_limits() -> dict[str, Limit]:
    """The scenarios of the expected-failures file, each with its kind and reason."""
    entries = {}
    for line in EXPECTED_FAILURES.read_text().splitlines():
        if line.lstrip().startswith("- "):
            match = ENTRY.match(line)
            assert match, f"{EXPECTED_FAILURES.name}: every entry needs '# kind: reason': {line!r}"
            assert match[2] in STATELESS_LIMITS, f"{EXPECTED_FAILURES.name}: unknown kind {match[2]!r}: {line!r}"
            entries[match[1]] = Limit(match[2], match[3])
    return entries


def alice_token(server: GunicornServer) -> str:
    """Alice's access token for this server's /mcp, through the real OAuth flow."""
    return person_token(server, client_name="MCP conformance suite", redirect_uri=REDIRECT_URI)


def suite_command(tools: NodeTools, url: str, output: Path, token: str | None, *args: str) -> list[str]:
    preload = ["--import", PRELOAD.as_uri()] if token is not None else []
    return [str(tools.node), *preload, str(tools.conformance), "server", "--url", url, "-o", str(output), *args]


def suite_env(token: str | None) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    if token is not None:
        env["MCPGATE_BEARER_TOKEN"] = token
    return env


def run_suite(
    tools: NodeTools, url: str, token: str | None, output: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        suite_command(tools, url, output, token, *args),
        cwd=NODE_DIR,
        env=suite_env(token),
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )


def start_suite(tools: NodeTools, url: str, token: str | None, output: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        suite_command(tools, url, output, token, *args),
        cwd=NODE_DIR,
        env=suite_env(token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for a suite started with ``start_suite``: its exit status and the end of what it printed."""
    try:
        stdout, stderr = process.communicate(timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return process.returncode, f"exit {process.returncode}\n{stdout[-6000:]}\n{stderr[-3000:]}"


def checks_by_scenario(output: Path) -> dict[str, list[dict[str, Any]]]:
    """``-o`` writes DIR/server-<scenario>-<timestamp>/checks.json for each scenario."""
    results = {}
    for path in output.glob("server-*/checks.json"):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", path.parent.name)
        results[scenario] = json.loads(path.read_text())
    return results


def problems(checks: list[dict[str, Any]]) -> list[str]:
    """What the non-successful checks of a scenario say (the suite counts a WARNING as a failure)."""
    found = []
    for check in checks:
        if check["status"] != "SUCCESS":
            message = check.get("errorMessage") or (check.get("details") or {}).get("message") or check["name"]
            found.append(re.sub(r"^Failed: ", "", str(message)))
    return found


def passed(checks: list[dict[str, Any]] | None) -> bool:
    return bool(checks) and not problems(checks or [])


def outcome(checks: list[dict[str, Any]] | None) -> str:
    if checks is None:
        return "not run"
    return "pass" if passed(checks) else "FAIL"


def render_table(
    alone: dict[str, list[dict[str, Any]]], gated: dict[str, list[dict[str, Any]]], limits: dict[str, Limit]
) -> str:
    """Markdown: one row per scenario, fixture alone against through mcpgate, with why either failed."""
    lines = [
        "# MCP conformance server scenarios: the fixture alone and through mcpgate",
        "",
        "Suite: @modelcontextprotocol/conformance (tests/e2e/node/package.json). Fixture:",
        "tests/e2e/upstreams/conformance_fixture.py, mounted on mcpgate over stdio with an empty prefix.",
        "",
        "| scenario | fixture alone | through mcpgate | why it fails |",
        "|---|---|---|---|",
    ]
    for scenario in sorted(alone.keys() | gated.keys()):
        reasons = []
        if not passed(alone.get(scenario)):
            reasons.append("alone: " + "; ".join(problems(alone.get(scenario) or [])))
        if not passed(gated.get(scenario)):
            limit = limits.get(scenario)
            said = "; ".join(problems(gated.get(scenario) or []))
            reasons.append(f"mcpgate ({limit.kind}, expected: {limit.reason}): {said}" if limit else f"mcpgate: {said}")
        why = " / ".join(reasons).replace("|", "\\|")
        lines.append(f"| {scenario} | {outcome(alone.get(scenario))} | {outcome(gated.get(scenario))} | {why} |")
    return "\n".join(lines) + "\n"


def wait_until_served(server: GunicornServer, token: str) -> None:
    """Until a fixture tool answers through /mcp many times in a row, each on a new connection (so on
    either worker): both workers have then connected the upstream."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "test_simple_text"}}
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    deadline = time.monotonic() + UPSTREAM_READY_TIMEOUT
    in_a_row, last = 0, ""
    while in_a_row < READY_IN_A_ROW:
        assert time.monotonic() < deadline, f"the fixture is not served through /mcp: {last}"
        with server.client(limits=httpx2.Limits(max_keepalive_connections=0)) as client:
            response = client.post("/mcp", json=request, headers=headers)
        last = response.text[:500]
        result = response.json().get("result") if response.status_code == 200 else None
        if isinstance(result, dict) and not result.get("isError") and result.get("content"):
            in_a_row += 1
        else:
            in_a_row = 0
            time.sleep(0.2)


def test_every_scenario_the_fixture_passes_alone_passes_through_mcpgate(
    tools: NodeTools, gunicorn_server: GunicornServer, fixture_alone: str, tmp_path: Path
) -> None:
    token = alice_token(gunicorn_server)
    gunicorn_server.remember(token)
    limits = stateless_limits()
    assert limits, f"{EXPECTED_FAILURES.name} lists no scenario"
    assert not limits.keys() & APPLICABLE

    added = gunicorn_server.manage(
        "add_upstream", "conf", "--command", f"{sys.executable} {FIXTURE} --stdio", "--prefix", ""
    )
    assert json.loads(added) == {"name": "conf", "prefix": "", "transport": "stdio"}
    wait_until_served(gunicorn_server, token)

    alone_dir, gated_dir = tmp_path / "alone", tmp_path / "mcpgate"
    alone_run = start_suite(tools, fixture_alone, None, alone_dir)
    gated_run = start_suite(
        tools, gunicorn_server.internal + "/mcp", token, gated_dir, "--expected-failures", str(EXPECTED_FAILURES)
    )
    alone_status, alone_report = finish(alone_run)
    gated_status, gated_report = finish(gated_run)
    alone, gated = checks_by_scenario(alone_dir), checks_by_scenario(gated_dir)

    table = render_table(alone, gated, limits)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(table)
    print(table)

    # The fixture implements every scenario: otherwise a failure through mcpgate could hide behind it.
    assert alone.keys() >= APPLICABLE, alone_report
    assert alone_status == 0 and all(passed(checks) for checks in alone.values()), f"{table}\n{alone_report}"
    assert gated.keys() == alone.keys(), f"{table}\n{gated_report}"

    # Through mcpgate: everything the fixture passes, except what a stateless gateway cannot relay.
    regressions = [s for s in sorted(alone) if passed(alone[s]) and s not in limits and not passed(gated[s])]
    assert not regressions, f"fail through mcpgate only: {regressions}\n{table}"
    for scenario in sorted(APPLICABLE):
        assert passed(gated[scenario]), f"{scenario}\n{table}"
    for scenario, limit in sorted(limits.items()):
        assert scenario in gated, f"{scenario} of {EXPECTED_FAILURES.name} did not run"
        found = problems(gated[scenario])
        assert found, f"{scenario} passes through mcpgate: remove it from {EXPECTED_FAILURES.name}"
        unexplained = [problem for problem in found if not STATELESS_LIMITS[limit.kind].search(problem)]
        assert not unexplained, f"{scenario} failed through mcpgate for more than {limit.kind}: {unexplained}"
    # The suite's own baseline check agrees (no unexpected failure, no stale entry).
    assert gated_status == 0 and "Baseline check passed" in gated_report, gated_report


def test_conformance_suite_is_refused_without_the_token(
    tools: NodeTools, gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    """The control: the preload is what gets the suite in; with a wrong token, /mcp refuses it (401)."""
    suite = run_suite(
        tools, gunicorn_server.internal + "/mcp", "not-a-token", tmp_path, "--scenario", "server-initialize"
    )
    assert suite.returncode == 1, suite.stdout
    (checks,) = checks_by_scenario(tmp_path).values()
    assert [check["status"] for check in checks] == ["FAILURE"]
    assert '"error": "invalid_token"' in checks[0]["errorMessage"], checks
