"""What mcpgate relies on in django-oauth-toolkit beyond its public surface: each test fails if an upgrade changes it.

One private DOT hook is still overridden, ``OAuth2Validator._check_secret`` (see its docstring in
oauth_ext/validators.py for why no public one serves); every other one the validator used to
override or call was replaced by public methods and the models. The resource server's own token
lookup (mcp_bridge.tokens) stands in for DOT's, and must read tokens the way DOT stores them.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.hashers import make_password
from django.utils import timezone
from oauth2_provider.models import AccessToken, get_access_token_model, set_token_value
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request as OAuthlibRequest

from mcp_bridge import tokens
from oauth_ext.models import Client, User
from oauth_ext.validators import MCPGateValidator
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

SECRET = "the-generated-secret"


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


# -- _check_secret: the one place both client authentication methods verify a secret ----------------


def test_dot_still_has_check_secret_with_the_parameters_overridden() -> None:
    assert parameters(OAuth2Validator._check_secret) == ["self", "provided_secret", "stored_secret"]
    assert parameters(MCPGateValidator._check_secret) == parameters(OAuth2Validator._check_secret)


def test_dots_check_secret_answers_whether_the_secret_matches_the_stored_hash() -> None:
    """The meaning the override keeps (and extends with rehashing): True for the secret, False otherwise."""
    stored = make_password(SECRET, hasher="pbkdf2_sha256")

    assert OAuth2Validator()._check_secret(SECRET, stored) is True
    assert OAuth2Validator()._check_secret("a-wrong-guess", stored) is False


@pytest.fixture
def gemini(db: Any) -> Client:
    """A confidential client whose secret is stored hashed, as registration stores it."""
    return Client.objects.create(
        name="Gemini",
        client_type=Client.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris="https://vertexaisearch.cloud.google.com/oauth-redirect",
        client_secret=SECRET,
    )


def token_request(**headers: str) -> OAuthlibRequest:
    request = OAuthlibRequest("http://127.0.0.1:8000/oauth/token", http_method="POST", headers=headers)
    request.grant_type = "authorization_code"
    return request


@pytest.mark.parametrize("method", ["basic", "body"])
def test_dot_authenticates_clients_by_both_methods_through_check_secret(
    gemini: Client, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """RFC 6749 §2.3.1: HTTP Basic and body credentials both reach ``_check_secret`` with the presented secret."""
    seen: list[tuple[str, str]] = []
    original = MCPGateValidator._check_secret

    def spy(self: MCPGateValidator, provided_secret: str, stored_secret: str) -> bool:
        seen.append((provided_secret, stored_secret))
        return original(self, provided_secret, stored_secret)

    monkeypatch.setattr(MCPGateValidator, "_check_secret", spy)
    if method == "basic":
        credentials = base64.b64encode(f"{gemini.client_id}:{SECRET}".encode()).decode()
        request = token_request(HTTP_AUTHORIZATION=f"Basic {credentials}")
    else:
        request = token_request()
        request.client_id, request.client_secret = gemini.client_id, SECRET

    assert MCPGateValidator().authenticate_client(request) is True
    assert seen == [(SECRET, Client.objects.get(pk=gemini.pk).client_secret)]


# -- Token storage: what mcp_bridge.tokens reads ----------------------------------------------------


def test_dot_stores_an_access_token_as_the_sha256_checksum_mcp_bridge_looks_up(gemini: Client) -> None:
    alice = User.objects.create(username=ALICE, email=ALICE)
    token = get_access_token_model()(
        user=alice, application=gemini, scope="mcp", expires=timezone.now() + timedelta(hours=1)
    )
    set_token_value(token, "raw-token-value")
    token.save()

    checksum = hashlib.sha256(b"raw-token-value").hexdigest()
    assert get_access_token_model().objects.get(pk=token.pk).token_checksum == checksum


def test_mcp_bridge_lookup_returns_what_dots_own_lookup_returns(gemini: Client, django_assert_num_queries: Any) -> None:
    """Every concrete field of the token, its user and its client, as DOT's ``select_related`` query loads them."""
    alice = User.objects.create(username=ALICE, email=ALICE, proxy_groups=["eng"])
    token = get_access_token_model()(
        user=alice,
        application=gemini,
        scope="mcp notes:write",
        expires=timezone.now() + timedelta(hours=1),
        resource=["http://127.0.0.1:8000/mcp"],
    )
    set_token_value(token, "raw-token-value")
    token.save()
    checksum = hashlib.sha256(b"raw-token-value").hexdigest()
    expected = AccessToken.objects.select_related("application", "user").get(token_checksum=checksum)

    with django_assert_num_queries(1):
        loaded = tokens.load_access_token(checksum)
        user, client = loaded.user, loaded.application

    def values(instance: Any) -> dict[str, Any]:
        return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}

    assert values(loaded) == values(expected)
    assert values(user) == values(expected.user)
    assert values(client) == values(expected.application)
    assert tokens.load_access_token(hashlib.sha256(b"not-issued").hexdigest()) is None
