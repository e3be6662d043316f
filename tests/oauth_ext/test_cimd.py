"""Client ID Metadata Documents (checklist AS7, S5): URL-shaped client_ids, from allowlisted hosts only.

No test makes a network call: DOT's fetcher is replaced through its one seam, the
CIMD_METADATA_FETCHER setting, by FakeFetcher, which serves documents from a dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from django.test import Client as HttpClient
from oauth2_provider.cimd import CIMDError

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client
from tests.conftest import (
    CLAUDE_CALLBACK,
    PKCE,
    PUBLIC,
    Flow,
    authorize_params,
    dot_settings,
)

pytestmark = pytest.mark.django_db

CLAUDE_ID = "https://claude.ai/oauth/mcp-client-metadata"
VSCODE_ID = "https://vscode.dev/oauth/client-metadata.json"


class FakeFetcher:
    """Stands in for DOT's SafeMetadataFetcher: ``fetch(client_id) -> (document, max_age)``."""

    documents: ClassVar[dict[str, dict[str, Any]]] = {}
    calls: ClassVar[list[str]] = []

    def fetch(self, client_id: str) -> tuple[dict[str, Any], int]:
        self.calls.append(client_id)
        if client_id not in self.documents:
            raise CIMDError("client_id document returned HTTP 404")
        return self.documents[client_id], 300


def claude_document(**changes: Any) -> dict[str, Any]:
    return {
        "client_id": CLAUDE_ID,
        "client_name": "Claude",
        "redirect_uris": [CLAUDE_CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **changes,
    }


@pytest.fixture
def fetcher() -> Iterator[type[FakeFetcher]]:
    FakeFetcher.documents = {CLAUDE_ID: claude_document()}
    FakeFetcher.calls = []
    with dot_settings(CIMD_METADATA_FETCHER=f"{__name__}.FakeFetcher"):
        yield FakeFetcher


def authorize(flow: Flow, client_id: str, redirect_uri: str = CLAUDE_CALLBACK, **extra: str) -> Any:
    return flow.authorize(authorize_params(client_id, PKCE.make(), redirect_uri=redirect_uri, **extra))


def unknown_client_page(response: Any) -> None:
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert "invalid_request: Invalid client_id parameter value." in response.content.decode()


# ---------------------------------------------------------------------------
# Advertised, resolved, shown
# ---------------------------------------------------------------------------
def test_metadata_advertises_cimd(http: HttpClient) -> None:
    data = http.get("/.well-known/oauth-authorization-server", HTTP_HOST=PUBLIC).json()
    assert data["client_id_metadata_document_supported"] is True


def test_allowlisted_document_resolves_to_a_public_client(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    page = authorize(flow, CLAUDE_ID)
    assert page.status_code == 200, page.content
    assert fetcher.calls == [CLAUDE_ID]
    client = Client.objects.get(client_id=CLAUDE_ID)
    assert client.registration_source == Client.RegistrationSource.CIMD
    assert client.client_type == Client.CLIENT_PUBLIC
    assert client.token_endpoint_auth_method == "none"
    assert client.name == "Claude"
    assert client.redirect_uris == CLAUDE_CALLBACK


def test_consent_page_shows_document_name_and_redirect_host(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    text = authorize(flow, CLAUDE_ID).content.decode()
    assert "Allow <strong>Claude</strong> to use your tools?" in text
    assert "<dd><code>claude.ai</code></dd>" in text
    assert '<span class="badge warn">registered itself</span>' in text


def test_consent_page_warns_about_loopback_only_documents(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    loopback = "http://127.0.0.1/callback"
    fetcher.documents[VSCODE_ID] = {"client_id": VSCODE_ID, "client_name": "VS Code", "redirect_uris": [loopback]}
    page = authorize(flow, VSCODE_ID, redirect_uri="http://127.0.0.1:33418/callback")
    assert page.status_code == 200, page.content
    assert "<strong>Only continue if you started this sign-in yourself</strong>" in page.content.decode()


def test_registration_of_a_document_client_records_address_and_host(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    authorize(flow, CLAUDE_ID)
    authorize(flow, CLAUDE_ID)
    client = Client.objects.get(client_id=CLAUDE_ID)
    assert client.registered_from == "10.9.9.9"  # the test proxy sends no X-Forwarded-For
    assert client.registered_host == "public"
    event = AuditEvent.objects.get(event=AuditKind.REGISTER)
    assert event.client == client
    assert event.detail == {"source": "cimd"}


def test_document_is_cached_not_fetched_every_time(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    authorize(flow, CLAUDE_ID)
    authorize(flow, CLAUDE_ID)
    assert fetcher.calls == [CLAUDE_ID]


def test_document_client_completes_the_flow(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    query, pkce, _ = flow.authorize_code(CLAUDE_ID, redirect_uri=CLAUDE_CALLBACK)
    response = flow.exchange(CLAUDE_ID, query["code"], pkce, redirect_uri=CLAUDE_CALLBACK)
    assert response.status_code == 200, response.content


# ---------------------------------------------------------------------------
# Refusals: all look like an unknown client to the flow
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "client_id",
    [
        "https://evil.example/client.json",
        "https://sub.claude.ai/oauth/mcp-client-metadata",  # the allowlist is exact
        "https://claude.ai.evil.example/oauth/mcp-client-metadata",
    ],
)
def test_document_from_host_not_on_allowlist_refused_without_fetching(
    flow: Flow, fetcher: type[FakeFetcher], client_id: str
) -> None:
    fetcher.documents[client_id] = claude_document(client_id=client_id)
    unknown_client_page(authorize(flow, client_id))
    assert fetcher.calls == []
    assert not Client.objects.exists()


def test_refused_host_causes_no_network_call_with_the_real_fetcher(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    """The allowlist is checked before DOT's fetcher resolves or connects to anything."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr("socket.getaddrinfo", no_network)
    monkeypatch.setattr("urllib3.HTTPSConnectionPool.urlopen", no_network)
    unknown_client_page(authorize(flow, "https://evil.example/client.json"))


def test_allowlist_is_configurable(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    with dot_settings(CIMD_METADATA_FETCHER=f"{__name__}.FakeFetcher", CIMD_ALLOWED_HOSTS=["vscode.dev"]):
        unknown_client_page(authorize(flow, CLAUDE_ID))
    assert fetcher.calls == []


def test_document_whose_client_id_differs_from_its_url_refused(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    fetcher.documents[CLAUDE_ID] = claude_document(client_id="https://claude.ai/other")
    unknown_client_page(authorize(flow, CLAUDE_ID))
    assert not Client.objects.exists()


def test_document_with_redirect_off_the_allowlist_refused(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    fetcher.documents[CLAUDE_ID] = claude_document(redirect_uris=["https://evil.example/cb"])
    unknown_client_page(authorize(flow, CLAUDE_ID, redirect_uri="https://evil.example/cb"))
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"token_endpoint_auth_method": "client_secret_post"},
        {"client_secret": "s3cret"},
        {"redirect_uris": []},
        {"grant_types": ["client_credentials"]},
    ],
)
def test_document_asking_for_what_cimd_forbids_refused(
    flow: Flow, fetcher: type[FakeFetcher], changes: dict[str, Any]
) -> None:
    fetcher.documents[CLAUDE_ID] = claude_document(**changes)
    unknown_client_page(authorize(flow, CLAUDE_ID))
    assert not Client.objects.exists()


def test_missing_document_refused_and_backed_off(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    missing = "https://claude.ai/missing"
    unknown_client_page(authorize(flow, missing))
    unknown_client_page(authorize(flow, missing))
    assert fetcher.calls == [missing]  # the failure is not retried at once


def test_http_url_client_id_is_not_a_document(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    unknown_client_page(authorize(flow, "http://claude.ai/oauth/mcp-client-metadata"))
    assert fetcher.calls == []


def test_document_cannot_take_over_a_client_the_operator_made(flow: Flow, fetcher: type[FakeFetcher]) -> None:
    Client.objects.create(
        client_id=CLAUDE_ID,
        name="Operator's Claude",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=CLAUDE_CALLBACK,
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.MANUAL,
    )
    page = authorize(flow, CLAUDE_ID)
    assert page.status_code == 200
    assert fetcher.calls == []
    assert "Operator&#x27;s Claude" in page.content.decode()
