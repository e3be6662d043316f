"""The audit trail: every step of a full flow is recorded, and no credential ever is (nor logged)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.utils import timezone
from oauth2_provider.models import get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from tests.conftest import (
    ALICE,
    CLAUDE_CALLBACK,
    LOOPBACK_REDIRECT,
    MALLORY,
    PUBLIC,
    Flow,
    basic_auth,
    proxy_headers,
    register,
)

pytestmark = pytest.mark.django_db


class Secrets:
    """Every credential value a flow handles, to look for where none may be."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if v)

    def found_in(self, text: str) -> list[str]:
        return [v for v in self.values if v in text]


def full_flow(http: HttpClient, secrets: Secrets) -> None:
    """Registration, sign-in, consent, code exchange, refresh, grace, reuse, errors, revocation."""
    flow = Flow(http)

    # A public loopback client registers itself (DCR), twice: two clients, two registration tokens.
    metadata = {
        "client_name": "Claude Code",
        "redirect_uris": [LOOPBACK_REDIRECT],
        "token_endpoint_auth_method": "none",
    }
    public = register(http, metadata).json()
    secrets.add(public["registration_access_token"], register(http, metadata).json()["registration_access_token"])
    client_id = public["client_id"]

    # A confidential cloud client registers too.
    confidential = register(
        http,
        {
            "client_name": "Claude",
            "redirect_uris": [CLAUDE_CALLBACK],
            "token_endpoint_auth_method": "client_secret_post",
        },
    ).json()
    secrets.add(confidential["client_secret"], confidential["registration_access_token"])

    # Alice signs in through the proxy, consents, the client exchanges the code.
    query, pkce, params = flow.authorize_code(client_id)
    secrets.add(query["code"], pkce.verifier, pkce.challenge)
    tokens = flow.exchange(client_id, query["code"], pkce).json()
    secrets.add(tokens["access_token"], tokens["refresh_token"])

    # Refresh; a concurrent refresh with the same token (grace sibling); a replay after the window.
    first = flow.refresh(client_id, tokens["refresh_token"]).json()
    sibling = flow.refresh(client_id, tokens["refresh_token"]).json()
    secrets.add(first["access_token"], first["refresh_token"], sibling["access_token"], sibling["refresh_token"])
    get_refresh_token_model().objects.filter(revoked__isnull=False).update(
        revoked=timezone.now() - timedelta(seconds=31)
    )
    flow.refresh(client_id, tokens["refresh_token"])
    # The code again: refused, and what it issued is revoked (RFC 6749 §4.1.2).
    flow.exchange(client_id, query["code"], pkce)

    # The confidential client: remembered consent is not involved (new client), wrong then right secret.
    cquery, cpkce, _ = flow.authorize_code(confidential["client_id"], redirect_uri=CLAUDE_CALLBACK)
    secrets.add(cquery["code"], cpkce.verifier)
    data = {
        "grant_type": "authorization_code",
        "code": cquery["code"],
        "redirect_uri": CLAUDE_CALLBACK,
        "code_verifier": cpkce.verifier,
    }
    flow.token(data, HTTP_AUTHORIZATION=basic_auth(confidential["client_id"], "wrong-secret-value"))
    ctokens = flow.token(
        {**data, "client_id": confidential["client_id"], "client_secret": confidential["client_secret"]}
    )
    ctokens_body = ctokens.json()
    secrets.add(ctokens_body["access_token"], ctokens_body["refresh_token"])

    # Revocation of both kinds.
    for token, hint in ((ctokens_body["access_token"], "access_token"), (ctokens_body["refresh_token"], "")):
        http.post(
            "/oauth/revoke",
            {"token": token, "token_type_hint": hint},
            HTTP_HOST=PUBLIC,
            HTTP_AUTHORIZATION=basic_auth(confidential["client_id"], confidential["client_secret"]),
        )

    # Someone outside the organisation tries to sign in.
    http.get("/oauth/authorize", {**params, "state": "m"}, HTTP_HOST=PUBLIC, **proxy_headers(MALLORY))


def test_full_flow_writes_every_audit_event(http: HttpClient) -> None:
    full_flow(http, Secrets())
    events = set(AuditEvent.objects.values_list("event", flat=True))
    assert events >= {
        "register",
        "sign_in",
        "sign_in_refused",
        "consent_shown",
        "consent_given",
        "token_issued",
        "token_refreshed",
        "token_error",
        "refresh_reuse",
        "code_reuse",
        "token_revoked",
    }
    sign_in = AuditEvent.objects.get(event=AuditKind.SIGN_IN)
    assert (sign_in.email, sign_in.host) == (ALICE, "public")
    errors = sorted(e.detail["error"] for e in AuditEvent.objects.filter(event=AuditKind.TOKEN_ERROR))
    assert errors == ["invalid_client", "invalid_grant", "invalid_grant"]


def test_no_credential_in_the_audit_trail(http: HttpClient) -> None:
    secrets = Secrets()
    full_flow(http, secrets)
    assert len(secrets.values) >= 15
    for event in AuditEvent.objects.all():
        text = json.dumps([event.detail, event.email, event.client_label, event.host])
        assert secrets.found_in(text) == [], event.event


def test_no_credential_in_the_logs_even_at_debug(http: HttpClient, caplog: pytest.LogCaptureFixture) -> None:
    """As if MCPGATE_LOG_LEVEL=DEBUG: oauthlib and DOT log URLs and bodies at DEBUG, and are held above it."""
    secrets = Secrets()
    with caplog.at_level(logging.DEBUG):
        full_flow(http, secrets)
    assert caplog.records  # something was logged at all
    assert secrets.found_in(caplog.text) == []


def test_audit_rows_name_client_and_person_as_text_too(http: HttpClient) -> None:
    """The trail still reads after the user or client row is deleted."""
    full_flow(http, Secrets())
    event = AuditEvent.objects.filter(event=AuditKind.TOKEN_ISSUED).order_by("created").first()
    assert event is not None
    assert event.email == ALICE
    assert event.client_label == "Claude Code"
    event.client.delete()  # type: ignore[union-attr]
    event.refresh_from_db()
    assert event.client is None
    assert event.client_label == "Claude Code"


def test_token_error_audit_names_the_client_from_basic_auth(http: HttpClient, public_client: Any) -> None:
    Flow(http).token(
        {"grant_type": "refresh_token", "refresh_token": "nope"},
        HTTP_AUTHORIZATION=basic_auth(public_client.client_id, ""),
    )
    assert AuditEvent.objects.get(event=AuditKind.TOKEN_ERROR).client == public_client
