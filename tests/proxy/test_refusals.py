"""What the deployed shape refuses: people outside the domain, forged identity headers, a token
on the wrong host, a revoked token. Mallory (mallory@evil.test) is outside the organisation."""

from __future__ import annotations

import pytest

from oauth_ext.models import User
from tests.e2e.oauthclient import PKCE, authorization_query, discover, json_of

from .browser import browse
from .deployment import UNTRUSTED_ADDRESS, Deployment
from .flows import LOOPBACK_REDIRECT, loopback_tokens, register
from .mcpclient import mcp_status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ALICE_HEADERS = {"X-Forwarded-Email": "alice@example.com", "X-Forwarded-User": "alice", "X-Forwarded-Groups": "eng"}


def authorize_path(client_id: str, resource: str) -> str:
    return "/oauth/authorize?" + authorization_query(
        client_id, LOOPBACK_REDIRECT, resource, "s1", PKCE.make().challenge
    )


def registered_client(deployed: Deployment, name: str) -> str:
    with deployed.client() as http:
        discovery = discover(http, deployed.internal + "/mcp")
        return str(register(http, discovery, name, LOOPBACK_REDIRECT, "none")["client_id"])


def test_a_person_outside_the_email_domain_is_stopped_by_oauth2_proxy(deployed: Deployment) -> None:
    client_id = registered_client(deployed, "refusal: domain")
    path = authorize_path(client_id, deployed.internal + "/mcp")
    seen_before = deployed.gunicorns["a"].log().count("/oauth/authorize")
    with deployed.browser("mallory@evil.test") as browser:
        page = browse(browser, deployed.internal + path, stop_at=LOOPBACK_REDIRECT)
    # oauth2-proxy's callback refuses the address; mcpgate never hears of Mallory.
    assert page.status_code == 403, page.text
    assert "/oauth2/callback" in str(page.url)
    assert "mallory@evil.test" in deployed.mock.sign_ins
    assert not User.objects.filter(email="mallory@evil.test").exists()
    assert deployed.gunicorns["a"].log().count("/oauth/authorize") == seen_before


def test_identity_headers_straight_to_gunicorn_from_an_untrusted_address_are_ignored(deployed: Deployment) -> None:
    client_id = registered_client(deployed, "refusal: forged")
    path = authorize_path(client_id, deployed.internal + "/mcp")
    with deployed.direct("a", local_address=UNTRUSTED_ADDRESS) as direct:
        page = direct.get(path, headers=ALICE_HEADERS)
    # Not Alice's consent page: Django's own sign-in, as for anyone anonymous.
    assert page.status_code == 302, page.text
    assert page.headers["location"].startswith("/accounts/login/"), page.headers["location"]
    assert "ignored identity headers HTTP_X_FORWARDED_EMAIL" in deployed.gunicorns["a"].log()
    assert f"untrusted peer {UNTRUSTED_ADDRESS}" in deployed.gunicorns["a"].log()
    assert not User.objects.filter(email="alice@example.com").exists()


def test_identity_headers_sent_to_oauth2_proxy_do_not_sign_anyone_in(deployed: Deployment) -> None:
    """Through the proxy without a session, forged headers get the provider's sign-in, not consent."""
    client_id = registered_client(deployed, "refusal: forged via proxy")
    with deployed.client() as http:
        page = http.get(authorize_path(client_id, deployed.internal + "/mcp"), headers=ALICE_HEADERS)
    assert page.status_code == 302, page.text
    assert page.headers["location"].startswith(deployed.mock.issuer + "/authorize?"), page.headers["location"]
    assert not User.objects.filter(email="alice@example.com").exists()


def test_a_token_minted_on_the_internal_host_is_refused_on_the_public_host(deployed: Deployment) -> None:
    with deployed.browser("alice@example.com") as browser:
        _, tokens = loopback_tokens(deployed, browser, "refusal: host")
    with deployed.client("internal") as internal, deployed.client("public") as public:
        assert mcp_status(internal, tokens["access_token"]) == 200
        assert mcp_status(public, tokens["access_token"]) == 401


def test_a_revoked_token_stops_mcp_at_once(deployed: Deployment) -> None:
    with deployed.browser("alice@example.com") as browser:
        client_id, tokens = loopback_tokens(deployed, browser, "refusal: revoked")
    with deployed.client("internal") as http:
        assert mcp_status(http, tokens["access_token"]) == 200
        revoked = http.post("/oauth/revoke", data={"token": tokens["access_token"], "client_id": client_id})
        assert revoked.status_code == 200, revoked.text
        assert mcp_status(http, tokens["access_token"]) == 401
        # The refresh token of a revoked grant's family can be revoked too; then nothing is left.
        revoked = http.post("/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": client_id})
        assert revoked.status_code == 200, revoked.text
        again = http.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id},
        )
        assert (again.status_code, json_of(again)["error"]) == (400, "invalid_grant")


def test_a_forged_outside_address_from_the_trusted_proxy_is_refused_by_mcpgate(deployed: Deployment) -> None:
    """Defence in depth: were oauth2-proxy misconfigured (or bypassed from its own host) and an
    address outside the domain arrived in X-Forwarded-Email, mcpgate refuses it itself."""
    client_id = registered_client(deployed, "refusal: outside via trusted")
    with deployed.direct("a", local_address="127.0.0.1") as trusted:
        page = trusted.get(
            authorize_path(client_id, deployed.internal + "/mcp"), headers={"X-Forwarded-Email": "mallory@evil.test"}
        )
    assert page.status_code == 403, page.text
    assert "mallory@evil.test is not in an email domain allowed here." in page.text
    assert not User.objects.filter(email="mallory@evil.test").exists()
