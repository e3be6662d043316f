"""PostgreSQL stopped in the middle of load: 503 with Retry-After in each route's shape, then recovery by itself.

The load is the soak's (bench/soak.py), short and small: /mcp tools/call, refresh, registration,
and Alice authorizing a client whose code is then redeemed, from concurrent clients. PostgreSQL is
stopped with ``pg_ctl stop -m fast`` (every session cut off, open transactions rolled back) and
started again on the same port and data directory eight seconds later: long enough that every kind of
client is still asking while it is away, though with the connection pool a request waits up to 2 s before
its 503 (a 3 s outage once passed without a single authorization being refused).
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench import soak

from .deployment import Deployment

pytestmark = pytest.mark.e2e

SECONDS = 20.0
CLIENTS = 8
OUTAGE_AT = 4.0
OUTAGE_SECONDS = 8.0


@pytest.fixture(scope="module")
def outage_run(faults_deployment: Deployment) -> soak.Result:
    return soak.run(
        faults_deployment, seconds=SECONDS, clients=CLIENTS, outage_at=OUTAGE_AT, outage_seconds=OUTAGE_SECONDS
    )


def describe(outcomes: list[soak.Outcome]) -> str:
    return ", ".join(
        f"{count} x {kind}: {detail}"
        for (kind, detail), count in Counter((o.kind, o.detail) for o in outcomes).most_common(12)
    )


def test_every_answer_during_an_outage_is_a_spec_shaped_503_with_retry_after(outage_run: soak.Result) -> None:
    """No 500, no dropped connection, no refused token: only "try again later" in the route's own shape.

    Judged per request by ``soak.unavailable_problem``: JSON-RPC on /mcp, RFC 6749
    ``temporarily_unavailable`` with ``no-store`` on /oauth/token and /oauth/register, an HTML page
    at /oauth/authorize; each with ``Retry-After``.
    """
    unexpected = outage_run.unexpected()
    assert not unexpected, describe(unexpected)
    refused = Counter(o.kind for o in outage_run.outcomes if o.verdict == soak.Verdict.UNAVAILABLE)
    # Every route was asked while the database was away, and answered 503.
    for kind in (soak.Kind.MCP, soak.Kind.REFRESH, soak.Kind.REGISTER, soak.Kind.AUTHORIZE):
        assert refused[kind] > 0, (kind, refused)


def test_service_recovers_within_five_seconds_of_the_database_returning(outage_run: soak.Result) -> None:
    back = outage_run.outage.back
    assert back is not None
    recovery = outage_run.recovery_seconds()
    assert recovery is not None
    assert recovery < soak.RECOVERY_LIMIT, f"last 503 answered {recovery:.2f} s after the database returned"
    after = Counter(o.kind for o in outage_run.outcomes if o.verdict == soak.Verdict.OK and o.started > back + recovery)
    for kind in soak.Kind:
        assert after[kind] > 0, (kind, after)


def test_no_grant_or_token_is_lost_or_duplicated_by_the_outage(
    outage_run: soak.Result, faults_deployment: Deployment
) -> None:
    """Checked in the database: every refresh token received is stored once, no rotated-out one is
    live, live tokens nobody received are at most the refreshes answered 503, every access token
    issued for a code is stored once, and each client's last pair still works."""
    assert outage_run.problems == []
    assert any(len(ledger.refresh_tokens) > 2 for ledger in outage_run.ledgers if ledger.kind == soak.Kind.REFRESH)


def test_an_outage_leaves_no_secret_and_no_traceback_in_the_log(
    outage_run: soak.Result, faults_deployment: Deployment
) -> None:
    """One warning line per refused request (mcpgate.errors.server_error), nothing a client sent."""
    assert faults_deployment.server.leaked() == []
    log = faults_deployment.server.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 3000]
    assert "database unavailable (OperationalError" in log
