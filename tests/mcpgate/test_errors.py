"""Error responses: JSON in the OAuth shape on machine routes, HTML pages for people."""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.test import RequestFactory

from mcpgate import errors
from tests.conftest import PUBLIC, oauth_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/oauth/nothing", "/.well-known/nothing", "/oauth/register/x/y"])
def test_unknown_machine_route_is_json_404(http: HttpClient, path: str) -> None:
    response = http.get(path, HTTP_HOST=PUBLIC)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == oauth_error("not_found", "No such endpoint.")


def test_unknown_page_is_html_404(http: HttpClient) -> None:
    response = http.get("/nothing", HTTP_HOST=PUBLIC)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("path", "machine"),
    [
        ("/oauth/token", True),
        ("/token", True),
        ("/register", True),
        ("/mcp", True),
        ("/.well-known/oauth-authorization-server", True),
        ("/oauth/authorize", False),
        ("/authorize", False),  # the legacy alias is the same page for people
        ("/admin/", False),
    ],
)
def test_server_error_shape_follows_the_route(path: str, machine: bool) -> None:
    response = errors.server_error(RequestFactory().get(path))
    assert response.status_code == 500
    if machine:
        assert response["Content-Type"] == "application/json"
        assert (
            response.content
            == b'{"error": "server_error", "error_description": "The server could not complete the request."}'
        )
    else:
        assert response["Content-Type"].startswith("text/html")


def test_machine_bad_request_and_forbidden_are_json() -> None:
    request = RequestFactory().post("/oauth/token")
    assert errors.bad_request(request).content == (
        b'{"error": "invalid_request", "error_description": "The request could not be understood."}'
    )
    assert errors.permission_denied(request).content == b'{"error": "access_denied", "error_description": "Forbidden."}'
