"""Each row of the client table through the deployed shape: oauth2-proxy (real) signs the person in
with the mock provider, gunicorn serves mcpgate, clients use the internal or the public host.

Personas: Alice (alice@example.com, group "eng") and Bob (bob@example.com) sign in at the
provider; the organisation's domain is example.com.
"""

from __future__ import annotations

import pytest

from oauth_ext.models import Client, User
from tests.e2e.oauthclient import discover, exchange, json_of, refresh

from .browser import approve
from .deployment import Deployment
from .flows import CLAUDE_CALLBACK, GEMINI_CALLBACK, LOOPBACK_REDIRECT, create_client, grant, register
from .mcpclient import bearer_whoami, mcp_status, sdk_oauth_whoami

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_claude_code_local_pkce_signs_in_through_oauth2_proxy(deployed: Deployment) -> None:
    """Claude Code's shape with the ``mcp`` SDK's own OAuth client on the internal host: 401, discovery,
    DCR, PKCE; the browser goes oauth2-proxy → the provider → back → consent; whoami is Alice."""
    sign_ins_before = len(deployed.mock.sign_ins)
    with deployed.browser("alice@example.com", groups="eng") as browser:
        run = sdk_oauth_whoami(
            deployed.internal + "/mcp",
            redirect_uri=LOOPBACK_REDIRECT,
            client_name="Claude Code (proxy)",
            approve=lambda url: approve(
                browser, url, LOOPBACK_REDIRECT, consent_text=("Claude Code (proxy)", "127.0.0.1:33419")
            ),
        )
    assert run.tools == ["add_note", "list_notes", "whoami"]
    assert run.whoami["email"] == "alice@example.com"
    assert run.whoami["groups"] == ["eng"]
    assert run.whoami["host"] == "internal"
    assert run.whoami["client_name"] == "Claude Code (proxy)"
    # Signed in once, at the provider, through oauth2-proxy.
    assert deployed.mock.sign_ins[sign_ins_before:] == ["alice@example.com"]
    assert User.objects.get(email="alice@example.com").is_active


def test_claude_desktop_cloud_pkce_on_the_public_host(deployed: Deployment) -> None:
    """Claude (claude.ai, Desktop): DCR with Anthropic's callback and client_secret_post; the test
    plays Anthropic's side: takes the code from the redirect, exchanges it with the secret, calls /mcp."""
    with deployed.client("public") as http, deployed.browser("bob@example.com") as browser:
        discovery = discover(http, deployed.public + "/mcp")
        assert discovery.resource == deployed.public + "/mcp"
        registered = register(http, discovery, "Claude", CLAUDE_CALLBACK, "client_secret_post")
        assert registered["token_endpoint_auth_method"] == "client_secret_post"
        client_id, secret = registered["client_id"], registered["client_secret"]
        code = grant(browser, discovery, client_id=client_id, redirect_uri=CLAUDE_CALLBACK, consent_text=("claude.ai",))
        tokens = json_of(
            exchange(http, discovery, code, client_id=client_id, client_secret=secret, auth_method="client_secret_post")
        )
    identity = bearer_whoami(deployed.public + "/mcp", tokens["access_token"])
    assert (identity["email"], identity["host"], identity["client_name"]) == ("bob@example.com", "public", "Claude")


def test_gemini_enterprise_confidential_client_basic_post_and_refresh(deployed: Deployment) -> None:
    """An operator-made client (create_client); the code exchanged with the secret by
    client_secret_basic and by client_secret_post; refresh; then whoami."""
    client_id, secret = create_client(deployed, "Gemini Enterprise", GEMINI_CALLBACK)
    assert Client.objects.get(client_id=client_id).client_type == Client.CLIENT_CONFIDENTIAL
    with deployed.client("public") as http, deployed.browser("alice@example.com") as browser:
        discovery = discover(http, deployed.public + "/mcp")
        issued = {}
        for method in ("client_secret_basic", "client_secret_post"):
            code = grant(browser, discovery, client_id=client_id, redirect_uri=GEMINI_CALLBACK)
            response = exchange(http, discovery, code, client_id=client_id, client_secret=secret, auth_method=method)
            assert response.status_code == 200, (method, response.text)
            issued[method] = json_of(response)
        refreshed = refresh(
            http,
            discovery,
            issued["client_secret_basic"]["refresh_token"],
            client_id=client_id,
            client_secret=secret,
            auth_method="client_secret_basic",
        )
        assert refreshed.status_code == 200, refreshed.text
        tokens = json_of(refreshed)
        assert tokens["refresh_token"] != issued["client_secret_basic"]["refresh_token"]
        # The wrong secret: invalid_client, by either method.
        wrong = exchange(
            http,
            discovery,
            grant(browser, discovery, client_id=client_id, redirect_uri=GEMINI_CALLBACK),
            client_id=client_id,
            client_secret="x" * 40,
            auth_method="client_secret_post",
        )
        assert (wrong.status_code, json_of(wrong)["error"]) == (401, "invalid_client")
    identity = bearer_whoami(deployed.public + "/mcp", tokens["access_token"])
    assert (identity["email"], identity["client_name"]) == ("alice@example.com", "Gemini Enterprise")
    assert mcp_status(deployed.client("public"), issued["client_secret_post"]["access_token"]) == 200


CURSOR_AGENTS_CALLBACK = "https://www.cursor.com/agents/mcp/oauth/callback"


def test_cursor_cloud_agents_static_and_dynamic_clients_on_the_public_host(deployed: Deployment) -> None:
    """Cursor Cloud Agents: an operator-made client with a secret, and a self-registered public one."""
    static_id, static_secret = create_client(deployed, "Cursor Cloud Agents", CURSOR_AGENTS_CALLBACK)
    with deployed.client("public") as http, deployed.browser("alice@example.com") as browser:
        discovery = discover(http, deployed.public + "/mcp")
        dynamic_id = register(http, discovery, "Cursor agent", CURSOR_AGENTS_CALLBACK, "none")["client_id"]
        tokens = {}
        for client_id, secret, method in (
            (static_id, static_secret, "client_secret_post"),
            (dynamic_id, None, "none"),
        ):
            code = grant(browser, discovery, client_id=client_id, redirect_uri=CURSOR_AGENTS_CALLBACK)
            response = exchange(http, discovery, code, client_id=client_id, client_secret=secret, auth_method=method)
            assert response.status_code == 200, (method, response.text)
            tokens[method] = json_of(response)["access_token"]
    for method, name in (("client_secret_post", "Cursor Cloud Agents"), ("none", "Cursor agent")):
        identity = bearer_whoami(deployed.public + "/mcp", tokens[method])
        assert (identity["email"], identity["client_name"], identity["host"]) == ("alice@example.com", name, "public")
