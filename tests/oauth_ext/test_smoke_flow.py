"""The whole authorization code flow through the test client (smoke test while building)."""

from __future__ import annotations

from tests.conftest import PUBLIC_BASE, Flow


def test_flow_issues_audience_bound_token(flow: Flow, public_client) -> None:
    tokens = flow.get_tokens(public_client.client_id)
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "mcp"
    from oauth2_provider.models import get_access_token_model

    at = get_access_token_model().objects.get()
    assert at.resource == [PUBLIC_BASE + "/mcp"]
    assert at.token == ""  # hashed at rest


def test_refresh_rotation_grace_and_reuse(flow: Flow, public_client) -> None:
    tokens = flow.get_tokens(public_client.client_id)
    data = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": public_client.client_id,
    }
    first = flow.token(data)
    assert first.status_code == 200, first.content
    second = flow.token(data)  # within grace: a sibling pair
    assert second.status_code == 200, second.content
    assert second.json()["access_token"] != first.json()["access_token"]
    from django.test import override_settings

    with override_settings(MCPGATE_REFRESH_GRACE_SECONDS=0):
        third = flow.token(data)
    assert third.status_code == 400, third.content
    assert third.json()["error"] == "invalid_grant"
    # the whole family is gone
    again = flow.token({**data, "refresh_token": first.json()["refresh_token"]})
    assert again.status_code == 400


def test_metadata(http, db) -> None:
    r = http.get("/.well-known/oauth-authorization-server", HTTP_HOST="mcp.example.com")
    print(r.json())
    r = http.get("/.well-known/oauth-protected-resource/mcp", HTTP_HOST="MCP.example.com")
    print(r.json())
    r = http.get("/.well-known/oauth-protected-resource", HTTP_HOST="127.0.0.1:8000")
    print(r.json())
    r = http.post(
        "/oauth/register",
        {"client_name": "x", "redirect_uris": ["http://127.0.0.1:5555/cb"], "token_endpoint_auth_method": "none"},
        content_type="application/json",
        HTTP_HOST="mcp.example.com",
    )
    print(r.status_code, r.json())
    r = http.post(
        "/oauth/register",
        {
            "client_name": "x",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "token_endpoint_auth_method": "client_secret_post",
        },
        content_type="application/json",
        HTTP_HOST="mcp.example.com",
    )
    print(r.status_code, r.json())
    r = http.post(
        "/oauth/register",
        {"client_name": "x", "redirect_uris": ["https://evil.example/cb"]},
        content_type="application/json",
        HTTP_HOST="mcp.example.com",
    )
    print(r.status_code, r.json())
    r = http.get("/nope", HTTP_HOST="evil.example")
    print(r.status_code, r.content)
