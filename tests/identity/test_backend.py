"""Sign-in from the proxy goes through Django's authentication machinery (identity.backends.ProxyIdentityBackend)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, authenticate
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_in
from django.test import Client as HttpClient
from django.test import RequestFactory, override_settings

from identity.proxy import ProxyIdentity
from mcpgate.hosts import host_for_netloc
from oauth_ext.models import Client, User
from tests.conftest import PKCE, PUBLIC, authorize_params, proxy_headers
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

BACKEND = "identity.backends.ProxyIdentityBackend"


def authorize(http: HttpClient, client: Client) -> Any:
    return http.get(
        "/oauth/authorize",
        authorize_params(client.client_id, PKCE.make()),
        HTTP_HOST=PUBLIC,
        **proxy_headers(ALICE, groups="eng"),
    )


def test_a_proxy_sign_in_fires_user_logged_in_and_the_session_names_the_backend(
    http: HttpClient, public_client: Client
) -> None:
    seen: list[str] = []

    def receiver(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
        seen.append(user.username)

    user_logged_in.connect(receiver)
    try:
        assert authorize(http, public_client).status_code == 200
    finally:
        user_logged_in.disconnect(receiver)
    assert seen == [ALICE]
    assert http.session[BACKEND_SESSION_KEY] == BACKEND


def test_the_backend_ignores_passwords_and_answers_only_for_a_proxy_identity() -> None:
    request = RequestFactory().get("/")
    assert authenticate(request, username=ALICE, password="anything") is None
    assert not User.objects.exists()


def test_without_the_backend_configured_a_proxy_sign_in_is_refused_with_a_page(
    http: HttpClient, public_client: Client
) -> None:
    with override_settings(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]):
        response = authorize(http, public_client)
    assert response.status_code == 403
    assert b"Sign-in is not configured." in response.content
    assert "_auth_user_id" not in http.session


def test_the_backend_creates_the_person_it_is_given() -> None:
    request = RequestFactory().get("/", HTTP_HOST=PUBLIC)
    request.mcpgate_host = host_for_netloc(PUBLIC)  # type: ignore[attr-defined]
    request.user = AnonymousUser()
    user = authenticate(request, proxy_identity=ProxyIdentity(ALICE, "alice-sub", ("eng",)))
    assert user is not None and user.username == ALICE
    assert user.backend == BACKEND  # type: ignore[attr-defined]
    assert User.objects.get().proxy_groups == ["eng"]
