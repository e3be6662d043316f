"""Two refreshes with one token, interleaved at the worst moment, on real connections (checklist AS5).

Request B checks the grace window first (the token is still live), then request A rotates the
token and commits, then B goes on to DOT's own validation. If B's two reads are not one
consistent view, DOT sees a rotated-out token without a grace period of its own and revokes
the family: the person is logged out by their own client's retry.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections
from django.test import Client as HttpClient

from oauth_ext.models import Client
from oauth_ext.validators import MCPGateValidator
from tests.conftest import LOOPBACK_REDIRECT, Flow

pytestmark = pytest.mark.django_db(transaction=True)


def test_refresh_rotated_between_grace_check_and_validation_still_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client.objects.create(
        name="Claude Code",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=LOOPBACK_REDIRECT,
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.DCR,
    )
    tokens = Flow(HttpClient()).get_tokens(client.client_id)

    b_checked_grace = threading.Event()
    a_finished = threading.Event()
    original = MCPGateValidator._rotated_within_grace

    def interleaved(self: MCPGateValidator, refresh_token: str) -> Any:
        result = original(self, refresh_token)
        if threading.current_thread().name == "B" and not b_checked_grace.is_set():
            b_checked_grace.set()
            # Let A rotate now. With the token locked for B's validation, A cannot: give up waiting.
            a_finished.wait(timeout=1.5)
        return result

    monkeypatch.setattr(MCPGateValidator, "_rotated_within_grace", interleaved)
    responses: dict[str, Any] = {}

    def refresh(name: str) -> None:
        try:
            if name == "A":
                b_checked_grace.wait(timeout=10)
            responses[name] = Flow(HttpClient()).refresh(client.client_id, tokens["refresh_token"])
        finally:
            if name == "A":
                a_finished.set()
            connections.close_all()

    threads = [threading.Thread(target=refresh, args=(name,), name=name) for name in ("B", "A")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert responses["A"].status_code == 200, responses["A"].content
    assert responses["B"].status_code == 200, responses["B"].content
    assert responses["A"].json()["refresh_token"] != responses["B"].json()["refresh_token"]
    for name in ("A", "B"):
        again = Flow(HttpClient()).refresh(client.client_id, responses[name].json()["refresh_token"])
        assert again.status_code == 200, (name, again.content)
