"""Pins the one private DOT function we call, ``_issue_registration_token`` (services.registration_token_issue).

DOT 3.4 has no public way to mint an RFC 7592 registration access token outside its own views. If
DOT renames the function, changes its arguments or what it issues, these fail before a rotated
token silently stops authenticating at /oauth/register/<client_id>.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import pytest
from django.test import Client as HttpClient
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import dynamic_client_registration

from oauth_ext import services
from oauth_ext.models import Client
from tests.conftest import CLAUDE_CALLBACK, PUBLIC, register

pytestmark = pytest.mark.django_db


def test_dot_still_has_the_function_with_the_same_arguments() -> None:
    issue = dynamic_client_registration._issue_registration_token
    assert list(inspect.signature(issue).parameters) == ["application", "user"]
    # Its own views still call it, so what it mints is what they authenticate.
    source = inspect.getsource(dynamic_client_registration)
    assert source.count("_issue_registration_token(application, user)") == 2


def test_it_mints_a_registration_scoped_hashed_token_for_the_client(public_client: Client) -> None:
    raw = dynamic_client_registration._issue_registration_token(public_client, None)

    token = get_access_token_model().objects.get(token_checksum=hashlib.sha256(raw.encode()).hexdigest())
    assert token.application == public_client
    assert token.user is None
    assert token.scope == oauth2_settings.DCR_REGISTRATION_SCOPE
    assert token.is_valid([oauth2_settings.DCR_REGISTRATION_SCOPE])


def test_a_token_issued_through_it_is_accepted_by_dots_management_view(http: HttpClient) -> None:
    """The rotated token reads the registration (RFC 7592 §2.1); the one before it no longer does."""
    body: dict[str, Any] = register(
        http, {"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}
    ).json()
    client = Client.objects.get(client_id=body["client_id"])

    rotated = services.registration_token_issue(client=client)

    def read(token: str) -> int:
        return http.get(
            f"/oauth/register/{client.client_id}", HTTP_HOST=PUBLIC, HTTP_AUTHORIZATION=f"Bearer {token}"
        ).status_code

    assert read(rotated) == 200
    assert read(body["registration_access_token"]) == 401
