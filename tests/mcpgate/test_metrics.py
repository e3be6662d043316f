"""/metrics: one family per thing operators watch, counted from the real routes, shown only to the metrics networks.

Every value is read back through the real ``/metrics`` endpoint after driving the real routes
(the Django test client for the OAuth endpoints, the ASGI site for /mcp). Counters live for the
whole test process, so each test compares a scrape after with a scrape before.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import Client as HttpClient
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from mcpgate.asyncdb import AsyncDatabase
from mcpgate.observability import metrics
from tests.conftest import CLIENT_ADDR, INTERNAL, INTERNAL_BASE, LOOPBACK_REDIRECT, PROXY_ADDR, Flow, register
from tests.mcp_bridge.conftest import bearer, call, http_client

SCRAPER = ("127.0.0.1", 45000)  # Prometheus on the same machine: loopback, the default metrics network
ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape() -> Samples:
    """GET /metrics from loopback on the internal host, as Prometheus beside the service does."""
    response = HttpClient().get("/metrics", HTTP_HOST=INTERNAL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert response["Cache-Control"] == "no-store"
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# ---------------------------------------------------------------------------
# Who may scrape
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_from_an_address_outside_the_metrics_networks_is_the_sites_404(http: HttpClient) -> None:
    elsewhere = http.get("/no-such-page", HTTP_HOST=INTERNAL, REMOTE_ADDR=CLIENT_ADDR)
    response = http.get("/metrics", HTTP_HOST=INTERNAL, REMOTE_ADDR=CLIENT_ADDR)

    assert response.status_code == 404
    assert response.content == elsewhere.content
    assert b"mcpgate_" not in response.content


@pytest.mark.django_db
def test_metrics_posted_from_outside_is_404_not_405(http: HttpClient) -> None:
    response = http.post("/metrics", HTTP_HOST=INTERNAL, REMOTE_ADDR=CLIENT_ADDR)

    assert response.status_code == 404


@pytest.mark.django_db
def test_a_forwarded_loopback_address_from_an_untrusted_peer_does_not_open_metrics(http: HttpClient) -> None:
    response = http.get("/metrics", HTTP_HOST=INTERNAL, REMOTE_ADDR=CLIENT_ADDR, HTTP_X_FORWARDED_FOR="127.0.0.1")

    assert response.status_code == 404


@pytest.mark.django_db
def test_metrics_through_the_trusted_proxy_are_judged_by_the_client_behind_it(http: HttpClient) -> None:
    """The proxy's own address is not the scraper: the client it forwards for is."""
    response = http.get("/metrics", HTTP_HOST=INTERNAL, REMOTE_ADDR=PROXY_ADDR, HTTP_X_FORWARDED_FOR=CLIENT_ADDR)

    assert response.status_code == 404


@pytest.mark.django_db
def test_metrics_answer_an_address_in_the_configured_networks(http: HttpClient) -> None:
    with override_settings(MCPGATE_METRICS_NETWORKS=[ipaddress.ip_network("203.0.113.0/24")]):
        allowed = http.get("/metrics", HTTP_HOST=INTERNAL, REMOTE_ADDR=CLIENT_ADDR)
        loopback = http.get("/metrics", HTTP_HOST=INTERNAL)

    assert allowed.status_code == 200
    assert b"# TYPE mcpgate_token_requests_total counter" in allowed.content
    assert loopback.status_code == 404


@pytest.mark.django_db
def test_metrics_other_than_get_from_a_scraper_is_405(http: HttpClient) -> None:
    response = http.post("/metrics", HTTP_HOST=INTERNAL)

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


# ---------------------------------------------------------------------------
# Token endpoint, registrations, rate limits, database errors on the Django routes
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_token_requests_are_counted_by_path_grant_type_and_outcome(http: HttpClient, public_client: Any) -> None:
    flow = Flow(http)
    before = scrape()

    tokens = flow.get_tokens(public_client.client_id)
    refused = http.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token", "client_id": public_client.client_id},
        HTTP_HOST=flow.host,
    )
    unsupported = flow.token({"grant_type": "password", "username": "alice", "password": "x"})
    after = scrape()

    assert "access_token" in tokens
    assert (refused.status_code, unsupported.status_code) == (400, 400)
    name = "mcpgate_token_requests_total"
    assert grew(before, after, name, path="/oauth/token", grant_type="authorization_code", outcome="issued") == 1
    assert grew(before, after, name, path="/token", grant_type="refresh_token", outcome="invalid_grant") == 1
    assert grew(before, after, name, path="/oauth/token", grant_type="other", outcome="unsupported_grant_type") == 1


@pytest.mark.django_db
def test_registrations_are_counted_by_outcome(http: HttpClient) -> None:
    before = scrape()

    ok = register(http, {"client_name": "Claude Code", "redirect_uris": [LOOPBACK_REDIRECT]})
    refused = register(http, {"client_name": "Evil", "redirect_uris": ["http://evil.test/callback"]})
    after = scrape()

    assert (ok.status_code, refused.status_code) == (201, 400)
    assert grew(before, after, "mcpgate_registrations_total", outcome="registered") == 1
    assert grew(before, after, "mcpgate_registrations_total", outcome="invalid_redirect_uri") == 1


@pytest.mark.django_db
def test_rate_limit_refusals_are_counted_by_route_every_time(http: HttpClient) -> None:
    """Each refusal counts, not only the first of a window (which is all the audit trail records)."""
    before = scrape()

    with override_settings(MCPGATE_RATE_LIMIT_TOKEN="1/h"):
        answers = [
            Flow(http).token({"grant_type": "refresh_token", "refresh_token": "x"}, REMOTE_ADDR=CLIENT_ADDR).status_code
            for _ in range(3)
        ]
    after = scrape()

    assert answers == [401, 429, 429]  # no client named: invalid_client, then refused before the view
    assert grew(before, after, "mcpgate_rate_limited_total", route="token") == 2
    assert (
        grew(
            before,
            after,
            "mcpgate_token_requests_total",
            path="/oauth/token",
            grant_type="refresh_token",
            outcome="rate_limited",
        )
        == 2
    )


@pytest.mark.django_db
def test_database_errors_on_django_routes_are_counted(public_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = scrape()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", refuse)
    response = Flow(HttpClient(raise_request_exception=False)).token(
        {"grant_type": "refresh_token", "refresh_token": "x", "client_id": public_client.client_id}
    )
    monkeypatch.undo()
    after = scrape()

    assert response.status_code == 503
    assert grew(before, after, "mcpgate_database_errors_total", surface="django") == 1
    token = "mcpgate_token_requests_total"
    assert grew(before, after, token, path="/oauth/token", grant_type="refresh_token", outcome="unavailable") == 1


# ---------------------------------------------------------------------------
# /mcp: tool calls, its rate limit, its database errors
# ---------------------------------------------------------------------------
async def scrape_site(site: Any) -> Samples:
    async with http_client(site, SCRAPER) as client:
        response = await client.get(INTERNAL_BASE + "/metrics")
    assert response.status_code == 200
    return parse(response.text)


@pytest.mark.anyio
async def test_tool_calls_are_counted_by_tool_and_outcome_with_their_latency(site, mcp, alice_token) -> None:
    before = await scrape_site(site)

    ok = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))
    unknown = await mcp.post("/mcp", json=call("made-up-tool-name"), headers=bearer(alice_token))
    after = await scrape_site(site)

    assert (ok.status_code, unknown.status_code) == (200, 200)
    assert grew(before, after, "mcpgate_tool_calls_total", tool="whoami", outcome="ok") == 1
    # A name a client made up is not a label value of its own (it would be one series per guess).
    assert grew(before, after, "mcpgate_tool_calls_total", tool="_unknown", outcome="unknown_tool") == 1
    assert grew(before, after, "mcpgate_tool_call_duration_seconds_count", tool="whoami") == 1
    assert grew(before, after, "mcpgate_tool_call_duration_seconds_bucket", tool="whoami", le="+Inf") == 1
    assert value(after, "mcpgate_tool_call_duration_seconds_count", tool="_unknown") == 0
    assert not any(
        name.startswith("mcpgate_") and dict(labels).get("tool") == "made-up-tool-name" for name, labels in after
    )


@pytest.mark.anyio
async def test_mcp_rate_limit_refusals_are_counted(site, mcp, alice_token) -> None:
    before = await scrape_site(site)

    with override_settings(MCPGATE_RATE_LIMIT_MCP="1/h"):
        statuses = [
            (await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))).status_code for _ in range(3)
        ]
    after = await scrape_site(site)

    assert statuses == [200, 429, 429]
    assert grew(before, after, "mcpgate_rate_limited_total", route="mcp") == 2


@pytest.mark.anyio
async def test_database_errors_on_mcp_are_counted(site, mcp, alice_token, monkeypatch) -> None:
    before = await scrape_site(site)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    async def refuse_on_loop(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", refuse)
    monkeypatch.setattr(AsyncDatabase, "fetchone", refuse_on_loop)  # PostgreSQL: the lookup on the loop
    response = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))
    monkeypatch.undo()
    after = await scrape_site(site)

    assert response.status_code == 503
    assert grew(before, after, "mcpgate_database_errors_total", surface="mcp") == 1


# ---------------------------------------------------------------------------
# The upstream family (the gateway's), and several workers
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_upstream_family_is_described_before_any_upstream_exists() -> None:
    response = HttpClient().get("/metrics", HTTP_HOST=INTERNAL)
    text = response.content.decode()

    assert "# TYPE mcpgate_upstream_up gauge" in text
    assert "# TYPE mcpgate_upstream_call_duration_seconds histogram" in text


@pytest.mark.django_db
def test_upstream_health_and_latency_appear_once_recorded() -> None:
    metrics.record_upstream_health("crm", up=False)
    metrics.record_upstream_call("crm", outcome="ok", seconds=0.2)
    after = scrape()

    assert value(after, "mcpgate_upstream_up", upstream="crm") == 0
    assert value(after, "mcpgate_upstream_call_duration_seconds_bucket", upstream="crm", outcome="ok", le="0.25") >= 1


WORKER = textwrap.dedent(
    """
    import sys
    import django
    django.setup()
    from mcpgate.observability import metrics
    if sys.argv[1] == "count":
        metrics.observe_mcp_status(429)
    else:
        sys.stdout.write(metrics.exposition().decode())
    """
)


def test_with_a_multiprocess_directory_every_workers_counts_are_merged(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR: what two worker processes counted is scraped as one sum from a third."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "mcpgate.settings"}

    def run(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, mode],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("count")
    run("count")
    samples = parse(run("scrape"))

    assert value(samples, "mcpgate_rate_limited_total", route="mcp") == 2
    assert list(tmp_path.glob("counter_*.db"))


@pytest.mark.django_db
def test_a_token_request_too_large_to_read_is_counted_with_its_refusal(http: HttpClient) -> None:
    before = scrape()

    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        response = Flow(http).token({"grant_type": "authorization_code", "code": "x" * 200})
    after = scrape()

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    name = "mcpgate_token_requests_total"
    assert grew(before, after, name, path="/oauth/token", grant_type="other", outcome="invalid_request") == 1
