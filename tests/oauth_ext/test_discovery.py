"""Discovery documents: RFC 8414 authorization server metadata (S1-S7) and RFC 9728 resource metadata (D1-D5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.test import override_settings

from oauth_ext.scopes import all_scopes
from tests.conftest import (
    ALICE,
    CLIENT_ADDR,
    INTERNAL,
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC,
    PUBLIC_BASE,
    PUBLIC_RESOURCE,
    Flow,
    authorize_params,
    oauth_error,
    proxy_headers,
)

pytestmark = pytest.mark.django_db

AS_METADATA = "/.well-known/oauth-authorization-server"
OIDC_METADATA = "/.well-known/openid-configuration"
PRM_ROOT = "/.well-known/oauth-protected-resource"
PRM_MCP = "/.well-known/oauth-protected-resource/mcp"

EXPECTED_AS_METADATA = {
    "issuer": PUBLIC_BASE,
    "authorization_endpoint": PUBLIC_BASE + "/oauth/authorize",
    "token_endpoint": PUBLIC_BASE + "/oauth/token",
    "revocation_endpoint": PUBLIC_BASE + "/oauth/revoke",
    "registration_endpoint": PUBLIC_BASE + "/oauth/register",
    "response_types_supported": ["code"],
    "grant_types_supported": ["authorization_code", "refresh_token"],
    "scopes_supported": sorted(all_scopes()),  # every scope, tools' included
    "code_challenge_methods_supported": ["S256"],
    "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
    "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
    "client_id_metadata_document_supported": True,
    "authorization_response_iss_parameter_supported": True,
}

EXPECTED_PRM = {
    "resource": PUBLIC_RESOURCE,
    "authorization_servers": [PUBLIC_BASE],
    "scopes_supported": ["mcp"],
    "bearer_methods_supported": ["header"],
    "resource_name": "mcpgate",
}


def get(http: HttpClient, path: str, host: str = PUBLIC) -> Any:
    return http.get(path, HTTP_HOST=host)


# ---------------------------------------------------------------------------
# RFC 8414
# ---------------------------------------------------------------------------
def test_authorization_server_metadata_is_served_in_full(http: HttpClient) -> None:
    response = get(http, AS_METADATA)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == EXPECTED_AS_METADATA


@pytest.mark.parametrize("path", [OIDC_METADATA, OIDC_METADATA + "/"])
def test_openid_configuration_serves_the_same_document(http: HttpClient, path: str) -> None:
    response = get(http, path)
    assert response.status_code == 200
    assert response.json() == EXPECTED_AS_METADATA


def test_issuer_is_the_origin_without_trailing_slash(http: HttpClient) -> None:
    issuer = get(http, AS_METADATA).json()["issuer"]
    assert issuer == "https://mcp.example.com"
    # RFC 8414 §3: the metadata URL is built from the issuer; it must lead back to this document.
    assert issuer + AS_METADATA == "https://mcp.example.com" + AS_METADATA


def test_only_s256_is_advertised_for_pkce(http: HttpClient) -> None:
    assert get(http, AS_METADATA).json()["code_challenge_methods_supported"] == ["S256"]


def test_token_endpoint_auth_methods_listed_explicitly(http: HttpClient) -> None:
    methods = get(http, AS_METADATA).json()["token_endpoint_auth_methods_supported"]
    assert methods == ["none", "client_secret_post", "client_secret_basic"]


def test_cimd_supported_together_with_auth_method_none(http: HttpClient) -> None:
    """Claude uses CIMD only when this is true and ``none`` is an auth method."""
    data = get(http, AS_METADATA).json()
    assert data["client_id_metadata_document_supported"] is True
    assert "none" in data["token_endpoint_auth_methods_supported"]


def test_iss_parameter_support_advertised(http: HttpClient) -> None:
    assert get(http, AS_METADATA).json()["authorization_response_iss_parameter_supported"] is True


def test_no_implicit_or_password_advertised(http: HttpClient) -> None:
    data = get(http, AS_METADATA).json()
    assert data["response_types_supported"] == ["code"]
    assert data["grant_types_supported"] == ["authorization_code", "refresh_token"]


def test_metadata_is_cacheable_and_readable_cross_origin(http: HttpClient) -> None:
    for path in (AS_METADATA, OIDC_METADATA, PRM_ROOT, PRM_MCP):
        response = get(http, path)
        assert response["Access-Control-Allow-Origin"] == "*", path
        assert response["Cache-Control"] == "public, max-age=300", path


def test_metadata_lists_scopes_added_in_settings(http: HttpClient) -> None:
    scopes = {"mcp": "Use the tools", "files:read": "Read your files"}
    with override_settings(MCPGATE_SCOPES=scopes):
        supported = get(http, AS_METADATA).json()["scopes_supported"]
        assert supported == sorted(all_scopes())
    assert "files:read" in supported
    assert "mcp" in supported


# ---------------------------------------------------------------------------
# S7: legacy 2025-03-26 clients that skip discovery
# ---------------------------------------------------------------------------
def test_root_authorize_alias_serves_the_authorization_endpoint(http: HttpClient, public_client: Any) -> None:
    params = authorize_params(public_client.client_id, PKCE.make())
    response = http.get("/authorize", params, HTTP_HOST=PUBLIC, **proxy_headers(ALICE))
    assert response.status_code == 200
    assert b"Allow <strong>Claude Code</strong>" in response.content


def test_root_token_alias_serves_the_token_endpoint(flow: Flow, public_client: Any) -> None:
    query, pkce, _params = flow.authorize_code(public_client.client_id)
    response = flow.http.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": LOOPBACK_REDIRECT,
            "client_id": public_client.client_id,
            "code_verifier": pkce.verifier,
        },
        HTTP_HOST=PUBLIC,
    )
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "Bearer"


def test_root_register_alias_serves_the_registration_endpoint(http: HttpClient) -> None:
    metadata = {"client_name": "Legacy", "redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none"}
    response = http.post(
        "/register", json.dumps(metadata), content_type="application/json", HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR
    )
    assert response.status_code == 201, response.content
    assert response.json()["client_name"] == "Legacy"


# ---------------------------------------------------------------------------
# RFC 9728
# ---------------------------------------------------------------------------
def test_protected_resource_metadata_names_resource_and_authorization_server(http: HttpClient) -> None:
    response = get(http, PRM_ROOT)
    assert response.status_code == 200
    assert response.json() == EXPECTED_PRM


def test_path_suffixed_prm_served(http: HttpClient) -> None:
    response = get(http, PRM_MCP)
    assert response.status_code == 200
    assert response.json() == EXPECTED_PRM


def test_path_suffixed_prm_accepts_trailing_slash(http: HttpClient) -> None:
    response = get(http, PRM_MCP + "/")
    assert response.status_code == 200
    assert response.json()["resource"] == PUBLIC_RESOURCE


def test_prm_for_another_path_is_not_found(http: HttpClient) -> None:
    response = get(http, "/.well-known/oauth-protected-resource/other")
    assert response.status_code == 404
    assert response.json() == oauth_error("not_found", "No protected resource at this path.")


def test_prm_not_found_is_never_cached(http: HttpClient) -> None:
    """The documents themselves are cached for five minutes; the refusal is not (it used to carry no Cache-Control)."""
    response = get(http, "/.well-known/oauth-protected-resource/other")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.content == b'{"error": "not_found", "error_description": "No protected resource at this path."}'


def test_resource_is_lowercase_and_without_trailing_slash_whatever_the_host_header(http: HttpClient) -> None:
    data = get(http, PRM_MCP, host="MCP.Example.COM").json()
    assert data["resource"] == "https://mcp.example.com/mcp"
    assert data["authorization_servers"] == ["https://mcp.example.com"]


def test_internal_resource_keeps_its_port(http: HttpClient) -> None:
    data = get(http, PRM_MCP, host=INTERNAL).json()
    assert data["resource"] == "http://127.0.0.1:8000/mcp"


def test_scopes_supported_is_the_minimum_not_every_scope(http: HttpClient) -> None:
    scopes = {"mcp": "Use the tools", "files:write": "Change your files"}
    with override_settings(MCPGATE_SCOPES=scopes):
        data = get(http, PRM_MCP).json()
    assert data["scopes_supported"] == ["mcp"]
    assert "offline_access" not in data["scopes_supported"]


# ---------------------------------------------------------------------------
# Cost: discovery is hit on every fresh connection and must not touch the database.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", [AS_METADATA, OIDC_METADATA, PRM_ROOT, PRM_MCP])
def test_metadata_endpoints_need_no_queries(http: HttpClient, path: str, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        response = get(http, path)
    assert response.status_code == 200
