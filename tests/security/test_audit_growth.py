"""Anonymous callers cannot grow the audit trail without bound (and it does not keep rows forever).

Every failed /oauth/token request used to write an audit row: 300 requests, 300 rows, from anyone.
Now what a caller nobody signed in causes is written at most MCPGATE_AUDIT_ANONYMOUS_RATE times
per event kind and address per window; the rest are counted and the count is written on the next
row of that kind from that address (``detail["suppressed"]``), so the trail still tells how many
there were. What people and operators do, and what the system does, is always written.
(Retention: tests/oauth_ext/test_purge_audit.py.)
"""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.test import override_settings

from audit.models import AuditEvent, AuditKind
from audit.services import audit_record
from tests.conftest import CLIENT_ADDR, PUBLIC, Flow, RateLimitClock, authorize_params
from tests.e2e.oauthclient import PKCE

pytestmark = [
    pytest.mark.django_db,
    # The token endpoint's own limits are not what is tested here: out of the way.
    pytest.mark.usefixtures("generous_request_limits"),
]

ANONYMOUS_RATE = 10


@pytest.fixture
def generous_request_limits():
    with override_settings(
        MCPGATE_RATE_LIMIT_TOKEN="100000/m",
        MCPGATE_RATE_LIMIT_TOKEN_CLIENT="100000/m",
        MCPGATE_RATE_LIMIT_AUTHORIZE="100000/m",
        MCPGATE_AUDIT_ANONYMOUS_RATE=f"{ANONYMOUS_RATE}/m",
    ):
        yield


def failed_token_request(http: HttpClient, ip: str = CLIENT_ADDR) -> None:
    data = {"grant_type": "authorization_code", "code": "guess", "client_id": "no-such-client"}
    response = http.post("/oauth/token", data, HTTP_HOST=PUBLIC, REMOTE_ADDR=ip)
    assert response.status_code == 401, response.content


def token_errors() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=AuditKind.TOKEN_ERROR).order_by("pk"))


def test_300_failed_token_requests_write_10_rows_and_the_next_row_counts_the_rest(
    http: HttpClient, ratelimit_clock: RateLimitClock, caplog
) -> None:
    for _ in range(300):
        failed_token_request(http)

    rows = token_errors()
    assert len(rows) == ANONYMOUS_RATE
    assert all("suppressed" not in row.detail for row in rows)
    suppression = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit: ")]
    assert suppression == ["audit: further token_error events from one address are counted, not written, this window"]

    ratelimit_clock.advance(61)
    failed_token_request(http)

    latest = token_errors()[-1]
    assert len(token_errors()) == ANONYMOUS_RATE + 1
    assert latest.detail == {"error": "invalid_client", "grant_type": "authorization_code", "suppressed": 290}
    assert latest.ip == CLIENT_ADDR

    failed_token_request(http)
    assert "suppressed" not in token_errors()[-1].detail  # counted once, not again


def test_each_address_has_its_own_allowance(http: HttpClient) -> None:
    for _ in range(ANONYMOUS_RATE + 5):
        failed_token_request(http, ip="192.0.2.1")
    failed_token_request(http, ip="192.0.2.2")

    assert AuditEvent.objects.filter(event=AuditKind.TOKEN_ERROR, ip="192.0.2.1").count() == ANONYMOUS_RATE
    assert AuditEvent.objects.filter(event=AuditKind.TOKEN_ERROR, ip="192.0.2.2").count() == 1


def test_each_event_kind_has_its_own_allowance(http: HttpClient) -> None:
    for _ in range(ANONYMOUS_RATE + 5):
        failed_token_request(http)

    row = audit_record(event=AuditKind.REGISTER_REFUSED, ip=CLIENT_ADDR, detail={"error": "x"})

    assert row is not None and row.pk is not None


def test_what_a_signed_in_person_does_is_always_written(http: HttpClient, public_client) -> None:
    flow = Flow(http)
    for _ in range(ANONYMOUS_RATE + 5):
        assert flow.authorize(authorize_params(public_client.client_id, PKCE.make())).status_code == 200

    assert AuditEvent.objects.filter(event=AuditKind.CONSENT_SHOWN).count() == ANONYMOUS_RATE + 5


def test_what_operators_and_the_system_do_is_always_written() -> None:
    """No person and no address (management commands, the clean-up): never throttled."""
    for n in range(ANONYMOUS_RATE + 5):
        audit_record(event=AuditKind.CLIENT_PURGED, detail={"client_id": str(n)})

    assert AuditEvent.objects.filter(event=AuditKind.CLIENT_PURGED).count() == ANONYMOUS_RATE + 5


def test_a_broken_cache_writes_every_row(http: HttpClient, monkeypatch, caplog) -> None:
    def unreachable(*args, **kwargs):
        raise ConnectionError("Connection refused.")

    monkeypatch.setattr("mcpgate.ratelimit.caches", {"default": None})
    monkeypatch.setattr("mcpgate.ratelimit.get_usage", unreachable)
    for _ in range(ANONYMOUS_RATE + 2):
        failed_token_request(http)

    assert len(token_errors()) == ANONYMOUS_RATE + 2
