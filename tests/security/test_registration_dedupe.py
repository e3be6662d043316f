"""One registrant never gets control of another's client, even when both register identically from one address.

Behind a NAT, a VPN or a load balancer everybody shares an address, so two people's MCP
clients send byte-identical registrations from it. Each gets a client and a registration
access token of its own (RFC 7591 §3.2.1, RFC 7592 §1): no registration is handed back to
someone else, and no token is replaced by another registrant's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client as HttpClient

from oauth_ext.models import Client
from tests.conftest import CLAUDE_CALLBACK, LOOPBACK_REDIRECT, PUBLIC, register

pytestmark = pytest.mark.django_db

# What Claude Code sends, identically, from every machine behind the office NAT.
PUBLIC_METADATA = {
    "client_name": "Claude Code",
    "redirect_uris": ["http://localhost:41234/callback"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "software_id": "claude-code",
    "software_version": "2.1.0",
}
OFFICE_NAT = "198.51.100.77"


def registered(http: HttpClient) -> dict[str, Any]:
    response = register(http, PUBLIC_METADATA, ip=OFFICE_NAT)
    assert response.status_code == 201, response.content
    return dict(response.json())


def manage(http: HttpClient, client_id: str, token: str, method: str = "GET", metadata: Any = None) -> Any:
    extra: dict[str, Any] = {"HTTP_HOST": PUBLIC, "HTTP_AUTHORIZATION": f"Bearer {token}"}
    if metadata is None:
        return http.generic(method, f"/oauth/register/{client_id}", **extra)
    return http.generic(
        method, f"/oauth/register/{client_id}", json.dumps(metadata), content_type="application/json", **extra
    )


def test_identical_registrations_from_one_address_get_separate_clients(http: HttpClient) -> None:
    alice, bob = registered(http), registered(http)
    assert alice["client_id"] != bob["client_id"]
    assert alice["registration_access_token"] != bob["registration_access_token"]
    assert Client.objects.filter(registered_from=OFFICE_NAT).count() == 2


def test_a_later_identical_registration_leaves_the_first_registrants_token_working(http: HttpClient) -> None:
    alice = registered(http)
    registered(http)  # Bob, behind the same NAT, a moment later
    response = manage(http, alice["client_id"], alice["registration_access_token"])
    assert response.status_code == 200
    assert response.json()["client_id"] == alice["client_id"]


def test_a_registration_token_controls_only_its_own_client(http: HttpClient) -> None:
    alice, bob = registered(http), registered(http)
    before = Client.objects.get(client_id=alice["client_id"]).redirect_uris
    takeover = {**PUBLIC_METADATA, "redirect_uris": [CLAUDE_CALLBACK]}
    for method, metadata in (("GET", None), ("PUT", takeover), ("DELETE", None)):
        response = manage(http, alice["client_id"], bob["registration_access_token"], method, metadata)
        assert response.status_code == 401, method
        assert response.json() == {"error": "invalid_token", "error_description": "Token does not match client_id"}
    client = Client.objects.get(client_id=alice["client_id"])
    assert client.redirect_uris == before == "http://localhost:41234/callback"
    assert manage(http, alice["client_id"], alice["registration_access_token"]).status_code == 200


def test_identical_registrations_each_keep_their_own_redirect_uris_after_an_update(http: HttpClient) -> None:
    alice, bob = registered(http), registered(http)
    update = {**PUBLIC_METADATA, "redirect_uris": [LOOPBACK_REDIRECT]}
    assert manage(http, bob["client_id"], bob["registration_access_token"], "PUT", update).status_code == 200
    assert Client.objects.get(client_id=alice["client_id"]).redirect_uris == "http://localhost:41234/callback"
    assert Client.objects.get(client_id=bob["client_id"]).redirect_uris == LOOPBACK_REDIRECT
