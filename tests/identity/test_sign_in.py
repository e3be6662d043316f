"""Who signs in: oauth2-proxy's identity headers, believed only from MCPGATE_TRUSTED_PROXIES.

Personas: Alice and Bob are of example.com; Mallory is not. Requests "from oauth2-proxy"
come from PROXY_ADDR; anyone else sending the same headers is ignored (and logged).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.test import override_settings

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, User
from tests.conftest import (
    ALICE,
    BOB,
    MALLORY,
    PKCE,
    PROXY_ADDR,
    PUBLIC,
    authorize_params,
    proxy_headers,
)

pytestmark = pytest.mark.django_db


def authorize(http: HttpClient, client: Client, **headers: str) -> Any:
    return http.get("/oauth/authorize", authorize_params(client.client_id, PKCE.make()), HTTP_HOST=PUBLIC, **headers)


def signed_in_as(response: Any) -> str | None:
    """Whom the consent page was shown to, or None if the person was sent to sign in."""
    if response.status_code == 302 and response["Location"].startswith("/accounts/login/"):
        return None
    assert response.status_code == 200, response.content
    return str(response.wsgi_request.user.username)


# ---------------------------------------------------------------------------
# Sign-in from trusted proxy headers
# ---------------------------------------------------------------------------
def test_first_sign_in_creates_the_person_with_groups(http: HttpClient, public_client: Client) -> None:
    response = authorize(http, public_client, **proxy_headers(ALICE, groups="eng, ops,eng", user="alice-sub"))
    assert signed_in_as(response) == ALICE
    alice = User.objects.get()
    assert alice.username == alice.email == ALICE
    assert alice.proxy_groups == ["eng", "ops"]
    assert alice.proxy_subject == "alice-sub"
    assert alice.last_sign_in_host == "public"
    assert not alice.has_usable_password()


def test_sign_in_is_audited_once_per_session(http: HttpClient, public_client: Client) -> None:
    authorize(http, public_client, **proxy_headers(ALICE, groups="eng"))
    authorize(http, public_client, **proxy_headers(ALICE, groups="eng"))
    event = AuditEvent.objects.get(event=AuditKind.SIGN_IN)
    assert event.email == ALICE
    assert event.host == "public"
    assert event.detail == {"groups": ["eng"]}


def test_groups_follow_the_header_on_every_request(http: HttpClient, public_client: Client) -> None:
    authorize(http, public_client, **proxy_headers(ALICE, groups="eng"))
    authorize(http, public_client, **proxy_headers(ALICE, groups="eng,admins"))
    assert User.objects.get().proxy_groups == ["admins", "eng"]


def test_email_is_compared_in_lower_case(http: HttpClient, public_client: Client) -> None:
    assert signed_in_as(authorize(http, public_client, **proxy_headers("Alice@Example.COM"))) == ALICE


def test_subject_defaults_to_the_email(http: HttpClient, public_client: Client) -> None:
    authorize(http, public_client, **proxy_headers(ALICE))
    assert User.objects.get().proxy_subject == ALICE


def test_proxy_switching_person_switches_the_session(http: HttpClient, public_client: Client) -> None:
    assert signed_in_as(authorize(http, public_client, **proxy_headers(ALICE))) == ALICE
    assert signed_in_as(authorize(http, public_client, **proxy_headers(BOB))) == BOB
    assert AuditEvent.objects.filter(event=AuditKind.SIGN_IN).count() == 2


def test_session_outlives_a_request_without_headers(http: HttpClient, public_client: Client) -> None:
    authorize(http, public_client, **proxy_headers(ALICE))
    assert signed_in_as(authorize(http, public_client, REMOTE_ADDR=PROXY_ADDR)) == ALICE


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------
def test_email_outside_allowed_domains_refused(http: HttpClient, public_client: Client) -> None:
    response = authorize(http, public_client, **proxy_headers(MALLORY))
    assert response.status_code == 403
    text = response.content.decode()
    assert "You cannot sign in here" in text
    assert "mallory@evil.test is not in an email domain allowed here." in text
    assert not User.objects.exists()
    event = AuditEvent.objects.get(event=AuditKind.SIGN_IN_REFUSED)
    assert event.user is None
    assert event.detail == {"email": MALLORY}


@pytest.mark.parametrize("email", ["alice@sub.example.com", "alice@example.com.evil.test", "@example.com"])
def test_email_domain_must_match_exactly(http: HttpClient, public_client: Client, email: str) -> None:
    assert authorize(http, public_client, **proxy_headers(email)).status_code == 403


@override_settings(MCPGATE_EMAIL_DOMAINS=["example.com", "example.org"])
def test_any_listed_email_domain_admitted(http: HttpClient, public_client: Client) -> None:
    assert signed_in_as(authorize(http, public_client, **proxy_headers("carol@example.org"))) == "carol@example.org"


def test_disabled_person_refused(http: HttpClient, public_client: Client) -> None:
    User.objects.create(username=ALICE, email=ALICE, is_active=False)
    response = authorize(http, public_client, **proxy_headers(ALICE))
    assert response.status_code == 403
    assert "The account alice@example.com is disabled." in response.content.decode()
    assert AuditEvent.objects.get(event=AuditKind.SIGN_IN_REFUSED).detail == {"email": ALICE, "reason": "disabled"}


def test_person_disabled_mid_session_refused(http: HttpClient, public_client: Client) -> None:
    authorize(http, public_client, **proxy_headers(ALICE))
    User.objects.update(is_active=False)
    assert authorize(http, public_client, **proxy_headers(ALICE)).status_code == 403


# ---------------------------------------------------------------------------
# Untrusted peers
# ---------------------------------------------------------------------------
def test_identity_headers_from_untrusted_peer_ignored_and_logged(
    http: HttpClient, public_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {**proxy_headers(ALICE, groups="admins", user="alice"), "REMOTE_ADDR": "198.51.100.9"}
    with caplog.at_level(logging.WARNING, logger="mcpgate.middleware"):
        response = authorize(http, public_client, **headers)
    assert signed_in_as(response) is None
    assert not User.objects.exists()
    assert [r.getMessage() for r in caplog.records if r.name == "mcpgate.middleware"] == [
        "ignored identity headers HTTP_X_FORWARDED_EMAIL, HTTP_X_FORWARDED_USER, HTTP_X_FORWARDED_GROUPS "
        "from untrusted peer 198.51.100.9"
    ]


def test_untrusted_peer_cannot_take_over_a_session(http: HttpClient, public_client: Client) -> None:
    authorize(http, public_client, **proxy_headers(ALICE))
    response = authorize(http, public_client, **{**proxy_headers(BOB), "REMOTE_ADDR": "198.51.100.9"})
    assert signed_in_as(response) == ALICE


@override_settings(MCPGATE_TRUSTED_PROXIES=[ipaddress.ip_network("10.0.0.0/8")])
def test_trusted_proxies_may_be_a_network(http: HttpClient, public_client: Client) -> None:
    headers = {**proxy_headers(ALICE), "REMOTE_ADDR": "10.200.1.2"}
    assert signed_in_as(authorize(http, public_client, **headers)) == ALICE


@override_settings(MCPGATE_TRUSTED_PROXIES=[ipaddress.ip_network("fd00::/8")])
def test_trusted_proxies_may_be_ipv6(http: HttpClient, public_client: Client) -> None:
    assert signed_in_as(authorize(http, public_client, **{**proxy_headers(ALICE), "REMOTE_ADDR": "fd00::7"})) == ALICE
    other = HttpClient()
    assert signed_in_as(authorize(other, public_client, **proxy_headers(BOB))) is None  # 10.9.9.9 no longer trusted


@override_settings(
    MCPGATE_EMAIL_HEADER="X-Auth-Request-Email",
    MCPGATE_USER_HEADER="X-Auth-Request-User",
    MCPGATE_GROUPS_HEADER="X-Auth-Request-Groups",
)
def test_identity_header_names_are_configurable(http: HttpClient, public_client: Client) -> None:
    headers = {
        "REMOTE_ADDR": PROXY_ADDR,
        "HTTP_X_AUTH_REQUEST_EMAIL": ALICE,
        "HTTP_X_AUTH_REQUEST_USER": "alice-sub",
        "HTTP_X_AUTH_REQUEST_GROUPS": "eng",
    }
    assert signed_in_as(authorize(http, public_client, **headers)) == ALICE
    assert User.objects.get().proxy_groups == ["eng"]
    other = HttpClient()
    assert signed_in_as(authorize(other, public_client, **proxy_headers(BOB))) is None  # old names mean nothing


# ---------------------------------------------------------------------------
# The client's address behind the proxy
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        (None, PROXY_ADDR),
        ("198.51.100.7", "198.51.100.7"),
        ("198.51.100.7, 10.9.9.9", "198.51.100.7"),  # a second trusted hop
        ("6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the client's own claim is not believed
        # A hop that is not an address ends the chain: the last one that could be named counts
        # (this used to reach the audit INSERT and answer 500 on PostgreSQL).
        ("x", PROXY_ADDR),
        ("198.51.100.7, garbage", PROXY_ADDR),
        ("garbage, 198.51.100.7", "198.51.100.7"),
        (" [2001:db8::1] ", "2001:db8::1"),
    ],
)
def test_client_address_is_the_first_untrusted_hop_from_the_right(
    http: HttpClient, public_client: Client, forwarded_for: str | None, expected: str
) -> None:
    headers = proxy_headers(ALICE)
    if forwarded_for:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    authorize(http, public_client, **headers)
    assert str(AuditEvent.objects.get(event=AuditKind.SIGN_IN).ip) == expected


def test_forwarded_for_from_untrusted_peer_ignored(http: HttpClient) -> None:
    http.post(
        "/oauth/register",
        '{"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}',
        content_type="application/json",
        HTTP_HOST=PUBLIC,
        REMOTE_ADDR="198.51.100.9",
        HTTP_X_FORWARDED_FOR="6.6.6.6",
    )
    assert Client.objects.get().registered_from == "198.51.100.9"


# ---------------------------------------------------------------------------
# No proxy configured: Django's own sign-in (make run on a laptop)
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_TRUSTED_PROXIES=[])
def test_without_proxy_authorize_falls_back_to_django_login(http: HttpClient, public_client: Client) -> None:
    response = authorize(http, public_client, **proxy_headers(ALICE))
    assert signed_in_as(response) is None
    assert not User.objects.exists()

    User.objects.create_user(username="admin", email="admin@example.com", password="a long local password")
    login_page = http.get(response["Location"], HTTP_HOST=PUBLIC)
    assert login_page.status_code == 200
    assert b"No single sign-on proxy is configured" in login_page.content
    from tests.conftest import hidden_inputs

    form = hidden_inputs(login_page.content.decode())
    signed_in = http.post(
        "/accounts/login/",
        {**form, "username": "admin", "password": "a long local password"},
        HTTP_HOST=PUBLIC,
        HTTP_ORIGIN="https://mcp.example.com",
    )
    assert signed_in.status_code == 302
    assert signed_in["Location"].startswith("/oauth/authorize?")
    assert signed_in_as(http.get(signed_in["Location"], HTTP_HOST=PUBLIC)) == "admin"
