"""Flooding the authorization server's doors: every one is rate-limited, and a refusal changes nothing.

Registration, the token endpoint (per address and per client), revocation, the authorization
endpoint (per person, per address before sign-in), the password sign-in pages, and their legacy
root aliases. A refusal is 429 with ``Retry-After`` (the seconds left in the window) and the
route's shape: RFC 6749 JSON with ``no-store`` on OAuth endpoints, a page on browser routes.
Behind a refusal no view runs: no client registered, no token issued, no code spent, no audit row
but one ``rate_limited`` row per window and key. (/mcp: tests/mcp_bridge/test_rate_limit.py.
Under concurrency against gunicorn: test_rate_limits_under_load.py.)

django-ratelimit's clock is stopped for each test (tests/conftest.py ``ratelimit_clock``), so no
test can straddle a window's end; one that needs the next window moves the clock on.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.test import override_settings
from oauth2_provider.models import get_access_token_model, get_grant_model

from audit.models import AuditEvent, AuditKind
from mcpgate import ratelimit
from oauth_ext.models import Client, User
from tests.conftest import (
    CLAUDE_CALLBACK,
    CLIENT_ADDR,
    PROXY_ADDR,
    PUBLIC,
    Flow,
    RateLimitClock,
    authorize_params,
    basic_auth,
    proxy_headers,
    register,
)
from tests.e2e.oauthclient import PKCE
from tests.personas import ALICE, BOB

pytestmark = pytest.mark.django_db

OTHER_ADDR = "198.51.100.23"
AT_CLIENT = {"HTTP_HOST": PUBLIC, "REMOTE_ADDR": CLIENT_ADDR}


def seconds(n: int) -> str:
    return "1 second" if n == 1 else f"{n} seconds"


def assert_oauth_429(response: Any, description: str) -> int:
    """The refusal of an OAuth endpoint; returns its Retry-After."""
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": description.format(wait=seconds(retry_after)),
    }
    return retry_after


def assert_page_429(response: Any, message: str) -> int:
    """The refusal of a page people see; returns its Retry-After."""
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"].startswith("text/html")
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    page = response.content.decode()
    assert "<h1>Too many requests</h1>" in page
    assert message.format(wait=seconds(retry_after)) in page
    return retry_after


def rate_limited_rows() -> list[dict[str, Any]]:
    return list(AuditEvent.objects.filter(event=AuditKind.RATE_LIMITED).values("detail", "ip", "user__email"))


def metadata(n: int) -> dict[str, Any]:
    """A distinct public client each time (identical ones would be handed back, not registered)."""
    return {"client_name": f"Client {n}", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}


# ---------------------------------------------------------------------------
# Registration, per address
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=2)
def test_registration_over_the_limit_is_429_and_registers_nothing(http: HttpClient, caplog) -> None:
    for n in range(2):
        assert register(http, metadata(n)).status_code == 201

    response = register(http, metadata(2))

    retry_after = assert_oauth_429(response, "Too many registrations from this address; try again in {wait}.")
    assert retry_after <= 60
    assert Client.objects.count() == 2
    assert rate_limited_rows() == [
        {"detail": {"route": "register", "key": "address", "rate": "2/m"}, "ip": CLIENT_ADDR, "user__email": None}
    ]
    assert not AuditEvent.objects.filter(event=AuditKind.REGISTER_REFUSED).exists()
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mcpgate.ratelimit"]
    assert logged == [(logging.WARNING, "rate limited: route=register key=address rate=2/m")]


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=2)
def test_the_legacy_register_alias_is_the_same_door(http: HttpClient) -> None:
    register(http, metadata(0))
    http.post("/register", metadata(1), content_type="application/json", HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR)

    response = http.post(
        "/register", metadata(2), content_type="application/json", HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR
    )

    assert_oauth_429(response, "Too many registrations from this address; try again in {wait}.")
    assert Client.objects.count() == 2


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=2)
def test_registration_limit_is_per_address(http: HttpClient) -> None:
    for n in range(3):
        register(http, metadata(n))

    assert register(http, metadata(9), ip=OTHER_ADDR).status_code == 201


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=2)
def test_registration_is_admitted_again_in_the_next_window(http: HttpClient, ratelimit_clock: RateLimitClock) -> None:
    for n in range(3):
        register(http, metadata(n))
    assert register(http, metadata(3)).status_code == 429

    ratelimit_clock.advance(61)
    assert register(http, metadata(4)).status_code == 201


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=2)
def test_only_the_first_refusal_of_a_window_is_audited(http: HttpClient, caplog) -> None:
    for n in range(10):
        register(http, metadata(n))

    assert len(rate_limited_rows()) == 1
    refusals = [r for r in caplog.records if r.getMessage().startswith("rate limited:")]
    assert len(refusals) == 8  # every refusal is a log line, for metrics


# ---------------------------------------------------------------------------
# Which address: the client's, as the trusted proxy says; a /64 for IPv6
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1)
def test_behind_the_trusted_proxy_each_client_address_has_its_own_budget(http: HttpClient) -> None:
    def through_proxy(n: int, client: str) -> Any:
        return http.post(
            "/oauth/register",
            metadata(n),
            content_type="application/json",
            HTTP_HOST=PUBLIC,
            REMOTE_ADDR=PROXY_ADDR,
            HTTP_X_FORWARDED_FOR=client,
        )

    assert through_proxy(0, "203.0.113.1").status_code == 201
    assert through_proxy(1, "203.0.113.2").status_code == 201
    assert through_proxy(2, "203.0.113.1").status_code == 429


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1)
def test_a_forged_forwarded_for_does_not_buy_a_new_budget(http: HttpClient) -> None:
    """X-Forwarded-For from anyone but the trusted proxy is ignored: the peer's address counts."""

    def forged(n: int) -> Any:
        return http.post(
            "/oauth/register",
            metadata(n),
            content_type="application/json",
            HTTP_HOST=PUBLIC,
            REMOTE_ADDR=CLIENT_ADDR,
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}",
        )

    assert forged(1).status_code == 201
    assert forged(2).status_code == 429
    assert Client.objects.count() == 1


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1)
def test_addresses_of_one_64_share_a_budget(http: HttpClient) -> None:
    assert register(http, metadata(0), ip="2001:db8:1:2::1").status_code == 201
    assert register(http, metadata(1), ip="2001:db8:1:2:ffff::9").status_code == 429
    assert register(http, metadata(2), ip="2001:db8:1:3::1").status_code == 201


def test_address_keys() -> None:
    assert ratelimit.address_key("203.0.113.7") == "203.0.113.7"
    assert ratelimit.address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert ratelimit.address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert ratelimit.address_key("") is None
    assert ratelimit.address_key("not-an-address") == "not-an-address"


# ---------------------------------------------------------------------------
# The token endpoint, per address and per client
# ---------------------------------------------------------------------------
def token_request(
    http: HttpClient, client_id: str, ip: str = CLIENT_ADDR, path: str = "/oauth/token", **extra: Any
) -> Any:
    data = {"grant_type": "authorization_code", "code": "not-a-code", "client_id": client_id}
    return http.post(path, data, HTTP_HOST=PUBLIC, REMOTE_ADDR=ip, **extra)


@override_settings(MCPGATE_RATE_LIMIT_TOKEN="2/h")
def test_token_requests_over_the_address_limit_are_429_and_reach_no_view(http: HttpClient, public_client) -> None:
    for _ in range(2):
        assert token_request(http, public_client.client_id).status_code == 400

    response = token_request(http, public_client.client_id)

    assert_oauth_429(response, "Too many token requests from this address; try again in {wait}.")
    assert AuditEvent.objects.filter(event=AuditKind.TOKEN_ERROR).count() == 2
    assert rate_limited_rows() == [
        {"detail": {"route": "token", "key": "address", "rate": "2/h"}, "ip": CLIENT_ADDR, "user__email": None}
    ]


@override_settings(MCPGATE_RATE_LIMIT_TOKEN="2/h")
def test_the_legacy_token_alias_is_the_same_door(http: HttpClient, public_client) -> None:
    token_request(http, public_client.client_id)
    token_request(http, public_client.client_id, path="/token")

    assert token_request(http, public_client.client_id, path="/token").status_code == 429


@override_settings(MCPGATE_RATE_LIMIT_TOKEN_CLIENT="2/h")
def test_token_requests_for_one_client_are_limited_across_addresses(
    http: HttpClient, public_client, make_client
) -> None:
    assert token_request(http, public_client.client_id, ip="192.0.2.1").status_code == 400
    assert token_request(http, public_client.client_id, ip="192.0.2.2").status_code == 400

    response = token_request(http, public_client.client_id, ip="192.0.2.3")

    assert_oauth_429(response, "Too many token requests for this client; try again in {wait}.")
    [row] = rate_limited_rows()
    assert row["detail"] == {"route": "token", "key": "client", "rate": "2/h", "client_id": public_client.client_id}
    assert token_request(http, make_client().client_id, ip="192.0.2.3").status_code == 400


@override_settings(MCPGATE_RATE_LIMIT_TOKEN_CLIENT="2/h")
def test_a_client_named_by_basic_credentials_counts_the_same(http: HttpClient, confidential_client) -> None:
    client, _secret = confidential_client
    data = {"grant_type": "authorization_code", "code": "not-a-code", "redirect_uri": "https://x.example/cb"}
    for ip in ("192.0.2.1", "192.0.2.2"):
        http.post(
            "/oauth/token",
            data,
            HTTP_HOST=PUBLIC,
            REMOTE_ADDR=ip,
            HTTP_AUTHORIZATION=basic_auth(client.client_id, "wrong"),
        )

    response = token_request(http, client.client_id, ip="192.0.2.3")

    assert_oauth_429(response, "Too many token requests for this client; try again in {wait}.")


@override_settings(MCPGATE_RATE_LIMIT_TOKEN="1/h", MCPGATE_RATE_LIMIT_TOKEN_CLIENT="3/h")
def test_requests_refused_by_the_address_limit_do_not_spend_the_clients_budget(http: HttpClient, public_client) -> None:
    for _ in range(5):
        token_request(http, public_client.client_id, ip="192.0.2.1")

    assert token_request(http, public_client.client_id, ip="192.0.2.2").status_code == 400
    assert token_request(http, public_client.client_id, ip="192.0.2.3").status_code == 400


@override_settings(MCPGATE_RATE_LIMIT_TOKEN_CLIENT="1/h")
def test_a_refused_code_exchange_issues_nothing_and_spends_nothing(http: HttpClient, flow: Flow, public_client) -> None:
    query, pkce, _params = flow.authorize_code(public_client.client_id)
    token_request(http, public_client.client_id, ip="192.0.2.9")  # the client's one request this hour

    response = flow.exchange(public_client.client_id, query["code"], pkce)

    assert response.status_code == 429
    assert not get_access_token_model().objects.filter(application=public_client).exists()
    assert get_grant_model().objects.filter(application=public_client).count() == 1


# ---------------------------------------------------------------------------
# Revocation, per address
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_RATE_LIMIT_REVOKE="2/h")
def test_revocation_over_the_limit_is_429(http: HttpClient, public_client) -> None:
    data = {"token": "not-a-token", "client_id": public_client.client_id}
    for _ in range(2):
        assert http.post("/oauth/revoke", data, HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR).status_code == 200

    response = http.post("/oauth/revoke", data, HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR)

    assert_oauth_429(response, "Too many revocation requests from this address; try again in {wait}.")


# ---------------------------------------------------------------------------
# The authorization endpoint: per person once signed in, per address before
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_RATE_LIMIT_AUTHORIZE="2/h")
def test_authorization_over_a_persons_limit_is_a_429_page_and_shows_no_consent(http: HttpClient, public_client) -> None:
    flow = Flow(http)
    for _ in range(2):
        assert flow.authorize(authorize_params(public_client.client_id, PKCE.make())).status_code == 200

    response = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))

    assert_page_429(response, "Too many authorization requests from you; try again in {wait}.")
    assert AuditEvent.objects.filter(event=AuditKind.CONSENT_SHOWN).count() == 2
    assert rate_limited_rows() == [
        {
            "detail": {"route": "authorize", "key": "person", "rate": "2/h"},
            "ip": PROXY_ADDR,
            "user__email": ALICE,
        }
    ]


@override_settings(MCPGATE_RATE_LIMIT_AUTHORIZE="2/h")
def test_people_behind_one_proxy_address_each_have_their_own_budget(http: HttpClient, public_client) -> None:
    flow = Flow(http)
    for _ in range(3):
        flow.authorize(authorize_params(public_client.client_id, PKCE.make()), email=ALICE)

    response = flow.authorize(authorize_params(public_client.client_id, PKCE.make()), email=BOB)

    assert response.status_code == 200


@override_settings(MCPGATE_RATE_LIMIT_AUTHORIZE="2/h")
def test_the_legacy_authorize_alias_is_the_same_door(http: HttpClient, public_client) -> None:
    flow = Flow(http)
    flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    query = "&".join(f"{k}={v}" for k, v in authorize_params(public_client.client_id, PKCE.make()).items())

    response = http.get(f"/authorize?{query}", HTTP_HOST=PUBLIC, **proxy_headers(ALICE))

    assert response.status_code == 429


@override_settings(MCPGATE_RATE_LIMIT_AUTHORIZE="2/h")
def test_before_sign_in_authorization_is_limited_per_address(http: HttpClient, public_client) -> None:
    """No proxy identity: Django's login is asked for (302); the address is what counts."""
    params = authorize_params(public_client.client_id, PKCE.make())
    for _ in range(2):
        assert http.get("/oauth/authorize", params, HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR).status_code == 302

    response = http.get("/oauth/authorize", params, HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR)

    assert_page_429(response, "Too many authorization requests from this address; try again in {wait}.")


# ---------------------------------------------------------------------------
# Password sign-in pages, per address
# ---------------------------------------------------------------------------
@pytest.fixture
def operator() -> User:
    return User.objects.create_user("op@example.com", "op@example.com", "correct horse battery staple")


@override_settings(MCPGATE_RATE_LIMIT_LOGIN="3/h")
@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_password_guessing_is_limited_and_even_the_right_password_is_then_refused(path: str, operator: User) -> None:
    http = HttpClient()  # no CSRF enforcement: what is counted is the attempt
    for guess in ("123456", "password", "letmein"):
        response = http.post(path, {"username": operator.username, "password": guess}, **AT_CLIENT)
        assert response.status_code == 200  # the form again, with an error

    response = http.post(path, {"username": operator.username, "password": "correct horse battery staple"}, **AT_CLIENT)

    assert_page_429(response, "Too many sign-in attempts from this address; try again in {wait}.")
    assert "_auth_user_id" not in http.session
    assert http.get(path, **AT_CLIENT).status_code == 200  # reading the form is not an attempt


@override_settings(MCPGATE_RATE_LIMIT_LOGIN="2/h")
def test_the_two_sign_in_pages_share_one_budget(operator: User) -> None:
    http = HttpClient()
    http.post("/accounts/login/", {"username": "x", "password": "y"}, **AT_CLIENT)
    http.post("/admin/login/", {"username": "x", "password": "y"}, **AT_CLIENT)

    assert http.post("/accounts/login/", {"username": "x", "password": "y"}, **AT_CLIENT).status_code == 429


# ---------------------------------------------------------------------------
# Everything else is not counted; a broken cache admits
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1, MCPGATE_RATE_LIMIT_TOKEN="1/h")
def test_discovery_and_other_routes_are_not_counted(http: HttpClient) -> None:
    for _ in range(5):
        assert http.get("/.well-known/oauth-authorization-server", HTTP_HOST=PUBLIC).status_code == 200
        assert http.get("/oauth/token", HTTP_HOST=PUBLIC).status_code != 429
        assert http.get("/healthz", HTTP_HOST=PUBLIC).status_code == 200
    assert register(http, metadata(0)).status_code == 201


@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1)
def test_a_broken_cache_admits_and_says_so(http: HttpClient, monkeypatch, caplog) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr("mcpgate.ratelimit.get_usage", unreachable)

    assert register(http, metadata(0)).status_code == 201
    assert register(http, metadata(1)).status_code == 201
    assert "rate limit mcpgate.register.address not counted (ConnectionError: " in caplog.text


def test_retry_after_is_the_time_left_in_the_window(http: HttpClient) -> None:
    with override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1):
        register(http, metadata(0))
        response = register(http, metadata(1))
        left = ratelimit.peek(ratelimit.REGISTER, CLIENT_ADDR)

    assert left is not None
    assert int(response["Retry-After"]) - left.retry_after in (0, 1)
