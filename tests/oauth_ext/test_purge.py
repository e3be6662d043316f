"""services.clients_purge_unused: self-registered clients that never got anywhere are deleted (AS9)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import get_grant_model

from audit.models import AuditEvent, AuditKind
from oauth_ext import services
from oauth_ext.models import Client, Consent, User
from oauth_ext.services import client_create, clients_purge_unused, registration_token_issue
from tests.conftest import CLAUDE_CALLBACK, CLIENT_ADDR, GEMINI_CALLBACK, Flow, register
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

DAY = timedelta(hours=24)


def age(client: Client, by: timedelta) -> None:
    Client.objects.filter(pk=client.pk).update(created=timezone.now() - by)


def purge() -> int:
    return clients_purge_unused(older_than=DAY)


@pytest.fixture
def stale(make_client: Callable[..., Client]) -> Client:
    """A dynamically registered client, two days old, never used."""
    client = make_client(CLAUDE_CALLBACK, name="Claude")
    age(client, 2 * DAY)
    return client


def test_old_unused_dynamic_client_purged_and_audited(stale: Client) -> None:
    assert purge() == 1
    assert not Client.objects.exists()
    event = AuditEvent.objects.get(event=AuditKind.CLIENT_PURGED)
    assert event.client is None
    assert event.detail == {"client_id": stale.client_id, "name": "Claude"}


def test_client_with_only_a_registration_token_still_counts_as_unused(stale: Client) -> None:
    registration_token_issue(client=stale)
    assert purge() == 1


def test_recent_unused_client_kept(make_client: Callable[..., Client]) -> None:
    client = make_client(CLAUDE_CALLBACK)
    age(client, DAY - timedelta(minutes=1))
    assert purge() == 0


def test_operator_made_client_never_purged() -> None:
    client, _secret = client_create(name="Gemini", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    age(client, 400 * DAY)
    assert purge() == 0


def test_metadata_document_client_purged_like_a_dynamic_one(make_client: Callable[..., Client]) -> None:
    client = make_client(CLAUDE_CALLBACK, registration_source=Client.RegistrationSource.CIMD)
    age(client, 2 * DAY)
    assert purge() == 1


def test_client_that_was_used_kept(stale: Client) -> None:
    Client.objects.filter(pk=stale.pk).update(last_used_at=timezone.now() - 30 * DAY)
    assert purge() == 0


def test_client_with_tokens_kept(flow: Flow, make_client: Callable[..., Client]) -> None:
    client = make_client()
    flow.get_tokens(client.client_id)
    Client.objects.filter(pk=client.pk).update(last_used_at=None, created=timezone.now() - 2 * DAY)
    assert purge() == 0


def test_client_with_a_sign_in_under_way_kept(flow: Flow, make_client: Callable[..., Client]) -> None:
    """An authorization code exists: someone is between consent and the token request."""
    client = make_client()
    flow.authorize_code(client.client_id)
    age(client, 2 * DAY)
    assert get_grant_model().objects.exists()
    assert purge() == 0


def test_purge_takes_the_clients_consents_with_it(stale: Client) -> None:
    alice = User.objects.create(username=ALICE, email=ALICE)
    Consent.objects.create(user=alice, client=stale, scopes=["mcp"])
    purge()
    assert not Consent.objects.exists()


def test_purge_keeps_the_audit_trail_of_the_client(stale: Client, http: Any) -> None:
    from audit.services import audit_record

    audit_record(event=AuditKind.REGISTER, client=stale, detail={})
    purge()
    event = AuditEvent.objects.get(event=AuditKind.REGISTER)
    assert event.client is None
    assert event.client_label == "Claude"


def test_purged_client_gets_invalid_client_and_can_register_again(flow: Flow, stale: Client) -> None:
    """AS9: Claude re-registers when /oauth/token says invalid_client."""
    purge()
    response = flow.refresh(stale.client_id, "anything")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    again = register(
        flow.http,
        {"client_name": "Claude", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"},
        ip=CLIENT_ADDR,
    )
    assert again.status_code == 201


def stale_clients(make_client: Callable[..., Client], count: int) -> list[str]:
    """``count`` dynamically registered clients, two days old and older, oldest first: their client_ids."""
    clients = [make_client(CLAUDE_CALLBACK, name=f"Claude {n}") for n in range(count)]
    for n, client in enumerate(clients):
        age(client, 2 * DAY + timedelta(minutes=count - n))
    return [client.client_id for client in clients]


def test_a_limit_purges_the_oldest_and_leaves_the_rest_for_the_next_sweep(
    make_client: Callable[..., Client],
) -> None:
    ids = stale_clients(make_client, 3)
    assert clients_purge_unused(older_than=DAY, limit=2) == 2
    assert list(Client.objects.values_list("client_id", flat=True)) == ids[2:]
    assert clients_purge_unused(older_than=DAY, limit=2) == 1
    assert not Client.objects.exists()
    assert AuditEvent.objects.filter(event=AuditKind.CLIENT_PURGED).count() == 3


def test_without_a_limit_every_batch_is_purged(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "PURGE_BATCH", 2)
    stale_clients(make_client, 5)
    assert purge() == 5
    assert not Client.objects.exists()


def test_purging_reads_batches_with_plain_queries_not_a_server_side_cursor(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """QuerySet.iterator() is a server-side cursor on PostgreSQL whose close Django leaves unwrapped."""
    monkeypatch.setattr(services, "PURGE_BATCH", 2)
    stale_clients(make_client, 3)
    with CaptureQueriesContext(connection) as queries:
        assert purge() == 3
    statements = [q["sql"].split(None, 1)[0].upper() for q in queries.captured_queries]
    assert "DECLARE" not in statements
    # Two batches (2 clients, then 1, which is fewer than a batch: the last).
    batches = [q for q in queries.captured_queries if 'FROM "oauth_ext_client"' in q["sql"] and "EXISTS" in q["sql"]]
    assert len(batches) == 2
