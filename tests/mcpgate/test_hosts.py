"""Two hosts: the public one (cloud clients) and the internal one (VPN); everything follows the host asked."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.test import override_settings
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from oauth_ext.models import Client
from tests.conftest import (
    INTERNAL,
    INTERNAL_BASE,
    INTERNAL_RESOURCE,
    PROXY_ADDR,
    PUBLIC,
    PUBLIC_BASE,
    PUBLIC_RESOURCE,
    Flow,
    oauth_error,
    register,
)

pytestmark = pytest.mark.django_db

AS_METADATA = "/.well-known/oauth-authorization-server"
PRM_MCP = "/.well-known/oauth-protected-resource/mcp"
NOT_SERVED = oauth_error("invalid_request", "This host is not served here.")


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def issuer(response: Any) -> str:
    assert response.status_code == 200, response.content
    return str(response.json()["issuer"])


# ---------------------------------------------------------------------------
# Everything follows the host
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "base"), [(PUBLIC, PUBLIC_BASE), (INTERNAL, INTERNAL_BASE)])
def test_issuer_and_endpoints_follow_the_host(http: HttpClient, host: str, base: str) -> None:
    data = http.get(AS_METADATA, HTTP_HOST=host).json()
    assert data["issuer"] == base
    for key in ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "registration_endpoint"):
        assert data[key].startswith(base + "/oauth/"), key


@pytest.mark.parametrize(("host", "base"), [(PUBLIC, PUBLIC_BASE), (INTERNAL, INTERNAL_BASE)])
def test_resource_and_authorization_server_follow_the_host(http: HttpClient, host: str, base: str) -> None:
    data = http.get(PRM_MCP, HTTP_HOST=host).json()
    assert data["resource"] == base + "/mcp"
    assert data["authorization_servers"] == [base]


def test_registration_client_uri_follows_the_host(http: HttpClient) -> None:
    body = register(
        http, {"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}, host=INTERNAL
    )
    assert body.json()["registration_client_uri"].startswith(INTERNAL_BASE + "/oauth/register/")


@pytest.mark.parametrize("host", ["mcp.example.com:443", "MCP.EXAMPLE.COM", "Mcp.Example.Com:443"])
def test_public_host_recognised_with_default_port_or_other_case(http: HttpClient, host: str) -> None:
    assert issuer(http.get(AS_METADATA, HTTP_HOST=host)) == PUBLIC_BASE


# ---------------------------------------------------------------------------
# Hosts not configured
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", AS_METADATA),
        ("get", PRM_MCP),
        ("post", "/oauth/token"),
        ("post", "/oauth/register"),
    ],
)
def test_unconfigured_host_refused(http: HttpClient, method: str, path: str) -> None:
    response = getattr(http, method)(path, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json() == NOT_SERVED
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/oauth/authorize", "/admin/", "/healthz"])
def test_unconfigured_host_gets_a_page_on_browser_routes(http: HttpClient, path: str) -> None:
    response = http.get(path, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert b"Bad Request (400)" in response.content
    assert response["Cache-Control"] == "no-store"


def test_unconfigured_host_refusal_is_exact_and_never_cached(http: HttpClient) -> None:
    response = http.post("/oauth/token", {"grant_type": "refresh_token"}, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    assert response.content == b'{"error": "invalid_request", "error_description": "This host is not served here."}'


def test_unconfigured_host_page_says_why_and_is_never_cached(http: HttpClient) -> None:
    response = http.get("/admin/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    page = response.content.decode()
    assert "<h1>Bad Request (400)</h1>" in page
    assert "This host is not served here." in page


def test_unconfigured_host_on_mcp_is_the_resource_servers_refusal(http: HttpClient) -> None:
    """RFC 6750 §3's JSON object, as /mcp's 401 (tests/mcp_bridge/test_auth.py pins it over ASGI too)."""
    response = http.post("/mcp", {}, content_type="application/json", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Cache-Control"] == "no-store"
    assert response.json() == NOT_SERVED


@pytest.mark.parametrize("host", ["127.0.0.1:8001", "127.0.0.1", "mcp.example.com:8443", "localhost:8000"])
def test_configured_name_on_another_port_refused(http: HttpClient, host: str) -> None:
    response = http.get(AS_METADATA, HTTP_HOST=host)
    assert response.status_code == 400
    assert response.json() == NOT_SERVED


@override_settings(MCPGATE_PUBLIC_URL="")
def test_with_only_the_internal_host_configured_the_public_one_is_refused(http: HttpClient) -> None:
    assert http.get(AS_METADATA, HTTP_HOST=PUBLIC).json() == NOT_SERVED
    assert issuer(http.get(AS_METADATA, HTTP_HOST=INTERNAL)) == INTERNAL_BASE


def test_host_override_does_not_leak(http: HttpClient) -> None:
    """hosts.configured_hosts() is cached; setting_changed must clear it both ways."""
    with override_settings(MCPGATE_PUBLIC_URL=""):
        assert http.get(AS_METADATA, HTTP_HOST=PUBLIC).status_code == 400
    assert issuer(http.get(AS_METADATA, HTTP_HOST=PUBLIC)) == PUBLIC_BASE


# ---------------------------------------------------------------------------
# X-Forwarded-Host / -Proto: only from trusted proxies
# ---------------------------------------------------------------------------
def test_forwarded_host_from_trusted_proxy_honoured(http: HttpClient) -> None:
    response = http.get(AS_METADATA, HTTP_HOST="10.9.9.1:8000", REMOTE_ADDR=PROXY_ADDR, HTTP_X_FORWARDED_HOST=PUBLIC)
    assert issuer(response) == PUBLIC_BASE


def test_forwarded_host_from_untrusted_peer_ignored(http: HttpClient) -> None:
    response = http.get(AS_METADATA, HTTP_HOST=INTERNAL, REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_HOST=PUBLIC)
    assert issuer(response) == INTERNAL_BASE


def test_forwarded_host_naming_an_unconfigured_host_refused(http: HttpClient) -> None:
    response = http.get(AS_METADATA, HTTP_HOST=PUBLIC, REMOTE_ADDR=PROXY_ADDR, HTTP_X_FORWARDED_HOST="evil.example")
    assert response.status_code == 400
    assert response.json() == NOT_SERVED


def test_scheme_comes_from_the_configured_url_not_forwarded_proto(http: HttpClient) -> None:
    """Even a trusted proxy cannot make the public issuer http (nor the internal one https)."""
    trusted = http.get(AS_METADATA, HTTP_HOST=PUBLIC, REMOTE_ADDR=PROXY_ADDR, HTTP_X_FORWARDED_PROTO="http")
    untrusted = http.get(AS_METADATA, HTTP_HOST=INTERNAL, REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_PROTO="https")
    assert issuer(trusted) == PUBLIC_BASE
    assert issuer(untrusted) == INTERNAL_BASE


# ---------------------------------------------------------------------------
# Tokens are bound to the host they were authorized on
# ---------------------------------------------------------------------------
def test_token_minted_on_internal_host_is_bound_to_internal_mcp(internal_flow: Flow, public_client: Client) -> None:
    tokens = internal_flow.get_tokens(public_client.client_id)
    access = get_access_token_model().objects.get(token_checksum=sha256(tokens["access_token"]))
    assert access.resource == [INTERNAL_RESOURCE]


def test_internal_token_request_naming_the_public_resource_refused(internal_flow: Flow, public_client: Client) -> None:
    query, pkce, _ = internal_flow.authorize_code(public_client.client_id)
    response = internal_flow.exchange(public_client.client_id, query["code"], pkce, resource=PUBLIC_RESOURCE)
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_target", "Unknown resource; this server issues tokens for http://127.0.0.1:8000/mcp only."
    )


def test_internal_code_redeemed_on_public_host_for_public_resource_refused(
    http: HttpClient, public_client: Client
) -> None:
    internal, public = Flow(http, INTERNAL), Flow(http, PUBLIC)
    query, pkce, _ = internal.authorize_code(public_client.client_id)
    response = public.exchange(public_client.client_id, query["code"], pkce, resource=PUBLIC_RESOURCE)
    assert response.status_code == 400
    assert response.json() == oauth_error(
        "invalid_target",
        "The requested resource 'https://mcp.example.com/mcp' is not allowed. Token request cannot escalate "
        "resource permissions beyond the original authorization grant",
    )


def test_internal_code_redeemed_elsewhere_keeps_its_internal_audience(http: HttpClient, public_client: Client) -> None:
    internal, public = Flow(http, INTERNAL), Flow(http, PUBLIC)
    query, pkce, _ = internal.authorize_code(public_client.client_id)
    body = public.exchange(public_client.client_id, query["code"], pkce).json()
    assert get_access_token_model().objects.get().resource == [INTERNAL_RESOURCE]
    assert body["access_token"]


def test_internal_refresh_token_cannot_be_widened_to_the_public_resource(
    http: HttpClient, public_client: Client
) -> None:
    internal, public = Flow(http, INTERNAL), Flow(http, PUBLIC)
    tokens = internal.get_tokens(public_client.client_id)
    widened = public.refresh(public_client.client_id, tokens["refresh_token"], resource=PUBLIC_RESOURCE)
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_target"
    kept = public.refresh(public_client.client_id, tokens["refresh_token"]).json()
    rt = get_refresh_token_model().objects.get(token_checksum=sha256(kept["refresh_token"]))
    assert rt.resource == [INTERNAL_RESOURCE]


def test_consent_and_sign_in_record_the_host(internal_flow: Flow, public_client: Client) -> None:
    from oauth_ext.models import Consent, User

    internal_flow.get_tokens(public_client.client_id)
    assert User.objects.get().last_sign_in_host == "internal"
    assert Consent.objects.get().host == "internal"
