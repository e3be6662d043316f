"""Two gunicorn replicas on one database, each behind its own oauth2-proxy (a load balancer's two
targets): tokens, refresh rotation and revocation hold whichever replica a request lands on."""

from __future__ import annotations

import httpx2
import pytest

from tests.e2e.oauthclient import Grant, discover, json_of

from .deployment import Deployment
from .flows import LOOPBACK_REDIRECT, grant, register
from .mcpclient import mcp_status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def token(http: httpx2.Client, data: dict[str, str]) -> httpx2.Response:
    response = http.post("/oauth/token", data=data)
    assert response.headers.get("cache-control") == "no-store"
    return response


def redeem(http: httpx2.Client, code: Grant, client_id: str, resource: str) -> httpx2.Response:
    """The authorization code grant at ``http``'s own replica (not the discovered token endpoint)."""
    return token(
        http,
        {
            "grant_type": "authorization_code",
            "code": code.code,
            "redirect_uri": LOOPBACK_REDIRECT,
            "code_verifier": code.pkce.verifier,
            "client_id": client_id,
            "resource": resource,
        },
    )


def test_tokens_rotation_and_revocation_hold_across_replicas(deployed: Deployment) -> None:
    with (
        deployed.client() as a,
        deployed.via_replica_b() as b,
        deployed.browser("alice@example.com", groups="eng") as browser,
    ):
        discovery = discover(a, deployed.internal + "/mcp")
        client_id = str(register(a, discovery, "replicas", LOOPBACK_REDIRECT, "none")["client_id"])
        code = grant(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)  # through A
        b_log_before = deployed.gunicorns["b"].log().count("/oauth/token")

        # The code minted by A is redeemed at B; the token works on both.
        minted = redeem(b, code, client_id, discovery.resource)
        assert minted.status_code == 200, minted.text
        first = json_of(minted)
        assert deployed.gunicorns["b"].log().count("/oauth/token") > b_log_before  # B really served it
        assert mcp_status(a, first["access_token"]) == 200
        assert mcp_status(b, first["access_token"]) == 200

        # Rotation at B; the rotated-out refresh token is reuse at A: refused, and the family revoked.
        rotated = token(
            b, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}
        )
        assert rotated.status_code == 200, rotated.text
        second = json_of(rotated)
        assert second["refresh_token"] != first["refresh_token"]
        assert mcp_status(a, second["access_token"]) == 200
        replay = token(
            a, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}
        )
        assert (replay.status_code, json_of(replay)["error"]) == (400, "invalid_grant")
        assert mcp_status(b, second["access_token"]) == 401
        assert mcp_status(a, second["access_token"]) == 401

        # A fresh grant; revoked at B, refused at A at once.
        code = grant(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)
        third = json_of(redeem(a, code, client_id, discovery.resource))
        assert mcp_status(b, third["access_token"]) == 200
        revoked = b.post("/oauth/revoke", data={"token": third["access_token"], "client_id": client_id})
        assert revoked.status_code == 200, revoked.text
        assert mcp_status(a, third["access_token"]) == 401
        assert mcp_status(b, third["access_token"]) == 401
