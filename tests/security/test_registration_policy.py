"""RFC 7591 registration and RFC 7592 management apply one registration policy; an update cannot bypass it.

A client holding its registration access token can read, update and delete its registration
(RFC 7592 §2). An update is held to exactly what registration is held to: grant and response
types this server serves, the redirect URI policy, typed fields, and no change of how the
client authenticates. Changing the redirect URIs forgets every remembered consent and
outstanding code, so a person is asked again before a code goes to the new URI.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client as HttpClient
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, Consent
from tests.conftest import (
    CLAUDE_CALLBACK,
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC,
    Flow,
    authorize_params,
    oauth_error,
    register,
)

pytestmark = pytest.mark.django_db

PUBLIC_METADATA = {
    "client_name": "Claude Code",
    "redirect_uris": [LOOPBACK_REDIRECT],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "software_id": "claude-code",
    "software_version": "2.1.0",
}
CONFIDENTIAL_METADATA = {
    "client_name": "Claude",
    "redirect_uris": [CLAUDE_CALLBACK],
    "token_endpoint_auth_method": "client_secret_post",
}
UNSUPPORTED_GRANT = oauth_error(
    "invalid_client_metadata", "This server supports only the authorization_code and refresh_token grant types."
)


def registered(http: HttpClient, metadata: dict[str, Any]) -> dict[str, Any]:
    response = register(http, metadata)
    assert response.status_code == 201, response.content
    return dict(response.json())


def manage(
    http: HttpClient, registration: dict[str, Any], method: str, metadata: Any = None, *, token: str | None = None
) -> Any:
    """An RFC 7592 request to the registration's client configuration endpoint, with its token."""
    headers = {
        "HTTP_HOST": PUBLIC,
        "HTTP_AUTHORIZATION": f"Bearer {token or registration['registration_access_token']}",
    }
    path = f"/oauth/register/{registration['client_id']}"
    if metadata is None:
        return http.generic(method, path, **headers)
    body = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return http.generic(method, path, body, content_type="application/json", **headers)


def stored(client_id: str) -> dict[str, Any]:
    """Everything an update could change about a client, remembered consents and outstanding codes included."""
    client = Client.objects.get(client_id=client_id)
    fields = (
        "name",
        "redirect_uris",
        "authorization_grant_type",
        "client_type",
        "client_secret",
        "token_endpoint_auth_method",
        "software_id",
        "software_version",
        "updated",
    )
    state = {field: getattr(client, field) for field in fields}
    state["consents"] = list(Consent.objects.filter(client=client).values_list("user__username", "scopes"))
    state["codes"] = get_grant_model().objects.filter(application=client).count()
    return state


def described(registration: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The RFC 7591 §3.2.1 / RFC 7592 §3 client information response for ``registration``."""
    body = {
        key: value for key, value in registration.items() if key not in ("client_secret", "client_secret_expires_at")
    }
    return {**body, **changes}


def refused_unchanged(
    http: HttpClient, registration: dict[str, Any], response: Any, before: dict[str, Any], error: dict[str, str]
) -> None:
    """The update was refused with ``error`` and nothing about the client or its token changed."""
    assert response.status_code == 400, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json() == error
    assert stored(registration["client_id"]) == before
    assert manage(http, registration, "GET").status_code == 200  # the token was not rotated away


# ---------------------------------------------------------------------------
# Read
# ---------------------------------------------------------------------------
def test_reading_a_registration_answers_in_the_registration_shape(http: HttpClient) -> None:
    """RFC 7592 §2.1 / §3: the same client information response registration gave (no secret)."""
    registration = registered(http, CONFIDENTIAL_METADATA)
    response = manage(http, registration, "GET")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert response.json() == described(registration)


def test_management_without_the_registration_token_is_refused(http: HttpClient) -> None:
    registration = registered(http, PUBLIC_METADATA)
    before = stored(registration["client_id"])
    for method in ("GET", "PUT", "DELETE"):
        response = manage(http, registration, method, PUBLIC_METADATA, token="not-the-token")
        assert response.status_code == 401, method
        assert response.json() == {"error": "invalid_token", "error_description": "Invalid registration access token"}
        assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert stored(registration["client_id"]) == before


# ---------------------------------------------------------------------------
# Update: the bypasses of the security review
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("grant_type", ["client_credentials", "password", "implicit"])
def test_an_update_cannot_add_a_grant_type_this_server_never_serves(
    http: HttpClient, flow: Flow, grant_type: str
) -> None:
    registration = registered(http, PUBLIC_METADATA)
    flow.authorize_code(registration["client_id"])  # Alice approved it: a consent and a code
    before = stored(registration["client_id"])
    assert (len(before["consents"]), before["codes"]) == (1, 1)
    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "grant_types": [grant_type]})
    refused_unchanged(http, registration, response, before, UNSUPPORTED_GRANT)
    assert before["authorization_grant_type"] == Client.GRANT_AUTHORIZATION_CODE
    assert AuditEvent.objects.filter(event=AuditKind.REGISTER_REFUSED).get().detail == {
        "error": "invalid_client_metadata",
        "operation": "update",
    }


@pytest.mark.parametrize("grant_types", [[], ["refresh_token"]])
def test_grant_types_without_authorization_code_are_refused(http: HttpClient, grant_types: list[str]) -> None:
    error = oauth_error("invalid_client_metadata", "grant_types must include authorization_code.")
    response = register(http, {**PUBLIC_METADATA, "grant_types": grant_types})
    assert response.status_code == 400
    assert response.json() == error
    assert not Client.objects.exists()
    registration = registered(http, PUBLIC_METADATA)
    before = stored(registration["client_id"])
    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "grant_types": grant_types})
    refused_unchanged(http, registration, response, before, error)


def test_an_update_cannot_ask_for_the_token_response_type(http: HttpClient) -> None:
    registration = registered(http, PUBLIC_METADATA)
    before = stored(registration["client_id"])
    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "response_types": ["token"]})
    refused_unchanged(
        http,
        registration,
        response,
        before,
        oauth_error("invalid_client_metadata", "This server supports only the code response type."),
    )


def test_an_update_cannot_register_a_redirect_uri_off_the_allowlist(http: HttpClient, flow: Flow) -> None:
    registration = registered(http, PUBLIC_METADATA)
    flow.authorize_code(registration["client_id"])
    before = stored(registration["client_id"])
    assert len(before["consents"]) == 1
    response = manage(
        http, registration, "PUT", {**PUBLIC_METADATA, "redirect_uris": [LOOPBACK_REDIRECT, "https://evil.example/cb"]}
    )
    refused_unchanged(
        http,
        registration,
        response,
        before,
        oauth_error(
            "invalid_redirect_uri", "'https://evil.example/cb' is not on this server's redirect URI allowlist."
        ),
    )


def test_an_update_with_a_null_client_name_is_refused(http: HttpClient) -> None:
    registration = registered(http, PUBLIC_METADATA)
    before = stored(registration["client_id"])
    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "client_name": None})
    refused_unchanged(
        http, registration, response, before, oauth_error("invalid_client_metadata", "client_name must be a string.")
    )


def test_an_update_cannot_make_a_public_client_confidential(http: HttpClient) -> None:
    """A public client has no secret: made confidential, it could no longer authenticate, or worse."""
    registration = registered(http, PUBLIC_METADATA)
    before = stored(registration["client_id"])
    for method in ("client_secret_basic", "client_secret_post"):
        response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "token_endpoint_auth_method": method})
        refused_unchanged(
            http,
            registration,
            response,
            before,
            oauth_error(
                "invalid_client_metadata",
                "token_endpoint_auth_method cannot be changed (it is 'none'); register a new client instead.",
            ),
        )
    assert before["client_type"] == Client.CLIENT_PUBLIC


def test_an_update_cannot_make_a_confidential_client_public(http: HttpClient) -> None:
    registration = registered(http, CONFIDENTIAL_METADATA)
    before = stored(registration["client_id"])
    response = manage(http, registration, "PUT", {**CONFIDENTIAL_METADATA, "token_endpoint_auth_method": "none"})
    refused_unchanged(
        http,
        registration,
        response,
        before,
        oauth_error(
            "invalid_client_metadata",
            "token_endpoint_auth_method cannot be changed (it is 'client_secret_post'); register a new client instead.",
        ),
    )
    assert before["client_type"] == Client.CLIENT_CONFIDENTIAL


def test_an_update_naming_another_client_id_is_refused(http: HttpClient) -> None:
    """RFC 7592 §2.2: the client_id in the request must be the client's own."""
    registration = registered(http, PUBLIC_METADATA)
    other = registered(http, {**PUBLIC_METADATA, "client_name": "Other"})
    before = stored(registration["client_id"])
    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "client_id": other["client_id"]})
    refused_unchanged(
        http,
        registration,
        response,
        before,
        oauth_error("invalid_client_metadata", "client_id must be the client_id of this registration."),
    )


# ---------------------------------------------------------------------------
# Update: what is allowed
# ---------------------------------------------------------------------------
def test_an_update_applies_and_answers_in_the_registration_shape(http: HttpClient) -> None:
    registration = registered(http, PUBLIC_METADATA)
    update = {
        **PUBLIC_METADATA,
        "client_id": registration["client_id"],
        "client_name": "Claude Code (renamed)",
        "software_version": "2.2.0",
    }
    response = manage(http, registration, "PUT", update)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    # RFC 7592 §2.2: a new registration access token replaces the old one.
    assert body["registration_access_token"] != registration["registration_access_token"]
    assert body == described(
        registration, client_name="Claude Code (renamed)", registration_access_token=body["registration_access_token"]
    )
    client = Client.objects.get(client_id=registration["client_id"])
    assert (client.name, client.software_id, client.software_version) == (
        "Claude Code (renamed)",
        "claude-code",
        "2.2.0",
    )
    assert (client.client_type, client.token_endpoint_auth_method) == (Client.CLIENT_PUBLIC, "none")
    assert manage(http, registration, "GET").status_code == 401
    assert manage(http, body, "GET").status_code == 200
    event = AuditEvent.objects.get(event=AuditKind.REGISTRATION_UPDATED)
    assert event.client == client
    assert event.detail == {"redirect_uris_changed": False, "consents_dropped": 0, "codes_dropped": 0}
    assert body["registration_access_token"] not in json.dumps(event.detail)


def test_an_update_that_omits_the_auth_method_keeps_it(http: HttpClient) -> None:
    """RFC 7592 §2.2 lets the server keep a value the request leaves out; it says which in the response."""
    registration = registered(http, PUBLIC_METADATA)
    update = {key: value for key, value in PUBLIC_METADATA.items() if key != "token_endpoint_auth_method"}
    response = manage(http, registration, "PUT", update)
    assert response.status_code == 200, response.content
    assert response.json()["token_endpoint_auth_method"] == "none"
    client = Client.objects.get(client_id=registration["client_id"])
    assert (client.client_type, client.token_endpoint_auth_method, client.client_secret) == (
        Client.CLIENT_PUBLIC,
        "none",
        "",
    )


def test_an_update_of_a_confidential_client_keeps_its_secret(http: HttpClient) -> None:
    registration = registered(http, CONFIDENTIAL_METADATA)
    secret_hash = Client.objects.get(client_id=registration["client_id"]).client_secret
    response = manage(
        http, registration, "PUT", {**CONFIDENTIAL_METADATA, "client_name": "Claude (2)", "client_secret": "mine"}
    )
    assert response.status_code == 200, response.content
    assert "client_secret" not in response.json()
    assert Client.objects.get(client_id=registration["client_id"]).client_secret == secret_hash


# ---------------------------------------------------------------------------
# Update: changed redirect URIs forget remembered consents and outstanding codes
# ---------------------------------------------------------------------------
def test_changing_redirect_uris_forgets_consents_so_the_next_authorization_asks_again(
    http: HttpClient, flow: Flow
) -> None:
    registration = registered(http, PUBLIC_METADATA)
    client_id = registration["client_id"]
    flow.authorize_code(client_id)  # Alice approves, with the loopback redirect: a code, not redeemed
    outstanding, pkce, _ = flow.authorize_code(client_id)  # remembered: another code
    assert Consent.objects.filter(client__client_id=client_id).count() == 1

    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "redirect_uris": [CLAUDE_CALLBACK]})
    assert response.status_code == 200, response.content

    assert not Consent.objects.filter(client__client_id=client_id).exists()
    assert not get_grant_model().objects.filter(application__client_id=client_id).exists()
    page = flow.authorize(authorize_params(client_id, PKCE.make(), redirect_uri=CLAUDE_CALLBACK))
    assert page.status_code == 200  # the consent page, not a code for the new URI
    assert "claude.ai" in page.content.decode()
    assert flow.exchange(client_id, outstanding["code"], pkce).json()["error"] == "invalid_grant"
    assert AuditEvent.objects.get(event=AuditKind.REGISTRATION_UPDATED).detail == {
        "redirect_uris_changed": True,
        "consents_dropped": 1,
        "codes_dropped": 2,
    }


def test_an_update_that_keeps_the_redirect_uris_keeps_consents(http: HttpClient, flow: Flow) -> None:
    registration = registered(http, PUBLIC_METADATA)
    flow.authorize_code(registration["client_id"])
    response = manage(http, registration, "PUT", {**PUBLIC_METADATA, "client_name": "Claude Code (2)"})
    assert response.status_code == 200, response.content
    again = flow.authorize(authorize_params(registration["client_id"], PKCE.make()))
    assert again.status_code == 302  # still remembered
    assert Consent.objects.count() == 1


def test_a_consent_given_on_a_page_shown_before_an_update_is_not_remembered(http: HttpClient, flow: Flow) -> None:
    """The person saw the old redirect URIs; approving afterwards must not cover the new ones."""
    registration = registered(http, PUBLIC_METADATA)
    client_id = registration["client_id"]
    page = flow.authorize(authorize_params(client_id, PKCE.make()))
    assert page.status_code == 200
    update = {**PUBLIC_METADATA, "redirect_uris": [LOOPBACK_REDIRECT, CLAUDE_CALLBACK]}
    assert manage(http, registration, "PUT", update).status_code == 200
    flow.code_from(flow.consent(page))  # the code still goes to the URI the person saw
    assert not Consent.objects.filter(client__client_id=client_id).exists()
    again = flow.authorize(authorize_params(client_id, PKCE.make(), redirect_uri=CLAUDE_CALLBACK))
    assert again.status_code == 200


# ---------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------
def test_deleting_a_registration_removes_the_client_and_everything_issued_to_it(http: HttpClient, flow: Flow) -> None:
    """RFC 7592 §2.3: the client, its tokens, codes and consents go; the registration token stops working."""
    registration = registered(http, PUBLIC_METADATA)
    client_id = registration["client_id"]
    tokens = flow.get_tokens(client_id)
    flow.authorize_code(client_id)  # and an outstanding code
    response = manage(http, registration, "DELETE")
    assert response.status_code == 204
    assert not Client.objects.filter(client_id=client_id).exists()
    assert not get_access_token_model().objects.filter(application__client_id=client_id).exists()
    assert not get_refresh_token_model().objects.filter(application__client_id=client_id).exists()
    assert not get_grant_model().objects.exists()
    assert not Consent.objects.exists()
    assert manage(http, registration, "GET").status_code == 401
    assert flow.refresh(client_id, tokens["refresh_token"]).status_code in (400, 401)
    event = AuditEvent.objects.get(event=AuditKind.REGISTRATION_DELETED)
    assert event.detail == {"client_id": client_id, "name": "Claude Code"}
    assert event.user is None  # the registrant acted, not the person signed in on this browser
