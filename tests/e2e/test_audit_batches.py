"""gunicorn stopped with SIGTERM: its workers write the tool-call audit rows they still hold before they exit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from django.db import connection

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, User
from tests.personas import ALICE

from .grants import live_token
from .server import database_env, gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CALLS = 40


def test_sigterm_writes_every_tool_call_row_the_workers_held(tmp_path: Path, public_client: Client) -> None:
    alice = User.objects.create(username=ALICE, email=ALICE)
    # A minute between batches, and batches of 500: nothing is written while the server runs.
    overrides = {"MCPGATE_AUDIT_BATCH_SECONDS": "60"}
    with gunicorn(
        db_env=database_env(connection.settings_dict), log_path=tmp_path / "gunicorn.log", overrides=overrides
    ) as server:
        _, raw = live_token(alice, public_client, resource=server.internal + "/mcp")
        server.remember(raw)
        headers = {
            "Authorization": f"Bearer {raw}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": "2025-06-18",
        }
        # A connection each: whichever worker takes it holds its row.
        for n in range(CALLS):
            body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
            response = httpx2.post(f"{server.internal}/mcp", content=json.dumps(body), headers=headers, timeout=10)
            assert response.status_code == 200 and ALICE in response.text
        assert not AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).exists()

    rows = AuditEvent.objects.filter(event=AuditKind.TOOL_CALL)
    assert rows.count() == CALLS
    assert set(rows.values_list("user_id", "client_id", "email")) == {(alice.pk, public_client.pk, ALICE)}
    assert "audit rows lost" not in server.log() and "Traceback" not in server.log()
    assert not server.leaked()
