"""OAuth steps through the deployment: registration, the person's approval through oauth2-proxy, tokens."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx2

from tests.e2e.oauthclient import PKCE, Discovery, Grant, authorization_query, discover, exchange, json_of, register

from . import credentials
from .browser import approve
from .deployment import Deployment

LOOPBACK_REDIRECT = "http://127.0.0.1:33419/callback"
CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"
GEMINI_CALLBACK = "https://vertexaisearch.cloud.google.com/oauth-redirect"


def grant(
    browser: httpx2.Client,
    discovery: Discovery,
    *,
    client_id: str,
    redirect_uri: str,
    consent_text: tuple[str, ...] = (),
) -> Grant:
    """The person approves ``client_id`` in their browser (signing in through oauth2-proxy first if needed)."""
    pkce = PKCE.make()
    state = "st-" + secrets.token_urlsafe(12)
    query = authorization_query(client_id, redirect_uri, discovery.resource, state, pkce.challenge)
    params = approve(
        browser, discovery.endpoint("authorization") + "?" + query, redirect_uri, consent_text=consent_text
    )
    assert "error" not in params, params
    assert params["state"] == state
    assert params["iss"] == discovery.issuer
    return Grant(params["code"], redirect_uri, pkce, state, params, consent_shown=True)


def loopback_tokens(
    deployed: Deployment, browser: httpx2.Client, name: str, *, host: str = "internal"
) -> tuple[str, dict[str, Any]]:
    """A public loopback client (Claude Code's shape) registered, approved and holding tokens: (client_id, tokens)."""
    base = deployed.base(host)
    with deployed.client(host) as http:
        discovery = discover(http, base + "/mcp")
        client_id = str(register(http, discovery, name, LOOPBACK_REDIRECT, "none")["client_id"])
        code = grant(browser, discovery, client_id=client_id, redirect_uri=LOOPBACK_REDIRECT)
        response = exchange(http, discovery, code, client_id=client_id)
        assert response.status_code == 200, response.text
        return client_id, json_of(response)


def create_client(deployed: Deployment, name: str, redirect_uri: str) -> tuple[str, str]:
    """``manage.py create_client --confidential``, as an operator runs it: (client_id, client_secret)."""
    made = json.loads(
        deployed.manage("create_client", "--name", name, "--redirect-uri", redirect_uri, "--confidential")
    )
    credentials.remember(made["client_secret"])
    return str(made["client_id"]), str(made["client_secret"])
