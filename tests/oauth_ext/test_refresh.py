"""Refresh tokens (checklist AS5): rotation, reuse protection over the whole family, and the grace window.

The grace window exists because two concurrent refreshes from one client (two tabs, a retry
after a timeout) are normal: both must succeed, while a replay after the window is treated as
theft and revokes every token descended from the same authorization (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, User
from oauth_ext.services import client_create
from tests.conftest import (
    GEMINI_CALLBACK,
    INTERNAL_RESOURCE,
    LOOPBACK_REDIRECT,
    PUBLIC_RESOURCE,
    Flow,
    basic_auth,
    oauth_error,
)
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

INVALID_GRANT = oauth_error(
    "invalid_grant", "The code or refresh token is invalid, expired, revoked, or was issued to another client."
)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def refresh_row(value: str) -> Any:
    return RefreshToken.objects.get(token_checksum=sha256(value))


def access_exists(value: str) -> bool:
    return AccessToken.objects.filter(token_checksum=sha256(value)).exists()


def age_rotation(value: str, seconds: int) -> None:
    """Pretend the refresh token ``value`` was rotated out ``seconds`` ago."""
    RefreshToken.objects.filter(token_checksum=sha256(value)).update(
        revoked=timezone.now() - timedelta(seconds=seconds)
    )


@pytest.fixture
def tokens(flow: Flow, public_client: Client) -> dict[str, Any]:
    return flow.get_tokens(public_client.client_id)


def refresh(flow: Flow, client: Client, value: str, **extra: str) -> Any:
    return flow.refresh(client.client_id, value, **extra)


# ---------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------
def test_refresh_rotates_the_refresh_token(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    response = refresh(flow, public_client, tokens["refresh_token"])
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    new = response.json()
    assert set(new) == {"access_token", "expires_in", "token_type", "scope", "refresh_token"}
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"]
    assert new["expires_in"] == 3600
    assert new["scope"] == "mcp"
    old_row, new_row = refresh_row(tokens["refresh_token"]), refresh_row(new["refresh_token"])
    assert old_row.revoked is not None
    assert new_row.revoked is None
    assert new_row.token_family == old_row.token_family


def test_refreshed_tokens_keep_the_audience(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    new = refresh(flow, public_client, tokens["refresh_token"]).json()
    assert AccessToken.objects.get(token_checksum=sha256(new["access_token"])).resource == [PUBLIC_RESOURCE]
    assert refresh_row(new["refresh_token"]).resource == [PUBLIC_RESOURCE]


def test_refresh_retires_the_previous_access_token(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    assert not access_exists(tokens["access_token"])


def test_new_refresh_token_refreshes_again(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    second = refresh(flow, public_client, tokens["refresh_token"]).json()
    third = refresh(flow, public_client, second["refresh_token"])
    assert third.status_code == 200, third.content


def test_refresh_is_audited(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    event = AuditEvent.objects.get(event=AuditKind.TOKEN_REFRESHED)
    assert event.client == public_client
    assert event.email == ALICE
    assert event.detail == {"scope": "mcp", "resource": [PUBLIC_RESOURCE]}


# ---------------------------------------------------------------------------
# Grace window: concurrent refreshes with the same token
# ---------------------------------------------------------------------------
def test_two_refreshes_with_same_token_within_grace_both_succeed(
    flow: Flow, public_client: Client, tokens: dict[str, Any]
) -> None:
    first = refresh(flow, public_client, tokens["refresh_token"])
    second = refresh(flow, public_client, tokens["refresh_token"])
    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.content
    a, b = first.json(), second.json()
    # A sibling pair, never a reissue of the first answer (which is stored only hashed).
    assert a["access_token"] != b["access_token"]
    assert a["refresh_token"] != b["refresh_token"]
    family = refresh_row(tokens["refresh_token"]).token_family
    assert refresh_row(a["refresh_token"]).token_family == family
    assert refresh_row(b["refresh_token"]).token_family == family
    assert AccessToken.objects.get(token_checksum=sha256(b["access_token"])).resource == [PUBLIC_RESOURCE]


def test_both_siblings_refresh_on(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    a = refresh(flow, public_client, tokens["refresh_token"]).json()
    b = refresh(flow, public_client, tokens["refresh_token"]).json()
    assert refresh(flow, public_client, a["refresh_token"]).status_code == 200
    assert refresh(flow, public_client, b["refresh_token"]).status_code == 200


@override_settings(MCPGATE_REFRESH_GRACE_SECONDS=30)
def test_grace_window_honoured_until_its_end(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    age_rotation(tokens["refresh_token"], 25)
    assert refresh(flow, public_client, tokens["refresh_token"]).status_code == 200


def test_grace_sibling_is_audited_as_a_refresh(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    refresh(flow, public_client, tokens["refresh_token"])
    assert AuditEvent.objects.filter(event=AuditKind.TOKEN_REFRESHED).count() == 2
    assert not AuditEvent.objects.filter(event=AuditKind.REFRESH_REUSE).exists()


def test_grace_does_not_let_another_client_use_the_token(
    flow: Flow, public_client: Client, make_client: Callable[..., Client], tokens: dict[str, Any]
) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    other = make_client(LOOPBACK_REDIRECT, name="Other")
    response = refresh(flow, other, tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT


# ---------------------------------------------------------------------------
# Reuse after the grace window: the family dies
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_REFRESH_GRACE_SECONDS=30)
def test_reuse_after_grace_revokes_the_whole_family(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    a = refresh(flow, public_client, tokens["refresh_token"]).json()
    b = refresh(flow, public_client, tokens["refresh_token"]).json()  # sibling, within grace
    c = refresh(flow, public_client, a["refresh_token"]).json()  # the family goes on
    age_rotation(tokens["refresh_token"], 31)

    replay = refresh(flow, public_client, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json() == INVALID_GRANT

    family = refresh_row(tokens["refresh_token"]).token_family
    assert not RefreshToken.objects.filter(token_family=family, revoked__isnull=True).exists()
    for issued in (a, b, c):
        assert not access_exists(issued["access_token"])
    for value in (b["refresh_token"], c["refresh_token"]):
        assert refresh(flow, public_client, value).json() == INVALID_GRANT


@override_settings(MCPGATE_REFRESH_GRACE_SECONDS=30)
def test_after_reuse_even_recently_rotated_tokens_are_dead(
    flow: Flow, public_client: Client, tokens: dict[str, Any]
) -> None:
    """Once the family is revoked, the grace window no longer applies to any of its tokens."""
    a = refresh(flow, public_client, tokens["refresh_token"]).json()
    refresh(flow, public_client, a["refresh_token"])  # a rotated out just now
    age_rotation(tokens["refresh_token"], 31)
    refresh(flow, public_client, tokens["refresh_token"])  # theft detected
    assert refresh(flow, public_client, a["refresh_token"]).json() == INVALID_GRANT


@override_settings(MCPGATE_REFRESH_GRACE_SECONDS=0)
def test_without_grace_any_reuse_revokes_the_family(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    a = refresh(flow, public_client, tokens["refresh_token"]).json()
    assert refresh(flow, public_client, tokens["refresh_token"]).json() == INVALID_GRANT
    assert refresh(flow, public_client, a["refresh_token"]).json() == INVALID_GRANT


@override_settings(MCPGATE_REFRESH_GRACE_SECONDS=30)
def test_reuse_is_audited_with_the_family_not_the_token(
    flow: Flow, public_client: Client, tokens: dict[str, Any]
) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    age_rotation(tokens["refresh_token"], 31)
    refresh(flow, public_client, tokens["refresh_token"])
    event = AuditEvent.objects.get(event=AuditKind.REFRESH_REUSE)
    assert event.client == public_client
    assert event.email == ALICE
    assert event.detail == {"token_family": str(refresh_row(tokens["refresh_token"]).token_family)}
    assert AuditEvent.objects.get(event=AuditKind.TOKEN_ERROR).detail == {
        "error": "invalid_grant",
        "grant_type": "refresh_token",
    }


def test_revoked_refresh_token_is_dead_even_within_grace(
    flow: Flow, public_client: Client, tokens: dict[str, Any]
) -> None:
    """Grace covers rotation (a successor exists), not a revocation the client asked for."""
    flow.http.post(
        "/oauth/revoke",
        {"token": tokens["refresh_token"], "client_id": public_client.client_id},
        HTTP_HOST=flow.host,
    )
    assert refresh(flow, public_client, tokens["refresh_token"]).json() == INVALID_GRANT


def test_other_families_survive_a_reuse(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    """Alice's second connection (another authorization) is not collateral damage."""
    other = flow.get_tokens(public_client.client_id)
    refresh(flow, public_client, tokens["refresh_token"])
    age_rotation(tokens["refresh_token"], 31)
    refresh(flow, public_client, tokens["refresh_token"])
    assert refresh(flow, public_client, other["refresh_token"]).status_code == 200


# ---------------------------------------------------------------------------
# Other refusals
# ---------------------------------------------------------------------------
def test_unknown_refresh_token_refused(flow: Flow, public_client: Client) -> None:
    response = refresh(flow, public_client, "no-such-token")
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT


def test_refresh_token_of_another_client_refused(
    flow: Flow, public_client: Client, make_client: Callable[..., Client], tokens: dict[str, Any]
) -> None:
    other = make_client(LOOPBACK_REDIRECT, name="Other")
    assert refresh(flow, other, tokens["refresh_token"]).json() == INVALID_GRANT
    assert refresh(flow, public_client, tokens["refresh_token"]).status_code == 200


def test_idle_refresh_token_expires(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    """DOT's idle expiry: REFRESH_TOKEN_EXPIRE_SECONDS (30 days) after its access token expired."""
    AccessToken.objects.update(expires=timezone.now() - timedelta(days=30, seconds=1))
    assert refresh(flow, public_client, tokens["refresh_token"]).json() == INVALID_GRANT


def test_refresh_token_of_an_expired_access_token_still_works(
    flow: Flow, public_client: Client, tokens: dict[str, Any]
) -> None:
    AccessToken.objects.update(expires=timezone.now() - timedelta(days=29))
    assert refresh(flow, public_client, tokens["refresh_token"]).status_code == 200


def test_refresh_for_disabled_client_refused(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    Client.objects.filter(pk=public_client.pk).update(disabled=True)
    response = refresh(flow, public_client, tokens["refresh_token"])
    assert response.status_code == 401
    assert response.json() == oauth_error("invalid_client", "Client authentication failed.")


def test_refresh_for_disabled_person_refused(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    User.objects.filter(username=ALICE).update(is_active=False)
    response = refresh(flow, public_client, tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT


def test_grace_sibling_for_disabled_person_refused(flow: Flow, public_client: Client, tokens: dict[str, Any]) -> None:
    refresh(flow, public_client, tokens["refresh_token"])
    User.objects.filter(username=ALICE).update(is_active=False)
    assert refresh(flow, public_client, tokens["refresh_token"]).json() == INVALID_GRANT


def test_code_for_person_disabled_since_refused(flow: Flow, public_client: Client) -> None:
    query, pkce, _ = flow.authorize_code(public_client.client_id)
    User.objects.filter(username=ALICE).update(is_active=False)
    response = flow.exchange(public_client.client_id, query["code"], pkce)
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT


@pytest.mark.parametrize("resource", [PUBLIC_RESOURCE, "HTTPS://MCP.EXAMPLE.COM/mcp"])
def test_refresh_naming_this_resource_accepted(
    flow: Flow, public_client: Client, tokens: dict[str, Any], resource: str
) -> None:
    response = refresh(flow, public_client, tokens["refresh_token"], resource=resource)
    assert response.status_code == 200, response.content


def test_refresh_naming_another_resource_gets_invalid_target(
    flow: Flow, public_client: Client, tokens: dict[str, Any]
) -> None:
    response = refresh(flow, public_client, tokens["refresh_token"], resource=INTERNAL_RESOURCE)
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_target", "Unknown resource; this server issues tokens for https://mcp.example.com/mcp only."
    )
    assert refresh_row(tokens["refresh_token"]).revoked is None  # nothing was spent


def test_confidential_client_refreshes_with_its_secret(flow: Flow) -> None:
    client, secret = client_create(name="Gemini", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    assert secret is not None
    query, pkce, _ = flow.authorize_code(client.client_id, redirect_uri=GEMINI_CALLBACK)
    auth = basic_auth(client.client_id, secret)
    body = flow.token(
        {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": GEMINI_CALLBACK,
            "code_verifier": pkce.verifier,
        },
        HTTP_AUTHORIZATION=auth,
    ).json()
    data = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    wrong = flow.token(data, HTTP_AUTHORIZATION=basic_auth(client.client_id, "wrong"))
    assert wrong.status_code == 401
    assert flow.token(data, HTTP_AUTHORIZATION=auth).status_code == 200
