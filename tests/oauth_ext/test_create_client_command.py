"""``manage.py create_client``: an operator-made client, printed as one JSON object (issue 2, item 7)."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.hashers import check_password
from django.core.management import CommandError, call_command

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from tests.conftest import CLAUDE_CALLBACK, GEMINI_CALLBACK, LOOPBACK_REDIRECT, Flow, basic_auth

pytestmark = pytest.mark.django_db


def create_client(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("create_client", *args, stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines  # one JSON object, nothing else (scripts parse it)
    return dict(json.loads(lines[0]))


def test_create_public_client_prints_only_its_id() -> None:
    result = create_client("--name", "Cursor", "--redirect-uri", "cursor://anysphere.cursor-mcp/oauth/callback")
    assert set(result) == {"client_id"}
    client = Client.objects.get(client_id=result["client_id"])
    assert client.name == "Cursor"
    assert client.client_type == Client.CLIENT_PUBLIC
    assert client.token_endpoint_auth_method == "none"
    assert client.registration_source == Client.RegistrationSource.MANUAL
    assert client.authorization_grant_type == Client.GRANT_AUTHORIZATION_CODE
    assert client.client_secret == ""  # a public client keeps none, not even a hash of ""
    assert client.hash_client_secret is False


def test_create_confidential_client_prints_its_secret_once_and_stores_it_hashed() -> None:
    result = create_client("--name", "Gemini Enterprise", "--redirect-uri", GEMINI_CALLBACK, "--confidential")
    assert set(result) == {"client_id", "client_secret"}
    client = Client.objects.get(client_id=result["client_id"])
    assert client.client_type == Client.CLIENT_CONFIDENTIAL
    assert client.token_endpoint_auth_method == "client_secret_basic"
    assert client.client_secret.startswith("client_secret_pbkdf2_sha256$")
    assert check_password(result["client_secret"], client.client_secret)


def test_create_client_accepts_several_redirect_uris() -> None:
    result = create_client("--name", "Claude", "--redirect-uri", CLAUDE_CALLBACK, "--redirect-uri", LOOPBACK_REDIRECT)
    assert Client.objects.get(client_id=result["client_id"]).redirect_uris == f"{CLAUDE_CALLBACK} {LOOPBACK_REDIRECT}"


def test_create_client_is_audited_without_the_secret() -> None:
    result = create_client("--name", "Gemini", "--redirect-uri", GEMINI_CALLBACK, "--confidential")
    event = AuditEvent.objects.get(event=AuditKind.CLIENT_CREATED)
    assert event.client is not None and event.client.client_id == result["client_id"]
    assert event.detail == {"confidential": True}
    assert result["client_secret"] not in json.dumps(event.detail)


def test_create_client_refuses_redirect_off_the_allowlist() -> None:
    with pytest.raises(CommandError) as excinfo:
        create_client("--name", "Evil", "--redirect-uri", "https://evil.example/cb")
    assert (
        str(excinfo.value) == "redirect_uris: 'https://evil.example/cb' is not on this server's redirect URI allowlist."
    )
    assert not Client.objects.exists()


def test_create_client_refuses_http_off_loopback() -> None:
    with pytest.raises(CommandError) as excinfo:
        create_client("--name", "Evil", "--redirect-uri", "http://example.com/cb")
    assert "http redirect URIs are allowed only on loopback" in str(excinfo.value)


@pytest.mark.parametrize("missing", ["--name", "--redirect-uri"])
def test_create_client_requires_name_and_redirect_uri(missing: str) -> None:
    args = {"--name": "Cursor", "--redirect-uri": LOOPBACK_REDIRECT}
    del args[missing]
    with pytest.raises(CommandError) as excinfo:
        create_client(*[item for pair in args.items() for item in pair])
    assert "the following arguments are required" in str(excinfo.value)


def test_operator_made_confidential_client_completes_the_flow(flow: Flow) -> None:
    """Claude with static credentials uses client_secret_post; Gemini may use either."""
    result = create_client("--name", "Gemini", "--redirect-uri", GEMINI_CALLBACK, "--confidential")
    client_id, secret = result["client_id"], result["client_secret"]
    for use_basic in (True, False):
        query, pkce, _ = flow.authorize_code(client_id, redirect_uri=GEMINI_CALLBACK)
        data = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": GEMINI_CALLBACK,
            "code_verifier": pkce.verifier,
        }
        if use_basic:
            response = flow.token(data, HTTP_AUTHORIZATION=basic_auth(client_id, secret))
        else:
            response = flow.token({**data, "client_id": client_id, "client_secret": secret})
        assert response.status_code == 200, response.content
