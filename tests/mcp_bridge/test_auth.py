"""Admission to /mcp through real HTTP: bearer tokens (R1-R3, D3), Origin (H2), hosts and proxies.

Alice holds tokens minted for the internal host's /mcp unless a test says otherwise. The internal
host is http://127.0.0.1:8000, the public one https://mcp.example.com (tests/testenv.py); the
trusted proxy is 10.9.9.9. The end of the module uses the authentication class in a plain DRF view.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from mcp_bridge.authentication import MCPBearerAuthentication
from mcpgate.middleware import HostMiddleware, TrustedProxyMiddleware
from tests.conftest import INTERNAL, INTERNAL_RESOURCE, PUBLIC, PUBLIC_RESOURCE
from tests.mcp_bridge.conftest import MCP_HEADERS, bearer, call, rpc, stored_token
from tests.personas import ALICE

pytestmark = pytest.mark.anyio

INTERNAL_PRM = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"
PUBLIC_PRM = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"


def challenge(prm: str = INTERNAL_PRM, description: str | None = None) -> str:
    """The WWW-Authenticate value of a 401: error="invalid_token" when a token was presented."""
    if description is None:
        return f'Bearer scope="mcp",resource_metadata="{prm}"'
    return f'Bearer error="invalid_token",error_description="{description}",scope="mcp",resource_metadata="{prm}"'


def assert_401(r: Any, description: str | None = None, prm: str = INTERNAL_PRM) -> None:
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == challenge(prm, description)
    assert r.headers["cache-control"] == "no-store"
    if description is None:
        assert r.json() == {"error": "invalid_request", "error_description": "A bearer token is required."}
    else:
        assert r.json() == {"error": "invalid_token", "error_description": description}


async def whoami_host(r: Any) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["result"]["structuredContent"]["host"])


# -- R1, D3: the bearer header and the challenge -------------------------------------------------


async def test_no_authorization_is_401_with_challenge(mcp, alice) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=MCP_HEADERS)

    assert r.status_code == 401
    assert r.headers["www-authenticate"] == (
        'Bearer scope="mcp",resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"'
    )
    assert_401(r)


async def test_challenge_on_the_public_host_names_its_metadata(mcp, alice) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers={**MCP_HEADERS, "Host": PUBLIC})

    assert_401(r, prm=PUBLIC_PRM)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_every_method_needs_the_token(mcp, alice, method) -> None:
    """Admission comes before everything else, the 405 for GET/DELETE included."""
    r = await mcp.request(method, "/mcp", headers=MCP_HEADERS)

    assert_401(r)


async def test_token_in_query_string_is_refused(mcp, alice_token) -> None:
    r = await mcp.post(f"/mcp?access_token={alice_token}", json=rpc("ping"), headers=MCP_HEADERS)

    assert_401(r)


async def test_token_in_query_string_spoils_a_header_token(mcp, alice_token) -> None:
    """RFC 9700 §4.3.2: a request that carries a token in its URL is refused, header or not."""
    r = await mcp.post(f"/mcp?access_token={alice_token}", json=rpc("ping"), headers=bearer(alice_token))

    assert_401(r, "The access token is invalid.")


async def test_token_in_form_body_is_refused(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp",
        content=f"access_token={alice_token}",
        headers={**MCP_HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert_401(r)


async def test_other_schemes_are_not_a_bearer_token(mcp, alice) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers={**MCP_HEADERS, "Authorization": "Basic YWxpY2U6c2VjcmV0"})

    assert_401(r)


# -- R2: valid, unexpired, not revoked -----------------------------------------------------------


async def test_unknown_token_is_401_invalid_token(mcp, alice) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer("not-a-token-we-issued"))

    assert_401(r, "The access token is invalid.")


@pytest.fixture
def expired_token(alice, make_token) -> str:
    return make_token(alice, expires_in=-1)


async def test_expired_token_is_401(mcp, expired_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(expired_token))

    assert_401(r, "The access token has expired.")


async def test_revoked_token_is_401_on_the_next_call(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))
    assert r.status_code == 200

    await sync_to_async(lambda: stored_token(alice_token).delete())()
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    assert_401(r, "The access token is invalid.")


async def test_disabled_client_is_refused_on_the_next_call(mcp, alice_token, app_client) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))
    assert r.status_code == 200

    app_client.disabled = True
    await sync_to_async(app_client.save)(update_fields=["disabled"])
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    assert_401(r, "The access token is invalid.")


async def test_inactive_user_is_refused_on_the_next_call(mcp, alice, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))
    assert r.status_code == 200

    alice.is_active = False
    await sync_to_async(alice.save)(update_fields=["is_active"])
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    assert_401(r, "The access token's user is disabled.")


# -- R3: the audience is this host's /mcp --------------------------------------------------------


@pytest.fixture
def public_token(alice, make_token) -> str:
    return make_token(alice, resource=[PUBLIC_RESOURCE])


async def test_internal_token_works_on_the_internal_host(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))

    assert await whoami_host(r) == "internal"


async def test_public_token_works_on_the_public_host(mcp, public_token) -> None:
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(public_token, Host=PUBLIC))

    assert await whoami_host(r) == "public"


async def test_internal_token_is_refused_on_the_public_host(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, Host=PUBLIC))

    assert_401(r, "The access token is not valid for this resource.", prm=PUBLIC_PRM)


async def test_public_token_is_refused_on_the_internal_host(mcp, public_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(public_token))

    assert_401(r, "The access token is not valid for this resource.")


@pytest.fixture
def foreign_token(alice, make_token) -> str:
    """Issued for another resource server."""
    return make_token(alice, resource=["https://tools.elsewhere.example/mcp"])


@pytest.fixture
def unbound_token(alice, make_token) -> str:
    """Issued with no audience at all."""
    return make_token(alice, resource=[])


async def test_token_for_another_resource_is_refused(mcp, foreign_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(foreign_token))

    assert_401(r, "The access token is not valid for this resource.")


async def test_token_without_resource_is_refused(mcp, unbound_token) -> None:
    """DOT lets a token with no audience through as "unrestricted"; /mcp does not."""
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(unbound_token))

    assert_401(r, "The access token was not issued for this resource.")


@pytest.fixture
def registration_token(app_client) -> str:
    """An RFC 7592 registration access token: no user, no resource, scope oauth2_provider:registration."""
    from oauth_ext.services import registration_token_issue

    return registration_token_issue(client=app_client)


async def test_registration_token_is_refused(mcp, registration_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(registration_token))

    assert_401(r, "The access token was not issued for this resource.")


async def test_unconfigured_host_is_400(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, Host="mcp.evil.test"))

    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "This host is not served here."}


# -- Proxies: X-Forwarded-Host only from a trusted one --------------------------------------------


async def test_forwarded_host_from_the_trusted_proxy_is_honoured(via_proxy, public_token) -> None:
    headers = bearer(public_token, Host=INTERNAL, **{"X-Forwarded-Host": PUBLIC})
    r = await via_proxy.post("/mcp", json=call("whoami"), headers=headers)

    assert await whoami_host(r) == "public"


async def test_forwarded_host_from_the_trusted_proxy_decides_the_audience(via_proxy, alice_token) -> None:
    headers = bearer(alice_token, Host=INTERNAL, **{"X-Forwarded-Host": PUBLIC})
    r = await via_proxy.post("/mcp", json=rpc("ping"), headers=headers)

    assert_401(r, "The access token is not valid for this resource.", prm=PUBLIC_PRM)


async def test_forwarded_host_from_anyone_else_is_ignored(mcp, alice_token) -> None:
    headers = bearer(alice_token, Host=INTERNAL, **{"X-Forwarded-Host": PUBLIC})
    r = await mcp.post("/mcp", json=call("whoami"), headers=headers)

    assert await whoami_host(r) == "internal"


async def test_forwarded_host_from_anyone_else_cannot_borrow_the_public_audience(mcp, public_token) -> None:
    headers = bearer(public_token, Host=INTERNAL, **{"X-Forwarded-Host": PUBLIC})
    r = await mcp.post("/mcp", json=rpc("ping"), headers=headers)

    assert_401(r, "The access token is not valid for this resource.")


# -- H2: Origin ----------------------------------------------------------------------------------

ORIGIN_REFUSED = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Origin not allowed"}}


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:8001", "http://localhost:8000"])
async def test_origin_not_allowed_is_403(mcp, alice_token, origin) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, Origin=origin))

    assert r.status_code == 403
    assert r.json() == ORIGIN_REFUSED


async def test_origin_is_checked_before_the_token(mcp, alice) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers={**MCP_HEADERS, "Origin": "https://evil.example"})

    assert r.status_code == 403
    assert r.json() == ORIGIN_REFUSED


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8000", "https://mcp.example.com"])
async def test_origin_of_a_configured_host_is_allowed(mcp, alice_token, origin) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, Origin=origin))

    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_no_origin_is_fine(mcp, alice_token) -> None:
    headers = bearer(alice_token)
    assert "Origin" not in headers

    r = await mcp.post("/mcp", json=rpc("ping"), headers=headers)

    assert r.status_code == 200


# -- The authentication class in any DRF view ----------------------------------------------------


class EmailView(APIView):
    """What a deployment's own DRF API looks like with /mcp's authentication."""

    authentication_classes = [MCPBearerAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"email": request.user.email, "scope": request.auth.scope})


def drf_get(authorization: str | None = None, host: str = INTERNAL, path: str = "/mcp/api/email") -> Any:
    """GET the view through the same host middleware as every Django view of the site.

    The view sits under /mcp: DOT checks the token's audience as a URL prefix of the request
    (RFC 8707), so a token for this host's /mcp is good for /mcp/... and nothing else.
    """
    extra = {"HTTP_HOST": host}
    if authorization is not None:
        extra["HTTP_AUTHORIZATION"] = authorization
    request = APIRequestFactory().get(path, **extra)
    response = TrustedProxyMiddleware(HostMiddleware(EmailView.as_view()))(request)
    return response


def test_drf_view_without_token_is_401_not_403(alice) -> None:
    response = drf_get()

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == challenge()


def test_drf_view_with_invalid_token_is_401_invalid_token(alice) -> None:
    response = drf_get("Bearer not-a-token-we-issued")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == challenge(description="The access token is invalid.")


def test_drf_view_with_token_for_another_host_is_401(alice_token) -> None:
    response = drf_get(f"Bearer {alice_token}", host=PUBLIC)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == challenge(PUBLIC_PRM, "The access token is not valid for this resource.")


def test_drf_view_with_inactive_user_is_401(alice, alice_token) -> None:
    """AuthenticationFailed raised by the class (not just None) also stays a 401 with the challenge."""
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    response = drf_get(f"Bearer {alice_token}")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == challenge(description="The access token's user is disabled.")


def test_drf_view_with_valid_token(alice_token) -> None:
    response = drf_get(f"Bearer {alice_token}")

    assert response.status_code == 200
    assert response.data == {"email": ALICE, "scope": "mcp"}


def test_drf_view_outside_the_resource_refuses_an_mcp_token(alice_token) -> None:
    assert stored_token(alice_token).resource == [INTERNAL_RESOURCE]

    response = drf_get(f"Bearer {alice_token}", path="/api/email")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == challenge(description="The access token is not valid for this resource.")


@pytest.fixture
def notes_only_token(alice, make_token) -> str:
    return make_token(alice, scope="notes:write")


async def test_token_without_the_basic_scope_is_refused_with_insufficient_scope(mcp, notes_only_token) -> None:
    """The basic scope (PRM scopes_supported) is what admits a client to /mcp at all (R4)."""
    response = await mcp.post("/mcp", json=rpc("tools/list"), headers=bearer(notes_only_token))

    assert response.status_code == 403
    assert response.json() == {
        "error": "insufficient_scope",
        "error_description": "This server needs the scope(s): mcp.",
    }
    assert response.headers["www-authenticate"].startswith('Bearer error="insufficient_scope",scope="mcp notes:write"')
