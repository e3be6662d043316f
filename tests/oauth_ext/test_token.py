"""/oauth/token (RFC 6749 §4.1.3, PKCE, RFC 8707), client authentication, /oauth/revoke (RFC 7009), storage at rest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.hashers import check_password
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from oauth_ext.services import client_create
from tests.conftest import (
    GEMINI_CALLBACK,
    INTERNAL_RESOURCE,
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC_RESOURCE,
    Flow,
    basic_auth,
    dot_settings,
    oauth_error,
)
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()

INVALID_GRANT = oauth_error(
    "invalid_grant", "The code or refresh token is invalid, expired, revoked, or was issued to another client."
)
INVALID_CLIENT = oauth_error("invalid_client", "Client authentication failed.")
UNSUPPORTED_GRANT = oauth_error("unsupported_grant_type", "This server supports authorization_code and refresh_token.")


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def assert_error(response: Any, status: int, body: dict[str, str]) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == body


@pytest.fixture
def issued(flow: Flow, public_client: Client) -> tuple[dict[str, str], PKCE]:
    """A fresh authorization code for Alice and the public client, and its PKCE pair."""
    query, pkce, _ = flow.authorize_code(public_client.client_id)
    return query, pkce


# ---------------------------------------------------------------------------
# Code exchange
# ---------------------------------------------------------------------------
def test_code_exchange_issues_bearer_and_refresh_token(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    response = flow.exchange(public_client.client_id, query["code"], pkce)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "scope", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "mcp"
    token = AccessToken.objects.get(token_checksum=sha256(body["access_token"]))
    assert token.user.email == ALICE
    assert token.application == public_client
    assert token.resource == [PUBLIC_RESOURCE]
    assert Client.objects.get(pk=public_client.pk).last_used_at is not None


def test_access_token_lifetime_is_configurable(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    with dot_settings(ACCESS_TOKEN_EXPIRE_SECONDS=600):
        body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    assert body["expires_in"] == 600
    token = AccessToken.objects.get(token_checksum=sha256(body["access_token"]))
    assert timedelta(seconds=590) < token.expires - timezone.now() <= timedelta(seconds=600)


def test_access_token_lifetime_override_does_not_leak(flow: Flow, public_client: Client, issued: Any) -> None:
    """The helper's own check: the oauthlib server built under the override is not kept."""
    query, pkce = issued
    with dot_settings(ACCESS_TOKEN_EXPIRE_SECONDS=600):
        assert flow.exchange(public_client.client_id, query["code"], pkce).json()["expires_in"] == 600
    query, pkce, _ = flow.authorize_code(public_client.client_id)
    assert flow.exchange(public_client.client_id, query["code"], pkce).json()["expires_in"] == 3600


def test_code_is_single_use(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    assert flow.exchange(public_client.client_id, query["code"], pkce).status_code == 200
    assert_error(flow.exchange(public_client.client_id, query["code"], pkce), 400, INVALID_GRANT)


def test_expired_code_refused(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    Grant.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert_error(flow.exchange(public_client.client_id, query["code"], pkce), 400, INVALID_GRANT)


def test_unknown_code_refused(flow: Flow, public_client: Client) -> None:
    assert_error(flow.exchange(public_client.client_id, "no-such-code", PKCE.make()), 400, INVALID_GRANT)


def test_code_of_another_client_refused(
    flow: Flow, public_client: Client, make_client: Callable[..., Client], issued: Any
) -> None:
    query, pkce = issued
    other = make_client(LOOPBACK_REDIRECT, name="Other")
    assert_error(flow.exchange(other.client_id, query["code"], pkce), 400, INVALID_GRANT)


def test_code_issued_to_a_now_disabled_client_refused(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    Client.objects.filter(pk=public_client.pk).update(disabled=True)
    assert_error(flow.exchange(public_client.client_id, query["code"], pkce), 401, INVALID_CLIENT)


# AS1: PKCE
def test_wrong_code_verifier_refused(flow: Flow, public_client: Client, issued: Any) -> None:
    query, _pkce = issued
    assert_error(flow.exchange(public_client.client_id, query["code"], PKCE.make()), 400, INVALID_GRANT)


def test_missing_code_verifier_refused(flow: Flow, public_client: Client, issued: Any) -> None:
    query, _pkce = issued
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": LOOPBACK_REDIRECT,
        "client_id": public_client.client_id,
    }
    assert_error(flow.token(data), 400, oauth_error("invalid_request", "Code verifier required."))


@pytest.mark.parametrize(
    "grant_type",
    ["password", "client_credentials", "implicit", "urn:ietf:params:oauth:grant-type:device_code", ""],
)
def test_other_grant_types_refused(flow: Flow, public_client: Client, grant_type: str) -> None:
    data = {"grant_type": grant_type, "client_id": public_client.client_id, "username": "a", "password": "b"}
    assert_error(flow.token(data), 400, UNSUPPORTED_GRANT)


def test_token_endpoint_accepts_post_only(flow: Flow) -> None:
    response = flow.http.get("/oauth/token", HTTP_HOST=flow.host)
    assert response.status_code == 405


# AS2: the code is bound to the exact redirect URI
def test_code_bound_to_exact_redirect_uri(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    response = flow.exchange(
        public_client.client_id, query["code"], pkce, redirect_uri="http://127.0.0.1:33419/callback"
    )
    assert_error(response, 400, oauth_error("invalid_request", "Mismatching redirect URI."))


def test_loopback_code_bound_to_the_port_used_not_the_registered_one(flow: Flow, public_client: Client) -> None:
    query, pkce, _ = flow.authorize_code(public_client.client_id, redirect_uri="http://127.0.0.1:50000/callback")
    response = flow.exchange(public_client.client_id, query["code"], pkce, redirect_uri=LOOPBACK_REDIRECT)
    assert_error(response, 400, oauth_error("invalid_request", "Mismatching redirect URI."))


def test_redirect_uri_required_at_token(flow: Flow, public_client: Client, issued: Any) -> None:
    """RFC 6749 §4.1.3: it was in the authorization request, so it must be repeated."""
    query, pkce = issued
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "client_id": public_client.client_id,
        "code_verifier": pkce.verifier,
    }
    assert_error(flow.token(data), 400, oauth_error("invalid_request", "Missing redirect URI."))


# AS4: resource at the token endpoint
@pytest.mark.parametrize(
    "resource", [PUBLIC_RESOURCE, "HTTPS://MCP.EXAMPLE.COM/mcp", "https://mcp.example.com:443/mcp/"]
)
def test_resource_at_token_accepted_canonically(flow: Flow, public_client: Client, issued: Any, resource: str) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce, resource=resource).json()
    assert AccessToken.objects.get(token_checksum=sha256(body["access_token"])).resource == [PUBLIC_RESOURCE]


def test_unknown_resource_at_token_gets_invalid_target(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    response = flow.exchange(public_client.client_id, query["code"], pkce, resource="https://other.example/mcp")
    assert_error(
        response,
        400,
        oauth_error(
            "invalid_target", "Unknown resource; this server issues tokens for https://mcp.example.com/mcp only."
        ),
    )
    assert AuditEvent.objects.get(event=AuditKind.TOKEN_ERROR).detail == {
        "error": "invalid_target",
        "grant_type": "authorization_code",
    }


def test_other_hosts_resource_at_token_gets_invalid_target(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    response = flow.exchange(public_client.client_id, query["code"], pkce, resource=INTERNAL_RESOURCE)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_no_resource_anywhere_still_gives_an_audience_bound_token(
    flow: Flow, public_client: Client, issued: Any
) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    assert AccessToken.objects.get(token_checksum=sha256(body["access_token"])).resource == [PUBLIC_RESOURCE]
    assert RefreshToken.objects.get(token_checksum=sha256(body["refresh_token"])).resource == [PUBLIC_RESOURCE]


# ---------------------------------------------------------------------------
# Confidential clients (Gemini Enterprise, Claude with static credentials)
# ---------------------------------------------------------------------------
@pytest.fixture
def gemini(db: Any) -> tuple[Client, str]:
    client, secret = client_create(name="Gemini Enterprise", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    assert secret is not None
    return client, secret


def confidential_code(flow: Flow, client: Client) -> tuple[dict[str, str], PKCE]:
    query, pkce, _ = flow.authorize_code(client.client_id, redirect_uri=GEMINI_CALLBACK)
    return query, pkce


def code_data(query: dict[str, str], pkce: PKCE) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": GEMINI_CALLBACK,
        "code_verifier": pkce.verifier,
    }


def test_confidential_client_secret_basic_works(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, secret = gemini
    query, pkce = confidential_code(flow, client)
    response = flow.token(code_data(query, pkce), HTTP_AUTHORIZATION=basic_auth(client.client_id, secret))
    assert response.status_code == 200, response.content


def test_confidential_client_secret_post_works(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, secret = gemini
    query, pkce = confidential_code(flow, client)
    response = flow.token({**code_data(query, pkce), "client_id": client.client_id, "client_secret": secret})
    assert response.status_code == 200, response.content


def test_confidential_client_wrong_secret_basic_gets_401_invalid_client(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    query, pkce = confidential_code(flow, client)
    response = flow.token(code_data(query, pkce), HTTP_AUTHORIZATION=basic_auth(client.client_id, "wrong"))
    assert_error(response, 401, INVALID_CLIENT)
    assert response["WWW-Authenticate"] == 'Basic realm="oauth", charset="UTF-8"'
    event = AuditEvent.objects.get(event=AuditKind.TOKEN_ERROR)
    assert event.client == client
    assert event.detail == {"error": "invalid_client", "grant_type": "authorization_code"}


def test_confidential_client_wrong_secret_post_gets_401_invalid_client(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    query, pkce = confidential_code(flow, client)
    response = flow.token({**code_data(query, pkce), "client_id": client.client_id, "client_secret": "wrong"})
    assert_error(response, 401, INVALID_CLIENT)
    assert response["WWW-Authenticate"] == 'Basic realm="oauth", charset="UTF-8"'


def test_confidential_client_without_secret_gets_401_invalid_client(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    query, pkce = confidential_code(flow, client)
    assert_error(flow.token({**code_data(query, pkce), "client_id": client.client_id}), 401, INVALID_CLIENT)


def test_unknown_client_gets_401_invalid_client(flow: Flow, public_client: Client, issued: Any) -> None:
    """Claude re-registers on invalid_client, which is what makes purging stale clients safe."""
    query, pkce = issued
    assert_error(flow.exchange("no-such-client", query["code"], pkce), 401, INVALID_CLIENT)


def test_wrong_secret_burns_nothing(flow: Flow, gemini: tuple[Client, str]) -> None:
    """Failed client authentication does not consume the code: the real client can still redeem it."""
    client, secret = gemini
    query, pkce = confidential_code(flow, client)
    flow.token(code_data(query, pkce), HTTP_AUTHORIZATION=basic_auth(client.client_id, "wrong"))
    response = flow.token(code_data(query, pkce), HTTP_AUTHORIZATION=basic_auth(client.client_id, secret))
    assert response.status_code == 200


# ---------------------------------------------------------------------------
# Storage at rest
# ---------------------------------------------------------------------------
def test_tokens_stored_hashed(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    access = AccessToken.objects.get()
    refresh = RefreshToken.objects.get()
    assert access.token == ""
    assert access.token_checksum == sha256(body["access_token"])
    assert refresh.token == ""
    assert refresh.token_checksum == sha256(body["refresh_token"])


def test_client_secret_stored_hashed_with_the_client_secret_hasher() -> None:
    """A salted HMAC (oauth_ext.hashers), not PBKDF2: the secret is generated (see tests/security)."""
    client, secret = client_create(name="Gemini", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    assert secret is not None
    stored = Client.objects.get(pk=client.pk).client_secret
    assert stored.startswith("client_secret_pbkdf2_sha256$1$")
    assert secret not in stored
    assert check_password(secret, stored)


# ---------------------------------------------------------------------------
# Revocation (RFC 7009)
# ---------------------------------------------------------------------------
def revoke(flow: Flow, token: str, client_id: str, hint: str | None = None, **headers: str) -> Any:
    data = {"token": token, "client_id": client_id}
    if hint:
        data["token_type_hint"] = hint
    return flow.http.post("/oauth/revoke", data, HTTP_HOST=flow.host, **headers)


def test_revoke_access_token(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    response = revoke(flow, body["access_token"], public_client.client_id, "access_token")
    assert response.status_code == 200
    assert not AccessToken.objects.filter(token_checksum=sha256(body["access_token"])).exists()
    event = AuditEvent.objects.get(event=AuditKind.TOKEN_REVOKED)
    assert event.client == public_client
    assert event.detail == {"token_type_hint": "access_token"}


def test_revoke_refresh_token_ends_the_refresh(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    assert revoke(flow, body["refresh_token"], public_client.client_id, "refresh_token").status_code == 200
    assert RefreshToken.objects.get().revoked is not None
    assert not AccessToken.objects.filter(token_checksum=sha256(body["access_token"])).exists()
    assert_error(flow.refresh(public_client.client_id, body["refresh_token"]), 400, INVALID_GRANT)


def test_revoke_without_hint_finds_the_token(flow: Flow, public_client: Client, issued: Any) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    assert revoke(flow, body["refresh_token"], public_client.client_id).status_code == 200
    assert RefreshToken.objects.get().revoked is not None


def test_revoke_unknown_token_is_not_an_error(flow: Flow, public_client: Client) -> None:
    """RFC 7009 §2.2: invalid tokens do not cause an error response."""
    assert revoke(flow, "no-such-token", public_client.client_id).status_code == 200


def test_revoke_by_another_client_leaves_the_token(
    flow: Flow, public_client: Client, make_client: Callable[..., Client], issued: Any
) -> None:
    query, pkce = issued
    body = flow.exchange(public_client.client_id, query["code"], pkce).json()
    other = make_client(LOOPBACK_REDIRECT, name="Other")
    assert revoke(flow, body["access_token"], other.client_id).status_code == 200
    assert AccessToken.objects.filter(token_checksum=sha256(body["access_token"])).exists()


def test_revoke_needs_a_known_client(flow: Flow) -> None:
    assert_error(revoke(flow, "anything", "no-such-client"), 401, INVALID_CLIENT)


def test_confidential_client_revokes_with_its_secret(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, secret = gemini
    query, pkce = confidential_code(flow, client)
    body = flow.token(code_data(query, pkce), HTTP_AUTHORIZATION=basic_auth(client.client_id, secret)).json()
    response = flow.http.post(
        "/oauth/revoke",
        {"token": body["access_token"]},
        HTTP_HOST=flow.host,
        HTTP_AUTHORIZATION=basic_auth(client.client_id, secret),
    )
    assert response.status_code == 200
    assert not AccessToken.objects.exists()


def test_confidential_client_cannot_revoke_with_wrong_secret(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, secret = gemini
    query, pkce = confidential_code(flow, client)
    body = flow.token(code_data(query, pkce), HTTP_AUTHORIZATION=basic_auth(client.client_id, secret)).json()
    response = flow.http.post(
        "/oauth/revoke",
        {"token": body["access_token"]},
        HTTP_HOST=flow.host,
        HTTP_AUTHORIZATION=basic_auth(client.client_id, "wrong"),
    )
    assert_error(response, 401, INVALID_CLIENT)
    assert AccessToken.objects.exists()
