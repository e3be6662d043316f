"""The official MCP conformance suite's server scenarios against /mcp under gunicorn (issue 3).

``@modelcontextprotocol/conformance`` (pinned in tests/e2e/node) runs on Node 22. It has no
option for an Authorization header, so a preload (tests/e2e/node/bearer-preload.mjs) installs
an undici dispatcher that adds Alice's bearer token, obtained through the real OAuth flow, to
every request it makes. The suite runs with tests/e2e/conformance-expected-failures.yml, which
lists the scenarios that need fixtures mcpgate does not have; every other scenario must pass.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .oauthclient import ALICE, authorize, discover, exchange, json_of
from .server import REPO, GunicornServer
from .tools import NODE_DIR, NodeTools, node_tools

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXPECTED_FAILURES = REPO / "tests" / "e2e" / "conformance-expected-failures.yml"
PRELOAD = NODE_DIR / "bearer-preload.mjs"
REDIRECT_URI = "http://127.0.0.1:33420/callback"
SUITE_TIMEOUT = 180

# The suite's scenarios that apply to a server of tools without sessions: each must pass.
APPLICABLE = frozenset({"server-initialize", "ping", "tools-list", "dns-rebinding-protection"})
# How a scenario of the expected-failures file may fail: for want of a fixture and nothing else.
# An unknown test_* tool (a JSON-RPC error, as L4 asks: no "Unknown tool" result can pass for a
# tool's own output), -32601 for a capability mcpgate does not declare, or no session id.
MISSING_FIXTURE = re.compile(
    r"MCP error -32602: Unknown tool: test_\w+$"
    r"|MCP error -32601: Method not found$"
    r"|Server did not provide session ID"
)
ENTRY = re.compile(r"^\s+- ([\w-]+)\s+# (\S.*)$")


def expected_failures() -> dict[str, str]:
    """The scenarios of the expected-failures file and the reason given for each."""
    entries = {}
    for line in EXPECTED_FAILURES.read_text().splitlines():
        if line.lstrip().startswith("- "):
            match = ENTRY.match(line)
            assert match, f"{EXPECTED_FAILURES.name}: every entry needs its reason as a comment: {line!r}"
            entries[match[1]] = match[2]
    return entries


def alice_token(server: GunicornServer) -> str:
    """An access token for the internal host's /mcp, through registration, consent and the code grant."""
    with server.client() as client, server.client(headers=ALICE) as browser:
        discovery = discover(client, server.internal + "/mcp")
        registered = client.post(
            discovery.endpoint("registration"),
            json={
                "client_name": "MCP conformance suite",
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "none",
            },
        )
        client_id = json_of(registered)["client_id"]
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=REDIRECT_URI)
        tokens = json_of(exchange(client, discovery, grant, client_id=client_id))
    return str(tokens["access_token"])


def run_suite(tools: NodeTools, url: str, token: str, output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(tools.node),
        "--import",
        PRELOAD.as_uri(),
        str(tools.conformance),
        "server",
        "--url",
        url,
        "-o",
        str(output),
        *args,
    ]
    return subprocess.run(
        command,
        cwd=NODE_DIR,
        env={"PATH": "/usr/bin:/bin", "MCPGATE_BEARER_TOKEN": token, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )


def checks_by_scenario(output: Path) -> dict[str, list[dict[str, Any]]]:
    """``-o`` writes DIR/server-<scenario>-<timestamp>/checks.json for each scenario."""
    results = {}
    for path in output.glob("server-*/checks.json"):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", path.parent.name)
        results[scenario] = json.loads(path.read_text())
    return results


def problems(checks: list[dict[str, Any]]) -> list[str]:
    """What the non-successful checks of a scenario say."""
    return [
        str(check.get("errorMessage") or (check.get("details") or {}).get("message") or check["name"])
        for check in checks
        if check["status"] != "SUCCESS"
    ]


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return node_tools()


def test_conformance_server_scenarios(tools: NodeTools, gunicorn_server: GunicornServer, tmp_path: Path) -> None:
    token = alice_token(gunicorn_server)
    gunicorn_server.remember(token)
    url = gunicorn_server.internal + "/mcp"
    expected = expected_failures()
    assert not expected.keys() & APPLICABLE

    suite = run_suite(tools, url, token, tmp_path, "--expected-failures", str(EXPECTED_FAILURES))
    report = f"exit {suite.returncode}\n{suite.stdout[-6000:]}\n{suite.stderr[-3000:]}"
    assert suite.returncode == 0, report
    assert "Baseline check passed" in suite.stdout, report

    results = checks_by_scenario(tmp_path)
    assert results.keys() == APPLICABLE | expected.keys(), (
        f"scenarios to classify: {results.keys() ^ (APPLICABLE | expected.keys())}"
    )
    for scenario in sorted(APPLICABLE):
        checks = results[scenario]
        assert checks, f"{scenario} made no checks"
        assert not problems(checks), (scenario, checks)
    for scenario in sorted(expected):
        found = problems(results[scenario])
        assert found, f"{scenario} passed: remove it from {EXPECTED_FAILURES.name}"
        unexplained = [problem for problem in found if not MISSING_FIXTURE.search(problem)]
        assert not unexplained, f"{scenario} failed for more than a missing fixture: {unexplained}"


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
