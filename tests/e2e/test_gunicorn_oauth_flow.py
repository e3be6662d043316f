"""The authorization server under gunicorn, driven by a real client over TCP (issue 2, "Done means").

Discovery from the well-known documents → registration → sign-in through oauth2-proxy's headers →
the consent form → code exchange with PKCE and ``resource`` → refresh → reuse of a rotated-out
refresh token refused (and its whole family with it). On both hosts, whose issuer and resource
must follow the host. Also: two concurrent refreshes with one refresh token (the grace window),
and an operator-made confidential client (Gemini Enterprise) with both secret methods.

Alice (alice@example.com, group "eng") is the person; the test process is also oauth2-proxy.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

import httpx2
import pytest
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from oauth_ext.models import Client, User

from .oauthclient import ALICE, Discovery, authorize, discover, exchange, json_of, refresh, register, submit_form
from .server import GunicornServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GRACE_SECONDS = 2
LOOPBACK_REDIRECT = "http://127.0.0.1:33418/callback"
GEMINI_REDIRECT = "https://vertexaisearch.cloud.google.com/oauth-redirect"


@pytest.fixture(scope="module")
def gunicorn_env() -> dict[str, str]:
    # Short enough to wait out in a test, long enough for two concurrent requests on a busy machine.
    return {"MCPGATE_REFRESH_GRACE_SECONDS": str(GRACE_SECONDS)}


def checksum(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register_public_client(http: httpx2.Client, discovery: Discovery, name: str) -> str:
    """RFC 7591 registration as mcp-remote does it: a native public client with a loopback redirect."""
    registered = register(http, discovery, name, LOOPBACK_REDIRECT, "none", application_type="native")
    assert registered["token_endpoint_auth_method"] == "none"
    assert registered["redirect_uris"] == [LOOPBACK_REDIRECT]
    assert "client_secret" not in registered
    return str(registered["client_id"])


def assert_tokens(response: httpx2.Response) -> dict[str, Any]:
    """RFC 6749 §5.1 success: a Bearer token for the basic scope, an hour long, with a refresh token."""
    assert response.status_code == 200, response.text
    tokens = json_of(response)
    assert tokens["token_type"] == "Bearer"
    assert 3590 <= tokens["expires_in"] <= 3600
    assert tokens["scope"] == "mcp"
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    return tokens


def assert_invalid_grant(response: httpx2.Response) -> None:
    assert response.status_code == 400, response.text
    assert json_of(response)["error"] == "invalid_grant"


def stored_access_token(token: str) -> Any:
    """The access token's row: found by checksum only, since the value itself is not stored."""
    row = get_access_token_model().objects.filter(token_checksum=checksum(token)).first()
    assert row is None or token not in (row.token or ""), "access token stored in clear"
    return row


# ---------------------------------------------------------------------------
# The flow of the issue, on each host
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["internal", "public"])
def test_real_client_flow_with_rotation_and_reuse_detection(gunicorn_server: GunicornServer, host: str) -> None:
    base = gunicorn_server.base(host)
    with gunicorn_server.client(host) as client, gunicorn_server.client(host, headers=ALICE) as browser:
        # Discovery (checklist D1-D4, S1-S6): everything follows the host the client used.
        discovery = discover(client, base + "/mcp")
        assert discovery.resource == base + "/mcp"
        assert discovery.resource_metadata["authorization_servers"] == [base]
        assert discovery.issuer == base
        metadata = discovery.server_metadata
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert "none" in metadata["token_endpoint_auth_methods_supported"]
        assert metadata["authorization_response_iss_parameter_supported"] is True
        for name in ("authorization", "token", "registration"):
            assert discovery.endpoint(name).startswith(base + "/"), metadata

        # Registration, then Alice signs in at oauth2-proxy and consents.
        client_id = register_public_client(client, discovery, f"e2e on {host}")
        grant = authorize(
            browser,
            discovery,
            client_id=client_id,
            redirect_uri=LOOPBACK_REDIRECT,
            consent_text=(f"e2e on {host}", "127.0.0.1:33418", discovery.resource),
        )
        alice = User.objects.get(username="alice@example.com")
        assert alice.proxy_groups == ["eng"]

        # The code, with its PKCE verifier and resource, for an audience-bound token.
        tokens = assert_tokens(exchange(client, discovery, grant, client_id=client_id))
        row = stored_access_token(tokens["access_token"])
        assert row is not None
        assert row.resource == [discovery.resource]
        assert row.user == alice
        assert row.application.client_id == client_id

        # Refresh rotates: a new refresh token, a new access token for the same audience.
        refreshed = assert_tokens(refresh(client, discovery, tokens["refresh_token"], client_id=client_id))
        rotated_at = time.monotonic()
        assert refreshed["refresh_token"] != tokens["refresh_token"]
        assert refreshed["access_token"] != tokens["access_token"]
        assert stored_access_token(refreshed["access_token"]).resource == [discovery.resource]

        # Past the grace window, the rotated-out refresh token is a replay: refused, and the
        # whole family goes with it, including the token that replaced it (RFC 9700 §4.14.2).
        time.sleep(max(0.0, rotated_at + GRACE_SECONDS + 0.5 - time.monotonic()))
        assert_invalid_grant(refresh(client, discovery, tokens["refresh_token"], client_id=client_id))
        assert_invalid_grant(refresh(client, discovery, refreshed["refresh_token"], client_id=client_id))
        assert stored_access_token(refreshed["access_token"]) is None
        assert not get_refresh_token_model().objects.filter(application__client_id=client_id, revoked=None).exists()

        # A code is good once (RFC 6749 §4.1.2); presented again, it is refused.
        assert_invalid_grant(exchange(client, discovery, grant, client_id=client_id))


def redeem_for_other_host(server: GunicornServer) -> httpx2.Response:
    """A code from the internal host, redeemed there for the public host's /mcp."""
    with server.client("internal") as client, server.client("internal", headers=ALICE) as browser:
        discovery = discover(client, server.internal + "/mcp")
        client_id = register_public_client(client, discovery, "e2e audience")
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)
        return client.post(
            discovery.endpoint("token"),
            data={
                "grant_type": "authorization_code",
                "code": grant.code,
                "redirect_uri": LOOPBACK_REDIRECT,
                "code_verifier": grant.pkce.verifier,
                "client_id": client_id,
                "resource": server.public + "/mcp",
            },
        )


def test_tokens_are_bound_to_the_host_they_were_asked_on(gunicorn_server: GunicornServer) -> None:
    """A client of one host cannot get a token for the other host's /mcp (RFC 8707 §2 invalid_target)."""
    response = redeem_for_other_host(gunicorn_server)
    assert response.status_code == 400, response.text
    assert json_of(response)["error"] == "invalid_target"
    assert response.headers.get("cache-control") == "no-store"


# ---------------------------------------------------------------------------
# Two refreshes at once: the grace window
# ---------------------------------------------------------------------------
def refresh_concurrently(
    server: GunicornServer, discovery: Discovery, refresh_token: str, client_id: str
) -> list[httpx2.Response]:
    """Two clients on their own connections send the same refresh at the same moment.

    gunicorn has two workers, so the two requests may be handled in parallel processes.
    """
    barrier = threading.Barrier(2)
    results: list[httpx2.Response | BaseException] = [RuntimeError("not run")] * 2

    def one(index: int) -> None:
        try:
            with server.client("internal") as http:
                http.get("/healthz")  # connect first, so the two refreshes leave together
                barrier.wait(timeout=10)
                results[index] = refresh(http, discovery, refresh_token, client_id=client_id)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    responses = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        responses.append(result)
    return responses


def test_a_retry_inside_the_grace_window_gets_a_sibling_pair(gunicorn_server: GunicornServer) -> None:
    """A client that never saw the answer to its refresh sends it again: a sibling pair, not a replay.

    Both pairs keep working, each rotating on its own; past the window, the original token is a
    replay again and takes the whole family with it.
    """
    with gunicorn_server.client("internal") as client, gunicorn_server.client("internal", headers=ALICE) as browser:
        discovery = discover(client, gunicorn_server.internal + "/mcp")
        client_id = register_public_client(client, discovery, "e2e retry")
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)
        tokens = assert_tokens(exchange(client, discovery, grant, client_id=client_id))
        first = assert_tokens(refresh(client, discovery, tokens["refresh_token"], client_id=client_id))
        rotated_at = time.monotonic()
        retry = assert_tokens(refresh(client, discovery, tokens["refresh_token"], client_id=client_id))
        assert retry["access_token"] != first["access_token"]
        assert retry["refresh_token"] not in (first["refresh_token"], tokens["refresh_token"])
        assert stored_access_token(retry["access_token"]).resource == [discovery.resource]
        later = [
            assert_tokens(refresh(client, discovery, pair["refresh_token"], client_id=client_id))
            for pair in (first, retry)
        ]

        time.sleep(max(0.0, rotated_at + GRACE_SECONDS + 0.5 - time.monotonic()))
        assert_invalid_grant(refresh(client, discovery, tokens["refresh_token"], client_id=client_id))
        for pair in later:
            assert_invalid_grant(refresh(client, discovery, pair["refresh_token"], client_id=client_id))


def test_concurrent_refreshes_with_one_token_both_succeed(gunicorn_server: GunicornServer) -> None:
    """Two refreshes with one refresh token at the same moment both succeed, and neither logs the other out.

    The known failure of other MCP authorization servers: strict reuse detection treats the
    second as a replay and logs the person out. gunicorn's two workers handle the two requests
    in parallel; on PostgreSQL the refresh token's row lock serialises them, and the loser must
    get a sibling pair, not invalid_grant.
    """
    with gunicorn_server.client("internal") as client, gunicorn_server.client("internal", headers=ALICE) as browser:
        discovery = discover(client, gunicorn_server.internal + "/mcp")
        client_id = register_public_client(client, discovery, "e2e concurrent")
        for _ in range(3):  # a few rounds: the two requests interleave differently each time
            grant = authorize(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)
            tokens = assert_tokens(exchange(client, discovery, grant, client_id=client_id))
            pairs = [
                assert_tokens(r)
                for r in refresh_concurrently(gunicorn_server, discovery, tokens["refresh_token"], client_id)
            ]
            assert pairs[0]["access_token"] != pairs[1]["access_token"]
            assert pairs[0]["refresh_token"] != pairs[1]["refresh_token"]
            assert tokens["refresh_token"] not in (pairs[0]["refresh_token"], pairs[1]["refresh_token"])
            for pair in pairs:
                assert stored_access_token(pair["access_token"]).resource == [discovery.resource]
            # Neither was logged out: each new refresh token works.
            for pair in pairs:
                assert_tokens(refresh(client, discovery, pair["refresh_token"], client_id=client_id))


# ---------------------------------------------------------------------------
# An operator-made confidential client
# ---------------------------------------------------------------------------
def test_confidential_client_with_basic_and_post_secrets(gunicorn_server: GunicornServer) -> None:
    """Gemini Enterprise: made with ``manage.py create_client --confidential``; it may use either method."""
    created = json.loads(
        gunicorn_server.manage("create_client", "--name", "Gemini", "--redirect-uri", GEMINI_REDIRECT, "--confidential")
    )
    client_id, secret = created["client_id"], created["client_secret"]
    gunicorn_server.remember(secret)
    client_row = Client.objects.get(client_id=client_id)
    assert client_row.client_type == Client.CLIENT_CONFIDENTIAL
    assert secret not in client_row.client_secret  # stored hashed

    with gunicorn_server.client("public") as client, gunicorn_server.client("public", headers=ALICE) as browser:
        discovery = discover(client, gunicorn_server.public + "/mcp")
        for method in ("client_secret_basic", "client_secret_post"):
            assert method in discovery.server_metadata["token_endpoint_auth_methods_supported"]

        # First time: the consent page, which says the client was set up by the operators.
        grant = authorize(
            browser,
            discovery,
            client_id=client_id,
            redirect_uri=GEMINI_REDIRECT,
            consent_text=("Gemini", "set up by your administrators", "vertexaisearch.cloud.google.com"),
        )
        assert grant.consent_shown
        # No secret, or a wrong one: invalid_client, and the code survives for the real client.
        no_secret = exchange(client, discovery, grant, client_id=client_id)
        assert no_secret.status_code == 401, no_secret.text
        assert json_of(no_secret)["error"] == "invalid_client"
        wrong = exchange(
            client, discovery, grant, client_id=client_id, client_secret="x" * 40, auth_method="client_secret_basic"
        )
        assert wrong.status_code == 401, wrong.text
        assert json_of(wrong)["error"] == "invalid_client"

        basic = assert_tokens(
            exchange(
                client, discovery, grant, client_id=client_id, client_secret=secret, auth_method="client_secret_basic"
            )
        )
        assert stored_access_token(basic["access_token"]).resource == [discovery.resource]

        # Second time: the approval is remembered, so the redirect comes at once.
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=GEMINI_REDIRECT)
        assert not grant.consent_shown
        posted = assert_tokens(
            exchange(
                client, discovery, grant, client_id=client_id, client_secret=secret, auth_method="client_secret_post"
            )
        )
        assert posted["access_token"] != basic["access_token"]

        # Refresh with the secret, in both ways.
        again = assert_tokens(
            refresh(
                client,
                discovery,
                basic["refresh_token"],
                client_id=client_id,
                client_secret=secret,
                auth_method="client_secret_post",
            )
        )
        assert_tokens(
            refresh(
                client,
                discovery,
                posted["refresh_token"],
                client_id=client_id,
                client_secret=secret,
                auth_method="client_secret_basic",
            )
        )
        assert again["refresh_token"] != basic["refresh_token"]


def test_consent_refused_sends_access_denied(gunicorn_server: GunicornServer) -> None:
    """Deny on the consent page: the client gets access_denied with its state and the issuer."""
    with gunicorn_server.client("public") as client, gunicorn_server.client("public", headers=ALICE) as browser:
        discovery = discover(client, gunicorn_server.public + "/mcp")
        client_id = register_public_client(client, discovery, "e2e refused")
        page = browser.get(
            discovery.endpoint("authorization"),
            params={
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": LOOPBACK_REDIRECT,
                "scope": "mcp",
                "state": "refuse-me",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                "code_challenge_method": "S256",
                "resource": discovery.resource,
            },
        )
        assert page.status_code == 200, page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        answer = submit_form(browser, page, "cancel")
        assert answer.status_code == 302, answer.text
        location = httpx2.URL(answer.headers["location"])
        assert str(location.copy_with(query=None)) == LOOPBACK_REDIRECT
        assert dict(location.params) == {"error": "access_denied", "state": "refuse-me", "iss": discovery.issuer}
