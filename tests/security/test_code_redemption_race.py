"""Concurrent redemptions of one authorization code: tokens once, invalid_grant for the rest, never a 500.

Two requests with the same code at the same moment are the code used twice (RFC 6749 §4.1.2):
tokens are issued once, every other response is RFC 6749 §5.2 ``invalid_grant``, and since the
server cannot tell which request was the client and which a thief, the tokens issued are then
revoked as for any replay (RFC 9700 §4.2.4). The code was spent either way; the person signs in
again.

The requests run on real threads with their own database connections: released together, and at
the worst moments, made deterministic by pausing one request there.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.test import Client as HttpClient
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from oauth_ext.validators import MCPGateValidator
from tests.conftest import PKCE, Flow
from tests.security.tokenuse import INVALID_GRANT, all_at_once, refresh_works, works_at_mcp

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def code(claude_code: Client) -> tuple[str, PKCE]:
    """A code Alice's consent just sent to Claude Code, and its PKCE pair."""
    query, pkce, _ = Flow(HttpClient()).authorize_code(claude_code.client_id)
    return query["code"], pkce


def redeem(client: Client, code: tuple[str, PKCE]) -> Any:
    return Flow(HttpClient()).exchange(client.client_id, code[0], code[1])


def assert_redeemed_at_most_once_then_revoked(client: Client, responses: list[Any]) -> list[dict[str, Any]]:
    """At most one response with tokens, the others invalid_grant; afterwards nothing issued from the code works.

    At most: the tokens may be revoked by another request of the race before their own response
    is written, which then says ``invalid_grant`` too. Returns the tokens that were handed out.
    """
    assert all(r.status_code in (200, 400) for r in responses), [(r.status_code, r.content) for r in responses]
    granted = [r.json() for r in responses if r.status_code == 200]
    assert len(granted) <= 1, granted
    for response in responses:
        if response.status_code == 400:
            assert response["Content-Type"] == "application/json"
            assert response["Cache-Control"] == "no-store"
            assert response.json() == INVALID_GRANT
    assert not get_grant_model().objects.filter(application=client).exists()
    assert not get_access_token_model().objects.filter(application=client).exists()
    assert not get_refresh_token_model().objects.filter(application=client, revoked__isnull=True).exists()
    for tokens in granted:
        assert not works_at_mcp(tokens["access_token"])
        assert not refresh_works(client.client_id, tokens["refresh_token"])
    assert AuditEvent.objects.filter(event=AuditKind.CODE_REUSE, client=client).exists()
    return granted


@pytest.mark.parametrize("count", [2, 20])
def test_concurrent_redemptions_of_one_code_issue_tokens_once_and_then_revoke_them(
    claude_code: Client, code: tuple[str, PKCE], count: int
) -> None:
    responses = all_at_once(count, lambda _: redeem(claude_code, code))

    assert_redeemed_at_most_once_then_revoked(claude_code, responses)


@pytest.mark.parametrize("pause_in", ["validate_code", "save_bearer_token"])
def test_a_code_redeemed_while_another_request_for_it_is_under_way(
    claude_code: Client, code: tuple[str, PKCE], monkeypatch: pytest.MonkeyPatch, pause_in: str
) -> None:
    """The second request has passed validation (or is about to save tokens) when the first redeems the code.

    ``validate_code``: DOT then read the grant again for PKCE and found it gone (Grant.DoesNotExist,
    a 500). ``save_bearer_token``: both saved tokens, and the second learnt of the first only when
    deleting the grant, leaving its own tokens and the first's valid.
    """
    paused = threading.Event()
    first_done = threading.Event()
    original = getattr(MCPGateValidator, pause_in)

    def pausing(self: MCPGateValidator, *args: Any, **kwargs: Any) -> Any:
        if pause_in == "validate_code":
            result = original(self, *args, **kwargs)
        if threading.current_thread().name == "racer-1" and not paused.is_set():
            paused.set()
            first_done.wait(timeout=10)
        if pause_in == "validate_code":
            return result
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MCPGateValidator, pause_in, pausing)

    def request(index: int) -> Any:
        if index == 0:  # the first to redeem, while racer-1 is paused
            assert paused.wait(timeout=10)
            try:
                return redeem(claude_code, code)
            finally:
                first_done.set()
        return redeem(claude_code, code)

    responses = all_at_once(2, request)

    assert responses[0].status_code == 200, responses[0].content
    assert_redeemed_at_most_once_then_revoked(claude_code, responses)


def test_a_winner_whose_tokens_were_revoked_before_its_response_gets_invalid_grant(
    claude_code: Client, code: tuple[str, PKCE], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request has saved its tokens; the second, a replay, revokes them before the first answers.

    DOT's token view then looks the issued access token up again (for its ``app_authorized``
    signal) and finds it deleted: the first request must answer ``invalid_grant``, not a 500.
    """
    saved = threading.Event()
    replayed = threading.Event()
    original = MCPGateValidator.invalidate_authorization_code  # oauthlib's last step, after saving

    def pausing(self: MCPGateValidator, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if threading.current_thread().name == "racer-0":
            saved.set()
            replayed.wait(timeout=10)
        return result

    monkeypatch.setattr(MCPGateValidator, "invalidate_authorization_code", pausing)

    def request(index: int) -> Any:
        if index == 0:
            return redeem(claude_code, code)
        assert saved.wait(timeout=10)
        try:
            return redeem(claude_code, code)
        finally:
            replayed.set()

    responses = all_at_once(2, request)

    assert assert_redeemed_at_most_once_then_revoked(claude_code, responses) == []
