"""The token endpoint's database budget: SQL statements per code exchange and per refresh (BENCHMARKS.md, OAuth).

Counted inside the test's transaction, where each ``transaction.atomic`` block is a SAVEPOINT and its
RELEASE (two statements each; in production, BEGIN and COMMIT, which Django does not log).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from oauth_ext.models import Client
from oauth_ext.services import LAST_USED_RESOLUTION

pytestmark = pytest.mark.django_db

CODE_EXCHANGE = 15
# 25, and the rotated-out access token's /mcp count deleted with it (mcp_bridge.models.TokenCalls).
REFRESH = 26


def sql_of(captured: Any) -> list[str]:
    return [query["sql"] for query in captured.captured_queries]


def test_a_code_exchange_reads_the_grant_three_times_not_six(
    flow: Any, public_client: Client, django_assert_num_queries: Any
) -> None:
    """Validation, PKCE and the redirect URI share one read (the grant with its person); DOT's RFC 8707 narrowing
    check reads it once more, and redemption once under its row lock. Each of DOT's reads used to be its own."""
    query, pkce, _ = flow.authorize_code(public_client.client_id)

    with django_assert_num_queries(CODE_EXCHANGE) as captured:
        response = flow.exchange(public_client.client_id, query["code"], pkce)

    assert response.status_code == 200
    reads = [s for s in sql_of(captured) if s.startswith("SELECT") and 'FROM "oauth2_provider_grant"' in s]
    assert len(reads) == 3
    assert 'INNER JOIN "oauth_ext_user"' in reads[0]
    assert not [s for s in sql_of(captured) if s.startswith("SELECT") and 'FROM "oauth_ext_user"' in s]


def test_a_refresh_of_a_live_token_skips_the_grace_lookup(
    flow: Any, public_client: Client, django_assert_num_queries: Any
) -> None:
    tokens = flow.get_tokens(public_client.client_id)

    with django_assert_num_queries(REFRESH) as captured:
        response = flow.refresh(public_client.client_id, tokens["refresh_token"])

    assert response.status_code == 200
    # The grace check's own query looks for a rotated-out row ("revoked" IS NOT NULL): not for a live token.
    assert not [s for s in sql_of(captured) if '"revoked" IS NOT NULL' in s]
    assert len([s for s in sql_of(captured) if s.startswith('DELETE FROM "mcp_bridge_tokencalls"')]) == 1


def test_a_clients_last_use_is_written_once_a_minute(flow: Any, public_client: Client) -> None:
    tokens = flow.get_tokens(public_client.client_id)
    public_client.refresh_from_db()
    first = public_client.last_used_at
    assert first is not None

    assert flow.refresh(public_client.client_id, tokens["refresh_token"]).status_code == 200
    public_client.refresh_from_db()
    assert public_client.last_used_at == first

    earlier = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    Client.objects.filter(pk=public_client.pk).update(last_used_at=earlier)
    assert flow.get_tokens(public_client.client_id)
    public_client.refresh_from_db()
    assert public_client.last_used_at is not None and public_client.last_used_at > first
