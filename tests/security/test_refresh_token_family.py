"""Refresh token reuse: the grace window gives one sibling pair per rotated token, never a branch of its own.

A rotated refresh token presented again within MCPGATE_REFRESH_GRACE_SECONDS is honoured once, so
that a client whose two refreshes crossed keeps both answers. Any further use, whether sequential
or concurrent, is reuse (RFC 9700 §4.14.2): a copy of the token is in other hands, and the whole
family (every token descended from the same authorization) is revoked and the reuse audited.

The concurrent cases run on real threads with their own database connections, released together.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.test import Client as HttpClient
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from oauth_ext.validators import MCPGateValidator
from tests.conftest import Flow
from tests.security.tokenuse import INVALID_GRANT, all_at_once, refresh_works, works_at_mcp

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tokens(claude_code: Client) -> dict[str, Any]:
    """Alice's first pair for Claude Code."""
    return Flow(HttpClient()).get_tokens(claude_code.client_id)


def refresh(client: Client, refresh_token: str) -> Any:
    return Flow(HttpClient()).refresh(client.client_id, refresh_token)


def assert_invalid_grant(response: Any) -> None:
    assert response.status_code == 400, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json() == INVALID_GRANT


def live_tokens(client: Client) -> tuple[int, int]:
    """How many access tokens exist and refresh tokens are unrevoked for ``client``."""
    access = get_access_token_model().objects.filter(application=client).count()
    refresh = get_refresh_token_model().objects.filter(application=client, revoked__isnull=True).count()
    return access, refresh


def reuse_events() -> int:
    return AuditEvent.objects.filter(event=AuditKind.REFRESH_REUSE).count()


def assert_all_dead(client: Client, issued: list[dict[str, Any]]) -> None:
    assert live_tokens(client) == (0, 0)
    for pair in issued:
        assert not works_at_mcp(pair["access_token"])
        assert not refresh_works(client.client_id, pair["refresh_token"])


# ---------------------------------------------------------------------------
# One after the other
# ---------------------------------------------------------------------------
def test_a_rotated_token_gets_one_sibling_and_its_next_use_revokes_the_family(
    claude_code: Client, tokens: dict[str, Any]
) -> None:
    rotated = refresh(claude_code, tokens["refresh_token"])
    sibling = refresh(claude_code, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    assert sibling.status_code == 200, sibling.content
    assert reuse_events() == 0

    third = refresh(claude_code, tokens["refresh_token"])

    assert_invalid_grant(third)
    assert reuse_events() == 1
    assert_all_dead(claude_code, [rotated.json(), sibling.json()])


def test_the_sibling_allowance_is_per_rotated_token_not_per_family(claude_code: Client, tokens: dict[str, Any]) -> None:
    """Each rotation may cross with one retry: the family lives on while no token is used a third time."""
    first = refresh(claude_code, tokens["refresh_token"]).json()
    refresh(claude_code, tokens["refresh_token"])  # the first token's sibling
    second = refresh(claude_code, first["refresh_token"]).json()
    again = refresh(claude_code, first["refresh_token"])  # the second rotation's sibling
    assert again.status_code == 200, again.content
    assert works_at_mcp(second["access_token"])
    assert works_at_mcp(again.json()["access_token"])
    assert reuse_events() == 0


# ---------------------------------------------------------------------------
# All at once
# ---------------------------------------------------------------------------
def test_two_concurrent_refreshes_with_one_token_both_get_working_pairs(
    claude_code: Client, tokens: dict[str, Any]
) -> None:
    """The legitimate case the grace window is for: a client's two refreshes crossed (the rotation plus one sibling)."""
    responses = all_at_once(2, lambda _: refresh(claude_code, tokens["refresh_token"]))

    assert [r.status_code for r in responses] == [200, 200], [r.content for r in responses]
    pairs = [r.json() for r in responses]
    assert pairs[0]["refresh_token"] != pairs[1]["refresh_token"]
    assert live_tokens(claude_code) == (2, 2)
    for pair in pairs:
        assert works_at_mcp(pair["access_token"])
        assert refresh_works(claude_code.client_id, pair["refresh_token"])
    assert reuse_events() == 0


@pytest.mark.parametrize("count", [2, 20])
def test_concurrent_uses_of_a_rotated_token_get_one_sibling_and_revoke_the_family(
    claude_code: Client, tokens: dict[str, Any], count: int
) -> None:
    rotated = refresh(claude_code, tokens["refresh_token"]).json()

    responses = all_at_once(count, lambda _: refresh(claude_code, tokens["refresh_token"]))

    granted = [r.json() for r in responses if r.status_code == 200]
    assert len(granted) <= 1, granted
    for response in responses:
        if response.status_code != 200:
            assert_invalid_grant(response)
    assert reuse_events() >= 1
    assert_all_dead(claude_code, [rotated, *granted])


def test_twenty_concurrent_refreshes_with_one_token_mint_two_pairs_at_most_and_revoke_the_family(
    claude_code: Client, tokens: dict[str, Any]
) -> None:
    """The rotation and its one sibling may be issued; the eighteen others are reuse.

    "May": a pair revoked by a request of the race before its own response is written is
    answered with ``invalid_grant`` as well.
    """
    responses = all_at_once(20, lambda _: refresh(claude_code, tokens["refresh_token"]))

    granted = [r.json() for r in responses if r.status_code == 200]
    assert len(granted) <= 2, granted
    for response in responses:
        if response.status_code != 200:
            assert_invalid_grant(response)
    assert reuse_events() >= 1
    assert_all_dead(claude_code, granted)


def test_a_pair_revoked_before_its_response_is_written_is_answered_with_invalid_grant(
    claude_code: Client, tokens: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation is saved; two more uses of the old token (a sibling, then reuse) revoke it before it answers.

    DOT's token view looks the issued access token up again (for its ``app_authorized`` signal)
    and finds it deleted: that request must answer ``invalid_grant``, not a 500.
    """
    saved = threading.Event()
    reused = threading.Event()
    original = MCPGateValidator.save_bearer_token

    def pausing(self: MCPGateValidator, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if threading.current_thread().name == "racer-0":
            saved.set()
            reused.wait(timeout=10)
        return result

    monkeypatch.setattr(MCPGateValidator, "save_bearer_token", pausing)

    def request(index: int) -> Any:
        if index == 0:
            return refresh(claude_code, tokens["refresh_token"])
        assert saved.wait(timeout=10)
        try:
            return [refresh(claude_code, tokens["refresh_token"]) for _ in range(2)]
        finally:
            reused.set()

    first, (sibling, third) = all_at_once(2, request)

    assert sibling.status_code == 200, sibling.content
    assert_invalid_grant(third)
    assert_invalid_grant(first)
    assert_all_dead(claude_code, [sibling.json()])
