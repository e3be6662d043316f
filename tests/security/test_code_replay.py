"""Authorization code replay: refused, and the tokens of the first redemption stop working.

RFC 6749 §4.1.2: "If an authorization code is used more than once, the authorization server MUST
deny the request and SHOULD revoke (when possible) all tokens previously issued based on that
authorization code"; RFC 9700 §4.2.4 repeats it. The server cannot tell whether the client or a
thief redeemed first, so every token descended from the code goes: the access token, the refresh
token, and whatever was rotated from them. Alice's other sign-ins are not touched.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as HttpClient
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from tests.conftest import LOOPBACK_REDIRECT, PKCE, Flow
from tests.personas import ALICE
from tests.security.tokenuse import INVALID_GRANT, refresh_works, works_at_mcp

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def flow() -> Flow:
    return Flow(HttpClient())


def redeem(flow: Flow, client: Client) -> tuple[str, PKCE, dict[str, Any]]:
    """Alice authorizes ``client`` and it redeems the code: the code, its PKCE pair, the tokens."""
    query, pkce, _ = flow.authorize_code(client.client_id)
    response = flow.exchange(client.client_id, query["code"], pkce)
    assert response.status_code == 200, response.content
    return query["code"], pkce, response.json()


def assert_invalid_grant(response: Any) -> None:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == INVALID_GRANT


def live_tokens(client: Client) -> tuple[int, int]:
    """How many access tokens exist and refresh tokens are unrevoked for ``client``."""
    access = get_access_token_model().objects.filter(application=client).count()
    refresh = get_refresh_token_model().objects.filter(application=client, revoked__isnull=True).count()
    return access, refresh


def test_a_replayed_code_is_refused_and_the_tokens_of_its_first_redemption_stop_working(
    flow: Flow, claude_code: Client
) -> None:
    code, pkce, tokens = redeem(flow, claude_code)
    assert works_at_mcp(tokens["access_token"])

    assert_invalid_grant(flow.exchange(claude_code.client_id, code, pkce))

    assert live_tokens(claude_code) == (0, 0)
    assert not works_at_mcp(tokens["access_token"])
    assert not refresh_works(claude_code.client_id, tokens["refresh_token"])
    event = AuditEvent.objects.get(event=AuditKind.CODE_REUSE)
    assert event.client == claude_code
    assert event.email == ALICE
    assert event.host == "public"
    assert set(event.detail) == {"token_family"}
    assert code not in str(event.detail)


def test_a_replayed_code_also_ends_the_tokens_refreshed_from_it(flow: Flow, claude_code: Client) -> None:
    code, pkce, first = redeem(flow, claude_code)
    rotated = flow.refresh(claude_code.client_id, first["refresh_token"]).json()
    sibling = flow.refresh(claude_code.client_id, first["refresh_token"]).json()  # inside the grace window
    later = flow.refresh(claude_code.client_id, rotated["refresh_token"]).json()
    assert live_tokens(claude_code) == (2, 2)

    assert_invalid_grant(flow.exchange(claude_code.client_id, code, pkce))

    assert live_tokens(claude_code) == (0, 0)
    for issued in (sibling, later):
        assert not works_at_mcp(issued["access_token"])
        assert not refresh_works(claude_code.client_id, issued["refresh_token"])


def test_a_replay_by_another_client_also_revokes_them(flow: Flow, claude_code: Client) -> None:
    """Whoever presents a redeemed code has a copy of it: the code was used twice all the same."""
    code, pkce, tokens = redeem(flow, claude_code)
    other = Client.objects.create(
        name="Other",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=LOOPBACK_REDIRECT,
        token_endpoint_auth_method="none",
        client_secret="",
    )

    assert_invalid_grant(flow.exchange(other.client_id, code, pkce))

    assert live_tokens(claude_code) == (0, 0)
    assert live_tokens(other) == (0, 0)
    assert not works_at_mcp(tokens["access_token"])


def test_a_replay_leaves_alices_other_sign_ins_working(flow: Flow, claude_code: Client) -> None:
    code, pkce, _replayed = redeem(flow, claude_code)
    _, _, other = redeem(flow, claude_code)

    assert_invalid_grant(flow.exchange(claude_code.client_id, code, pkce))

    assert works_at_mcp(other["access_token"])
    assert refresh_works(claude_code.client_id, other["refresh_token"])


def test_a_made_up_code_revokes_nothing_and_records_no_reuse(flow: Flow, claude_code: Client) -> None:
    _, _, tokens = redeem(flow, claude_code)

    assert_invalid_grant(flow.exchange(claude_code.client_id, "a-code-never-issued", PKCE.make()))

    assert live_tokens(claude_code) == (1, 1)
    assert works_at_mcp(tokens["access_token"])
    assert not AuditEvent.objects.filter(event=AuditKind.CODE_REUSE).exists()


def test_a_refused_attempt_is_not_a_use_of_the_code(flow: Flow, claude_code: Client) -> None:
    """A wrong PKCE verifier (RFC 7636 §4.6) is refused without spending the code or revoking anything."""
    query, pkce, _ = flow.authorize_code(claude_code.client_id)
    assert_invalid_grant(flow.exchange(claude_code.client_id, query["code"], PKCE.make()))

    response = flow.exchange(claude_code.client_id, query["code"], pkce)

    assert response.status_code == 200, response.content
    assert works_at_mcp(response.json()["access_token"])
    assert not AuditEvent.objects.filter(event=AuditKind.CODE_REUSE).exists()
