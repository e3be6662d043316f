"""The console's CSV export of the audit trail when PostgreSQL stops part way: a failed download, one line in the log.

The export streams a page of events at a time (console.admin.audit). Its status and first rows are on
the wire before PostgreSQL goes, so the only honest end is an incomplete response: the server closes the
connection without the chunked body's last chunk, and the browser reports the download failed instead
of saving a file that looks whole (mcpgate.errors.break_off). The trail is made large enough (tens of
megabytes) that the connection's buffers cannot hold the whole export when the client pauses.
"""

from __future__ import annotations

import time

import httpx2
import psycopg
import pytest

from audit.models import AuditEvent
from tests.personas import OLIVIA

from .deployment import Deployment

pytestmark = pytest.mark.e2e

EVENTS = 300_000
EXPORT = "/admin/audit/auditevent/export.csv?event=tool_call"
OPERATOR = {"X-Forwarded-Email": OLIVIA}
TABLE = AuditEvent._meta.db_table


def seed(deployment: Deployment) -> None:
    with psycopg.connect(deployment.cluster.url, autocommit=True) as connection:
        connection.execute(
            f"INSERT INTO {TABLE} (created, event, email, client_label, host, detail) "  # noqa: S608
            "SELECT now() - make_interval(secs => g), 'tool_call', 'person' || g || '@example.com', "
            "'Claude Code', 'internal', jsonb_build_object('tool', 'whoami', 'outcome', 'ok') "
            "FROM generate_series(1, %s) AS g",
            [EVENTS],
        )


def unseed(deployment: Deployment) -> None:
    with psycopg.connect(deployment.cluster.url, autocommit=True) as connection:
        connection.execute(f"DELETE FROM {TABLE} WHERE event = 'tool_call'")  # noqa: S608


def wait_until_served(http: httpx2.Client, deadline: float) -> None:
    """Until the export answers whole again, on fresh connections (each may reach another worker)."""
    while True:
        try:
            response = http.get(EXPORT.replace("tool_call", "sign_in"), headers={**OPERATOR, "Connection": "close"})
            if response.status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the export did not answer 200 within 15 s of PostgreSQL's return")
        time.sleep(0.2)


def test_an_export_the_database_leaves_part_way_ends_as_a_failed_download(faults_deployment: Deployment) -> None:
    server, cluster = faults_deployment.server, faults_deployment.cluster
    seed(faults_deployment)
    logged_before = len(server.log())
    received = 0
    try:
        with httpx2.Client(base_url=server.internal, trust_env=False, timeout=30.0) as http:
            with http.stream("GET", EXPORT, headers=OPERATOR) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/csv; charset=utf-8"
                assert response.headers["transfer-encoding"] == "chunked"
                chunks = response.iter_bytes()
                received += len(next(chunks))
                cluster.stop()
                try:
                    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
                        for chunk in chunks:
                            received += len(chunk)
                finally:
                    cluster.start()
            wait_until_served(http, time.monotonic() + 15.0)
    finally:
        unseed(faults_deployment)
    # Part of the trail arrived, not all of it (each row is over 100 bytes).
    assert 0 < received < EVENTS * 100
    log = server.log()[logged_before:]
    assert "during an audit export: broken off after" in log, log[-3000:]
    # uvicorn, closing the connection on the unfinished response: one line, no traceback.
    assert "ASGI callable returned without completing response." in log, log[-3000:]
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 3000]
