"""RFC 7591 dynamic client registration at /oauth/register: open but bounded (checklist AS2, AS6)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.hashers import check_password
from django.test import Client as HttpClient
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from oauth_ext import services
from oauth_ext.models import Client
from tests.conftest import (
    CLAUDE_CALLBACK,
    CLIENT_ADDR,
    INTERNAL,
    LOOPBACK_REDIRECT,
    PROXY_ADDR,
    PUBLIC,
    oauth_error,
    register,
)

pytestmark = pytest.mark.django_db

PUBLIC_METADATA = {
    "client_name": "Claude Code",
    "redirect_uris": ["http://localhost:41234/callback"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "software_id": "claude-code",
    "software_version": "2.1.0",
}


def claude_metadata(method: str) -> dict[str, Any]:
    return {"client_name": "Claude", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": method}


# ---------------------------------------------------------------------------
# What is issued
# ---------------------------------------------------------------------------
def test_register_none_makes_a_public_client_without_secret(http: HttpClient) -> None:
    response = register(http, PUBLIC_METADATA)
    assert response.status_code == 201, response.content
    body = response.json()
    client = Client.objects.get(client_id=body["client_id"])
    assert body == {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created.timestamp()),
        "client_name": "Claude Code",
        "redirect_uris": ["http://localhost:41234/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "mcp",
        "software_id": "claude-code",
        "registration_access_token": body["registration_access_token"],
        "registration_client_uri": f"https://mcp.example.com/oauth/register/{client.client_id}",
    }
    assert client.client_type == Client.CLIENT_PUBLIC
    assert client.token_endpoint_auth_method == "none"


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_register_with_secret_method_issues_secret_and_echoes_method(http: HttpClient, method: str) -> None:
    response = register(http, claude_metadata(method))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token_endpoint_auth_method"] == method
    assert body["client_secret_expires_at"] == 0
    client = Client.objects.get(client_id=body["client_id"])
    assert client.client_type == Client.CLIENT_CONFIDENTIAL
    assert client.token_endpoint_auth_method == method
    # Stored hashed: the column is not the secret, but verifies it.
    assert client.client_secret != body["client_secret"]
    assert check_password(body["client_secret"], client.client_secret)


def test_register_without_auth_method_defaults_to_client_secret_basic(http: HttpClient) -> None:
    """RFC 7591 §2: the default token_endpoint_auth_method is client_secret_basic."""
    response = register(http, {"client_name": "Claude", "redirect_uris": [CLAUDE_CALLBACK]})
    assert response.status_code == 201
    assert response.json()["token_endpoint_auth_method"] == "client_secret_basic"
    assert "client_secret" in response.json()


def test_application_type_native_accepted(http: HttpClient) -> None:
    """mcp-remote and VS Code register as native apps with a loopback redirect."""
    metadata = {
        "client_name": "mcp-remote",
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1:7777/oauth/callback"],
        "token_endpoint_auth_method": "none",
    }
    response = register(http, metadata)
    assert response.status_code == 201, response.content
    assert response.json()["token_endpoint_auth_method"] == "none"


def test_registration_response_is_never_cached(http: HttpClient) -> None:
    """RFC 7591 §3.2.1: the response carries a secret and a registration access token."""
    assert register(http, claude_metadata("client_secret_post"))["Cache-Control"] == "no-store"
    assert register(http, {"redirect_uris": ["https://evil.example/cb"]})["Cache-Control"] == "no-store"


def test_registration_records_source_address_and_host(http: HttpClient) -> None:
    response = register(http, PUBLIC_METADATA, host=INTERNAL, ip="192.0.2.44")
    client = Client.objects.get(client_id=response.json()["client_id"])
    assert client.registration_source == Client.RegistrationSource.DCR
    assert client.registered_from == "192.0.2.44"
    assert client.registered_host == "internal"
    assert client.software_id == "claude-code"
    assert client.software_version == "2.1.0"


def test_registration_through_trusted_proxy_records_the_forwarded_client_address(http: HttpClient) -> None:
    response = http.post(
        "/oauth/register",
        json.dumps(PUBLIC_METADATA),
        content_type="application/json",
        HTTP_HOST=PUBLIC,
        REMOTE_ADDR=PROXY_ADDR,
        HTTP_X_FORWARDED_FOR="198.51.100.23",
    )
    client = Client.objects.get(client_id=response.json()["client_id"])
    assert client.registered_from == "198.51.100.23"
    assert client.registered_host == "public"


def test_registration_is_audited_without_secrets(http: HttpClient) -> None:
    body = register(http, claude_metadata("client_secret_post")).json()
    event = AuditEvent.objects.get(event=AuditKind.REGISTER)
    assert event.client is not None and event.client.client_id == body["client_id"]
    assert str(event.ip) == CLIENT_ADDR
    assert event.host == "public"
    assert event.detail == {"auth_method": "client_secret_post", "software_id": ""}
    assert body["client_secret"] not in json.dumps(event.detail)


def test_registration_access_token_reads_the_registration(http: HttpClient) -> None:
    """RFC 7592 §2.1: registration_client_uri + registration_access_token."""
    body = register(http, PUBLIC_METADATA).json()
    response = http.get(
        f"/oauth/register/{body['client_id']}",
        HTTP_HOST=PUBLIC,
        HTTP_AUTHORIZATION=f"Bearer {body['registration_access_token']}",
    )
    assert response.status_code == 200
    assert response.json()["client_id"] == body["client_id"]


# ---------------------------------------------------------------------------
# AS2: redirect URI policy at registration
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1/callback",
        "http://127.0.0.1:33418/callback",
        "http://[::1]:8080/callback",
        "http://localhost/callback",
        "https://claude.ai/api/mcp/auth_callback",
        "https://claude.com/api/mcp/auth_callback",
        "https://vscode.dev/redirect",
        "https://insiders.vscode.dev/redirect",
        "https://chatgpt.com/connector_platform_oauth_redirect",
        "https://chatgpt.com/connector/oauth/abc123",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "https://vertexaisearch.cloud.google.com/oauth-redirect",
        "cursor://anysphere.cursor-mcp/oauth/callback",
    ],
)
def test_register_accepts_loopback_and_allowlisted_redirects(http: HttpClient, redirect_uri: str) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": [redirect_uri]})
    assert response.status_code == 201, response.content
    assert response.json()["redirect_uris"] == [redirect_uri]


def test_register_rejects_non_allowlisted_redirect(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["https://evil.example/cb"]})
    assert response.status_code == 400
    assert response["Cache-Control"] == "no-store"
    assert response.json() == oauth_error(
        "invalid_redirect_uri", "'https://evil.example/cb' is not on this server's redirect URI allowlist."
    )
    assert not Client.objects.exists()
    assert AuditEvent.objects.get(event=AuditKind.REGISTER_REFUSED).detail == {"error": "invalid_redirect_uri"}


def test_register_rejects_http_redirect_off_loopback(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["http://claude.ai/api/mcp/auth_callback"]})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_redirect_uri",
        "'http://claude.ai/api/mcp/auth_callback': http redirect URIs are allowed only on loopback "
        "(127.0.0.1, [::1], localhost).",
    )


def test_register_rejects_allowlisted_prefix_lookalike(http: HttpClient) -> None:
    """The ChatGPT prefix ends with '/', so a sibling path does not match it."""
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["https://chatgpt.com/connector/oauthx"]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


def test_register_rejects_allowlisted_uri_with_other_path(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["https://claude.ai/api/mcp/other"]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


def test_register_rejects_redirect_with_fragment(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["http://127.0.0.1/cb#frag"]})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_redirect_uri", "'http://127.0.0.1/cb#frag' has a fragment, which RFC 6749 §3.1.2 forbids."
    )


def test_register_rejects_redirect_with_credentials(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["https://user:pw@claude.ai/api/mcp/auth_callback"]})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_redirect_uri", "'https://user:pw@claude.ai/api/mcp/auth_callback' carries credentials."
    )


def test_register_rejects_relative_redirect(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": ["/callback"]})
    assert response.status_code == 400
    assert response.json() == oauth_error("invalid_redirect_uri", "'/callback' is not an absolute URI.")


def test_register_rejects_if_any_redirect_is_refused(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": [LOOPBACK_REDIRECT, "https://evil.example/cb"]})
    assert response.status_code == 400
    assert not Client.objects.exists()


# ---------------------------------------------------------------------------
# Malformed metadata: one test per error path
# ---------------------------------------------------------------------------
def test_register_rejects_body_that_is_not_json(http: HttpClient) -> None:
    response = register(http, "{not json")
    assert response.status_code == 400
    assert response.json() == oauth_error("invalid_client_metadata", "Request body must be valid JSON")


def test_register_rejects_json_that_is_not_an_object(http: HttpClient) -> None:
    response = register(http, "[]")
    assert response.status_code == 400
    assert response.json() == oauth_error("invalid_client_metadata", "Request body must be a JSON object")


def test_register_rejects_missing_redirect_uris(http: HttpClient) -> None:
    response = register(http, {"client_name": "x", "token_endpoint_auth_method": "none"})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_client_metadata", "redirect_uris is required for grant type 'authorization_code'"
    )


def test_register_rejects_redirect_uris_that_are_not_strings(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": [5]})
    assert response.status_code == 400
    assert response.json() == oauth_error("invalid_client_metadata", "Each redirect_uri must be a string")


def test_register_rejects_unsupported_auth_method(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "token_endpoint_auth_method": "private_key_jwt"})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_client_metadata",
        "Unsupported token_endpoint_auth_method: 'private_key_jwt'. "
        "Supported values: none, client_secret_basic, client_secret_post",
    )


@pytest.mark.parametrize("grant_type", ["implicit", "password", "client_credentials"])
def test_register_rejects_grant_types_this_server_never_serves(http: HttpClient, grant_type: str) -> None:
    response = register(http, {**PUBLIC_METADATA, "grant_types": [grant_type]})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_client_metadata", "This server supports only the authorization_code and refresh_token grant types."
    )
    assert not Client.objects.exists()


def test_register_rejects_token_response_type(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "response_types": ["code", "token"]})
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_client_metadata", "This server supports only the code response type."
    )


def test_register_rejects_response_types_that_are_not_a_list(http: HttpClient) -> None:
    response = register(http, {**PUBLIC_METADATA, "response_types": "code"})
    assert response.status_code == 400
    assert response.json() == oauth_error("invalid_client_metadata", "response_types must be an array of strings.")


# ---------------------------------------------------------------------------
# Rate limit per address (mcpgate's rate-limit middleware, in front of the view)
# ---------------------------------------------------------------------------
def test_registration_rate_limit_default_suits_an_office_behind_one_nat(http: HttpClient) -> None:
    for n in range(30):
        assert register(http, claude_metadata("client_secret_post")).status_code == 201, n
    assert register(http, claude_metadata("client_secret_post")).status_code == 429


# ---------------------------------------------------------------------------
# Registrations that never led anywhere are swept when new ones arrive
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_UNUSED_CLIENT_PURGE_HOURS=24)
def test_registering_purges_stale_unused_registrations(http: HttpClient) -> None:
    stale = register(http, claude_metadata("client_secret_post")).json()
    Client.objects.filter(client_id=stale["client_id"]).update(created=timezone.now() - timedelta(hours=25))
    fresh = register(http, claude_metadata("client_secret_post")).json()
    assert list(Client.objects.values_list("client_id", flat=True)) == [fresh["client_id"]]
    assert AuditEvent.objects.get(event=AuditKind.CLIENT_PURGED).detail == {
        "client_id": stale["client_id"],
        "name": "Claude",
    }


@override_settings(MCPGATE_UNUSED_CLIENT_PURGE_HOURS=24)
def test_a_registration_sweeps_a_bounded_number_of_stale_registrations_oldest_first(
    http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog goes a few clients per registration; manage.py purge_stale_clients takes all of it."""
    monkeypatch.setattr(services, "PURGE_PER_REGISTRATION", 2)
    stale = [register(http, claude_metadata("client_secret_post")).json()["client_id"] for _ in range(3)]
    for n, client_id in enumerate(stale):
        Client.objects.filter(client_id=client_id).update(created=timezone.now() - timedelta(hours=30 - n))
    fresh = register(http, claude_metadata("client_secret_post")).json()
    assert set(Client.objects.values_list("client_id", flat=True)) == {stale[2], fresh["client_id"]}
    again = register(http, claude_metadata("client_secret_post")).json()
    assert set(Client.objects.values_list("client_id", flat=True)) == {fresh["client_id"], again["client_id"]}
