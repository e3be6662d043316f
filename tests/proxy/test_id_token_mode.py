"""MCPGATE_IDENTITY_MODE=id_token through the real oauth2-proxy: mcpgate verifies the provider's ID
token that oauth2-proxy forwards in X-Forwarded-Id-Token (deploy/oauth2-proxy.yaml), and believes
no bare X-Forwarded-Email, not even from the trusted proxy's address.

Personas: Alice (alice@example.com, Workspace account of example.com); Bob (bob@example.com);
Gina (gina@example.com, a consumer Google account using that address: no ``hd``).
"""

from __future__ import annotations

import pytest

from oauth_ext.models import User
from tests.e2e.oauthclient import PKCE, authorization_query, discover

from . import mockoidc
from .browser import approve, browse
from .deployment import Deployment
from .flows import LOOPBACK_REDIRECT, register
from .mcpclient import sdk_oauth_whoami

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def authorize_url(deployed: Deployment, name: str) -> str:
    with deployed.client() as http:
        discovery = discover(http, deployed.internal + "/mcp")
        client_id = register(http, discovery, name, LOOPBACK_REDIRECT, "none")["client_id"]
    query = authorization_query(client_id, LOOPBACK_REDIRECT, discovery.resource, "s1", PKCE.make().challenge)
    return discovery.endpoint("authorization") + "?" + query


def test_claude_code_signs_in_with_a_verified_id_token(deployed_id_token: Deployment) -> None:
    deployed = deployed_id_token
    with deployed.browser("alice@example.com", groups="eng") as browser:
        run = sdk_oauth_whoami(
            deployed.internal + "/mcp",
            redirect_uri=LOOPBACK_REDIRECT,
            client_name="Claude Code (id_token)",
            approve=lambda url: approve(browser, url, LOOPBACK_REDIRECT),
        )
    assert (run.whoami["email"], run.whoami["groups"]) == ("alice@example.com", ["eng"])
    # The subject recorded is the ID token's sub (the provider's), not oauth2-proxy's user header.
    alice = User.objects.get(email="alice@example.com")
    assert alice.proxy_subject == mockoidc.Person("alice@example.com", "example.com").sub


def test_an_account_without_the_hosted_domain_is_refused_by_mcpgate(deployed_id_token: Deployment) -> None:
    """oauth2-proxy admits gina@example.com (the address is in the domain); the ID token says her
    account is not the organisation's (no hd), so mcpgate refuses her."""
    deployed = deployed_id_token
    with deployed.browser("gina@example.com", hd="") as browser:
        page = browse(browser, authorize_url(deployed, "id_token: no hd"), stop_at=LOOPBACK_REDIRECT)
    assert page.status_code == 403, page.text
    assert "not managed by an organisation allowed here" in page.text
    assert not User.objects.filter(email="gina@example.com").exists()


def test_a_forged_email_header_from_the_trusted_address_signs_nobody_in(deployed_id_token: Deployment) -> None:
    """Straight to gunicorn from 127.0.0.1 (oauth2-proxy's own address, so trusted): an email
    header alone is ignored; with a made-up ID token, refused."""
    deployed = deployed_id_token
    path = authorize_url(deployed, "id_token: forged").removeprefix(deployed.internal)
    forged = mockoidc.MockOIDC(client_id="x", client_secret="y", issuer=deployed.mock.issuer)  # another key
    fake_token = forged.id_token(
        mockoidc.Person("alice@example.com", "example.com"), "", audience=deployed.mock.client_id
    )
    with deployed.direct("a", local_address="127.0.0.1") as trusted:
        bare = trusted.get(path, headers={"X-Forwarded-Email": "alice@example.com"})
        assert bare.status_code == 302
        assert bare.headers["location"].startswith("/accounts/login/")
        signed_elsewhere = trusted.get(
            path, headers={"X-Forwarded-Email": "alice@example.com", "X-Forwarded-Id-Token": fake_token}
        )
        assert signed_elsewhere.status_code == 403, signed_elsewhere.text
    assert not User.objects.filter(email="alice@example.com").exists()
    assert "ignored X-Forwarded-Email without an ID token" in deployed.gunicorns["a"].log()


def test_oauth2_proxy_replaces_identity_headers_a_signed_in_person_sends(deployed_id_token: Deployment) -> None:
    """Bob, signed in, sends Alice's email and a real ID token of Alice's: oauth2-proxy strips both
    and forwards his own; he is Bob."""
    deployed = deployed_id_token
    alices_token = deployed.mock.id_token(mockoidc.Person("alice@example.com", "example.com"), "")
    with deployed.browser("bob@example.com") as browser:
        browser.headers.update({"X-Forwarded-Email": "alice@example.com", "X-Forwarded-Id-Token": alices_token})
        page = browse(browser, authorize_url(deployed, "id_token: replaced"), stop_at=LOOPBACK_REDIRECT)
    assert page.status_code == 200, page.text  # Bob's consent page
    assert list(User.objects.values_list("email", flat=True)) == ["bob@example.com"]
