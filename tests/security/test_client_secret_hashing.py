"""Client secrets: no CPU lever at /oauth/token and /oauth/revoke for callers who have not authenticated.

A wrong secret for a confidential client, or Basic credentials naming a public client, used to run
PBKDF2 at Django's 1,000,000 iterations (about half a second of CPU each): 48 parallel requests took
the server down. Client secrets are generated, high-entropy strings, so they get a fast salted hash
(oauth_ext.hashers.ClientSecretHasher), and public clients have no secret at all.

CPU is measured with ``time.process_time`` (this process's CPU, not the wall clock), so a loaded
machine slows both sides of a comparison alike.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any, ClassVar

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.core.management import call_command
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, User
from oauth_ext.services import client_create, client_rotate_secret
from oauth_ext.validators import MCPGateValidator
from tests.conftest import (
    CLAUDE_CALLBACK,
    GEMINI_CALLBACK,
    LOOPBACK_REDIRECT,
    PKCE,
    Flow,
    authorize_params,
    basic_auth,
    dot_settings,
    oauth_error,
    register,
)
from tests.personas import OLIVIA

pytestmark = pytest.mark.django_db

INVALID_CLIENT = oauth_error("invalid_client", "Client authentication failed.")
# How oauth_ext.hashers.ClientSecretHasher stores a secret: "<algorithm>$1$<salt>$<hash>".
FAST = "client_secret_pbkdf2_sha256"
# A request's own work (routing, client lookup, audit row) costs about 10 ms of CPU here, one
# PBKDF2 verification about 250 ms: REQUESTS of them must cost less than a single verification
# by the old hasher (which made each of them cost one).
REQUESTS = 5


def one_pbkdf2_verification() -> float:
    """CPU seconds of one failed check against a secret stored by Django's default PBKDF2 hasher."""
    stored = make_password("the-real-secret", hasher="pbkdf2_sha256")
    runs = []
    for _ in range(2):
        start = time.process_time()
        check_password("a-wrong-guess", stored)
        runs.append(time.process_time() - start)
    return min(runs)


def cpu_of(request: Callable[[], Any], times: int = REQUESTS) -> float:
    start = time.process_time()
    for _ in range(times):
        request()
    return time.process_time() - start


def assert_invalid_client(response: Any) -> None:
    assert response.status_code == 401, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json() == INVALID_CLIENT


@pytest.fixture
def gemini(db: Any) -> tuple[Client, str]:
    client, secret = client_create(name="Gemini Enterprise", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    assert secret is not None
    return client, secret


def code_request(flow: Flow, client: Client) -> dict[str, str]:
    """A valid RFC 6749 §4.1.3 token request body for ``client`` (authentication left to the caller)."""
    query, pkce, _ = flow.authorize_code(client.client_id, redirect_uri=GEMINI_CALLBACK)
    return {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": GEMINI_CALLBACK,
        "code_verifier": pkce.verifier,
    }


def stored_secret(client: Client) -> str:
    return str(Client.objects.values_list("client_secret", flat=True).get(pk=client.pk))


# ---------------------------------------------------------------------------
# The hasher
# ---------------------------------------------------------------------------
def test_dot_hashes_client_secrets_with_the_fast_hasher() -> None:
    assert oauth2_settings.CLIENT_SECRET_HASHER == FAST
    assert identify_hasher(make_password("x", hasher=FAST)).algorithm == FAST


def test_peoples_passwords_keep_djangos_slow_default_hasher(settings: Any) -> None:
    assert settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.PBKDF2PasswordHasher"
    assert "oauth_ext.hashers.ClientSecretHasher" in settings.PASSWORD_HASHERS


def test_two_hundred_wrong_secrets_cost_less_than_one_pbkdf2_verification(gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    stored = stored_secret(client)
    validator = MCPGateValidator()
    spent = cpu_of(lambda: validator._check_secret("a-wrong-guess", stored), times=200)
    assert spent < one_pbkdf2_verification()


def test_a_new_confidential_secret_is_stored_salted_with_the_fast_hasher(gemini: tuple[Client, str]) -> None:
    client, secret = gemini
    stored = stored_secret(client)
    assert stored.startswith(FAST + "$1$")
    assert secret not in stored
    assert check_password(secret, stored)
    again, _ = client_create(name="Gemini 2", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    assert stored_secret(again) != stored  # salted: no two rows alike, whatever the secrets


def test_a_rotated_secret_is_stored_with_the_fast_hasher(gemini: tuple[Client, str], flow: Flow) -> None:
    client, old = gemini
    olivia = User.objects.create(username=OLIVIA, email=OLIVIA, is_staff=True)
    new = client_rotate_secret(client=client, operator=olivia)
    assert stored_secret(client).startswith(FAST + "$")
    auth = basic_auth(client.client_id, new)
    assert flow.token(code_request(flow, client), HTTP_AUTHORIZATION=auth).status_code == 200
    assert_invalid_client(flow.token(code_request(flow, client), HTTP_AUTHORIZATION=basic_auth(client.client_id, old)))


def test_a_dynamically_registered_confidential_client_gets_a_fast_hashed_secret_that_works(
    http: Any, flow: Flow
) -> None:
    response = register(
        http,
        {
            "client_name": "Server-side agent",
            "redirect_uris": [GEMINI_CALLBACK],
            "token_endpoint_auth_method": "client_secret_basic",
        },
    )
    assert response.status_code == 201, response.content
    issued = response.json()
    client = Client.objects.get(client_id=issued["client_id"])
    assert stored_secret(client).startswith(FAST + "$")
    auth = basic_auth(client.client_id, issued["client_secret"])
    assert flow.token(code_request(flow, client), HTTP_AUTHORIZATION=auth).status_code == 200


# ---------------------------------------------------------------------------
# No CPU lever at /oauth/token and /oauth/revoke
# ---------------------------------------------------------------------------
def test_wrong_secrets_for_a_confidential_client_cost_no_key_stretching(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    data = code_request(flow, client)
    wrong = basic_auth(client.client_id, "a-wrong-guess")
    responses: list[Any] = []

    spent = cpu_of(lambda: responses.append(flow.token(data, HTTP_AUTHORIZATION=wrong)))

    assert spent < one_pbkdf2_verification()
    for response in responses:
        assert_invalid_client(response)
    assert not get_access_token_model().objects.filter(application=client).exists()


def test_wrong_secrets_in_the_body_cost_no_key_stretching(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    data = {**code_request(flow, client), "client_id": client.client_id, "client_secret": "a-wrong-guess"}
    responses: list[Any] = []

    spent = cpu_of(lambda: responses.append(flow.token(data)))

    assert spent < one_pbkdf2_verification()
    for response in responses:
        assert_invalid_client(response)


def test_wrong_secrets_at_revoke_cost_no_key_stretching(flow: Flow, gemini: tuple[Client, str]) -> None:
    client, _secret = gemini
    wrong = basic_auth(client.client_id, "a-wrong-guess")
    responses: list[Any] = []

    def revoke() -> None:
        responses.append(flow.http.post("/oauth/revoke", {"token": "x"}, HTTP_HOST=flow.host, HTTP_AUTHORIZATION=wrong))

    spent = cpu_of(revoke)

    assert spent < one_pbkdf2_verification()
    for response in responses:
        assert_invalid_client(response)


def test_basic_credentials_naming_a_public_client_cost_no_hashing_and_are_refused(http: Any, flow: Flow) -> None:
    response = register(
        http, {"client_name": "Claude Code", "redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none"}
    )
    assert response.status_code == 201, response.content
    client_id = response.json()["client_id"]
    data = {"grant_type": "authorization_code", "code": "a-code", "redirect_uri": LOOPBACK_REDIRECT}
    responses: list[Any] = []

    def token_and_revoke() -> None:
        responses.append(flow.token(data, HTTP_AUTHORIZATION=basic_auth(client_id, "a-guess")))
        responses.append(
            flow.http.post(
                "/oauth/revoke",
                {"token": "x"},
                HTTP_HOST=flow.host,
                HTTP_AUTHORIZATION=basic_auth(client_id, "a-guess"),
            )
        )

    spent = cpu_of(token_and_revoke, times=3)

    assert spent < one_pbkdf2_verification()
    for refused in responses:
        assert_invalid_client(refused)


@pytest.mark.parametrize("secret", ["", "a-guess"])
def test_a_public_client_never_authenticates_with_a_secret(http: Any, flow: Flow, secret: str) -> None:
    """Not even the empty one it stores: a public client authenticates with "none" (RFC 6749 §2.1)."""
    client, _ = client_create(name="Cursor", redirect_uris=[LOOPBACK_REDIRECT], confidential=False)
    data = {"grant_type": "authorization_code", "code": "a-code", "redirect_uri": LOOPBACK_REDIRECT}
    assert_invalid_client(flow.token(data, HTTP_AUTHORIZATION=basic_auth(client.client_id, secret)))


def test_a_confidential_client_without_a_stored_secret_cannot_authenticate_with_an_empty_one(
    flow: Flow, gemini: tuple[Client, str]
) -> None:
    """A client whose secret was blanked (made public, then confidential again) has no secret to match."""
    client, _secret = gemini
    Client.objects.filter(pk=client.pk).update(client_secret="", hash_client_secret=False)
    data = code_request(flow, client)
    assert_invalid_client(flow.token(data, HTTP_AUTHORIZATION=basic_auth(client.client_id, "")))
    assert_invalid_client(flow.token({**data, "client_id": client.client_id, "client_secret": ""}))


def test_dot_still_verifies_both_client_authentication_methods_through_check_secret(
    flow: Flow, gemini: tuple[Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the private DOT hook MCPGateValidator._check_secret overrides (HTTP Basic and body, RFC 6749 §2.3.1)."""
    client, _secret = gemini
    seen: list[str] = []
    original = MCPGateValidator._check_secret

    def spy(self: MCPGateValidator, provided: str, stored: str) -> bool:
        seen.append(provided)
        return original(self, provided, stored)

    monkeypatch.setattr(MCPGateValidator, "_check_secret", spy)
    flow.token(code_request(flow, client), HTTP_AUTHORIZATION=basic_auth(client.client_id, "by-basic"))
    flow.token({**code_request(flow, client), "client_id": client.client_id, "client_secret": "in-the-body"})
    assert seen == ["by-basic", "in-the-body"]


# ---------------------------------------------------------------------------
# Secrets stored before: still valid, moved to the fast hasher on use
# ---------------------------------------------------------------------------
@pytest.fixture
def stored_before(gemini: tuple[Client, str]) -> tuple[Client, str, str]:
    """Gemini's secret as it was stored before this change: PBKDF2 at Django's default iterations."""
    client, secret = gemini
    old = make_password(secret, hasher="pbkdf2_sha256")
    Client.objects.filter(pk=client.pk).update(client_secret=old)
    return client, secret, old


@pytest.mark.parametrize("method", ["basic", "body"])
def test_a_secret_stored_with_pbkdf2_still_authenticates_and_is_rehashed_with_the_fast_hasher(
    flow: Flow, stored_before: tuple[Client, str, str], method: str
) -> None:
    client, secret, old = stored_before
    data = code_request(flow, client)
    if method == "basic":
        response = flow.token(data, HTTP_AUTHORIZATION=basic_auth(client.client_id, secret))
    else:
        response = flow.token({**data, "client_id": client.client_id, "client_secret": secret})
    assert response.status_code == 200, response.content

    now = stored_secret(client)
    assert now != old
    assert now.startswith(FAST + "$")
    assert check_password(secret, now)
    again = flow.token(code_request(flow, client), HTTP_AUTHORIZATION=basic_auth(client.client_id, secret))
    assert again.status_code == 200, again.content


def test_a_wrong_secret_leaves_a_pbkdf2_secret_as_it_was(flow: Flow, stored_before: tuple[Client, str, str]) -> None:
    client, _secret, old = stored_before
    response = flow.token(code_request(flow, client), HTTP_AUTHORIZATION=basic_auth(client.client_id, "a-guess"))
    assert_invalid_client(response)
    assert stored_secret(client) == old


# ---------------------------------------------------------------------------
# Public clients have no secret
# ---------------------------------------------------------------------------
def assert_no_secret(client: Client) -> None:
    client.refresh_from_db()
    assert client.client_type == Client.CLIENT_PUBLIC
    assert client.client_secret == ""
    assert client.hash_client_secret is False


def test_a_dynamically_registered_public_client_stores_no_secret(http: Any) -> None:
    response = register(
        http, {"client_name": "Claude Code", "redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none"}
    )
    assert response.status_code == 201, response.content
    assert "client_secret" not in response.json()
    assert_no_secret(Client.objects.get(client_id=response.json()["client_id"]))


def test_an_operator_made_public_client_stores_no_secret() -> None:
    client, secret = client_create(name="Cursor", redirect_uris=[LOOPBACK_REDIRECT], confidential=False)
    assert secret is None
    assert_no_secret(client)
    call_command("create_client", "--name", "Cursor 2", "--redirect-uri", LOOPBACK_REDIRECT, stdout=StringIO())
    assert_no_secret(Client.objects.get(name="Cursor 2"))


class MetadataDocuments:
    """Stands in for DOT's CIMD fetcher (its one seam, CIMD_METADATA_FETCHER): no network."""

    documents: ClassVar[dict[str, dict[str, Any]]] = {}

    def fetch(self, client_id: str) -> tuple[dict[str, Any], int]:
        return self.documents[client_id], 300


CLAUDE_ID = "https://claude.ai/oauth/mcp-client-metadata"


@pytest.fixture
def claude_document() -> Iterator[None]:
    MetadataDocuments.documents = {
        CLAUDE_ID: {
            "client_id": CLAUDE_ID,
            "client_name": "Claude",
            "redirect_uris": [CLAUDE_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    }
    with dot_settings(CIMD_METADATA_FETCHER=f"{__name__}.MetadataDocuments"):
        yield


def test_a_client_known_by_its_metadata_document_stores_no_secret(flow: Flow, claude_document: None) -> None:
    page = flow.authorize(authorize_params(CLAUDE_ID, PKCE.make(), redirect_uri=CLAUDE_CALLBACK))
    assert page.status_code == 200, page.content
    assert_no_secret(Client.objects.get(client_id=CLAUDE_ID))
    data = {"grant_type": "authorization_code", "code": "a-code", "redirect_uri": CLAUDE_CALLBACK}
    assert_invalid_client(flow.token(data, HTTP_AUTHORIZATION=basic_auth(CLAUDE_ID, "a-guess")))


def test_the_migration_blanks_the_secrets_of_existing_public_clients_only(gemini: tuple[Client, str]) -> None:
    confidential, _secret = gemini
    public, _ = client_create(name="Cursor", redirect_uris=[LOOPBACK_REDIRECT], confidential=False)
    # What DOT stored for every public client before: a hash of a generated secret.
    Client.objects.filter(pk=public.pk).update(
        client_secret=make_password("generated", hasher="pbkdf2_sha256"), hash_client_secret=True
    )
    before = stored_secret(confidential)

    migration = importlib.import_module("oauth_ext.migrations.0004_public_clients_have_no_secret")
    migration.public_clients_have_no_secret(django_apps, None)

    assert_no_secret(public)
    assert stored_secret(confidential) == before
    assert not AuditEvent.objects.filter(event=AuditKind.CLIENT_SECRET_ROTATED).exists()
