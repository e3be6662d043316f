"""Every refusal has its route's shape: RFC 6749 §5.2 JSON, JSON-RPC 2.0 on /mcp, a page for people; never cached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client as HttpClient
from django.test import RequestFactory, override_settings

from mcp_bridge import endpoint
from mcpgate import errors
from mcpgate.errors import RouteKind
from oauth_ext.models import User
from tests.conftest import CLAUDE_CALLBACK, CLIENT_ADDR, INTERNAL, PUBLIC, oauth_error, proxy_headers, register
from tests.personas import ALICE, MALLORY, OLIVIA

pytestmark = pytest.mark.django_db

PAGE_CSP = "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"
AT_CLIENT = {"HTTP_HOST": PUBLIC, "REMOTE_ADDR": CLIENT_ADDR}


def assert_oauth_refusal(response: Any, status: int, body: bytes) -> None:
    """RFC 6749 §5.2: JSON error object, never cached (Cache-Control and, as §5.1 asks, Pragma)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    assert response.content == body


def assert_page_refusal(response: Any, status: int, *texts: str) -> None:
    """A static HTML page for people: never cached, nothing to load or run."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Security-Policy"] == PAGE_CSP
    page = response.content.decode()
    assert page.startswith("<!doctype html>")
    for text in texts:
        assert text in page


def assert_jsonrpc_refusal(response: Any, status: int, body: bytes) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.content == body


@contextmanager
def database_down() -> Iterator[None]:
    """Every query fails as when PostgreSQL has gone away (savepoints still run: the test's transaction survives)."""

    def fail(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.split(None, 1)[0].upper() in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
            return execute(sql, params, many, context)
        raise OperationalError("connection to server failed: Connection refused")

    with connection.execute_wrapper(fail):
        yield


@pytest.fixture
def olivia(settings: Any) -> HttpClient:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]
    http = HttpClient()
    http.defaults.update({"HTTP_HOST": INTERNAL, **proxy_headers(OLIVIA)})
    return http


# ---------------------------------------------------------------------------
# The route kinds
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/oauth/token", RouteKind.OAUTH),
        ("/oauth/register/abc", RouteKind.OAUTH),
        ("/.well-known/oauth-authorization-server", RouteKind.OAUTH),
        ("/token", RouteKind.OAUTH),
        ("/register", RouteKind.OAUTH),
        ("/mcp", RouteKind.MCP),
        ("/mcp/", RouteKind.MCP),
        ("/oauth/authorize", RouteKind.BROWSER),
        ("/authorize", RouteKind.BROWSER),  # the legacy alias is the same page for people
        ("/admin/", RouteKind.BROWSER),
        ("/admin/oauth_ext/client/", RouteKind.BROWSER),
        ("/accounts/login/", RouteKind.BROWSER),
        ("/tokens", RouteKind.BROWSER),  # a prefix of a word is not the route
        ("/mcpx", RouteKind.BROWSER),
    ],
)
def test_the_route_kind_is_decided_by_the_path(path: str, kind: RouteKind) -> None:
    assert errors.route_kind(path) is kind


# ---------------------------------------------------------------------------
# 404
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/oauth/nothing", "/.well-known/nothing", "/oauth/register/x/y"])
def test_a_404_on_an_oauth_route_is_json(http: HttpClient, path: str) -> None:
    response = http.get(path, HTTP_HOST=PUBLIC)
    assert_oauth_refusal(response, 404, b'{"error": "not_found", "error_description": "No such endpoint."}')
    assert response.json() == oauth_error("not_found", "No such endpoint.")


@pytest.mark.parametrize("path", ["/nothing", "/accounts/nothing"])
def test_a_404_on_a_browser_route_is_an_html_page(http: HttpClient, path: str) -> None:
    assert_page_refusal(http.get(path, HTTP_HOST=PUBLIC), 404, "<h1>Not Found (404)</h1>")


def test_a_404_below_mcp_is_a_jsonrpc_error(http: HttpClient) -> None:
    assert_jsonrpc_refusal(
        http.get("/mcp/nothing", HTTP_HOST=PUBLIC),
        404,
        b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "No such endpoint."}}',
    )


def test_a_404_in_the_console_is_an_html_page_not_json(olivia: HttpClient) -> None:
    """The operator asks the admin for a page that does not exist: Django's admin raises Http404."""
    assert olivia.get("/admin/").status_code == 200  # she is an operator: the 404 is not a refusal of her
    response = olivia.get("/admin/no-such-app/")
    assert_page_refusal(response, 404, "<h1>Not Found (404)</h1>")


# ---------------------------------------------------------------------------
# 400, 403, 500: Django's handlers
# ---------------------------------------------------------------------------
def test_a_bad_request_on_an_oauth_route_is_json() -> None:
    assert_oauth_refusal(
        errors.bad_request(RequestFactory().post("/oauth/token")),
        400,
        b'{"error": "invalid_request", "error_description": "The request could not be understood."}',
    )


def test_a_bad_request_on_a_browser_route_is_a_page() -> None:
    assert_page_refusal(
        errors.bad_request(RequestFactory().get("/admin/")),
        400,
        "<h1>Bad Request (400)</h1>",
        "The request could not be understood.",
    )


def test_forbidden_on_an_oauth_route_is_json() -> None:
    assert_oauth_refusal(
        errors.permission_denied(RequestFactory().post("/oauth/token")),
        403,
        b'{"error": "access_denied", "error_description": "Forbidden."}',
    )


def test_forbidden_in_the_console_is_a_page() -> None:
    assert_page_refusal(errors.permission_denied(RequestFactory().get("/admin/")), 403, "<h1>Forbidden (403)</h1>")


@pytest.mark.parametrize("path", ["/oauth/token", "/token", "/register", "/.well-known/oauth-authorization-server"])
def test_a_server_error_on_an_oauth_route_is_json(path: str) -> None:
    assert_oauth_refusal(
        errors.server_error(RequestFactory().get(path)),
        500,
        b'{"error": "server_error", "error_description": "The server could not complete the request."}',
    )


@pytest.mark.parametrize("path", ["/oauth/authorize", "/authorize", "/admin/", "/accounts/login/"])
def test_a_server_error_on_a_browser_route_is_a_page(path: str) -> None:
    assert_page_refusal(errors.server_error(RequestFactory().get(path)), 500, "<h1>Server Error (500)</h1>")


def test_a_server_error_on_mcp_is_a_jsonrpc_internal_error() -> None:
    assert_jsonrpc_refusal(
        errors.server_error(RequestFactory().post("/mcp")),
        500,
        b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32603, '
        b'"message": "The server could not complete the request."}}',
    )


# ---------------------------------------------------------------------------
# 429 on each kind
# ---------------------------------------------------------------------------
@override_settings(MCPGATE_REGISTRATION_RATE_PER_MINUTE=1)
def test_a_429_on_an_oauth_route_is_json_with_retry_after(http: HttpClient, ratelimit_clock: Any) -> None:
    metadata = {"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}
    assert register(http, metadata).status_code == 201

    response = register(http, metadata)

    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60
    unit = "second" if wait == 1 else "seconds"
    assert_oauth_refusal(
        response,
        429,
        json.dumps(
            {
                "error": "temporarily_unavailable",
                "error_description": f"Too many registrations from this address; try again in {wait} {unit}.",
            }
        ).encode(),
    )


@override_settings(MCPGATE_RATE_LIMIT_LOGIN="1/h")
def test_a_429_on_a_browser_route_is_a_page_with_retry_after(ratelimit_clock: Any) -> None:
    http = HttpClient()
    http.post("/accounts/login/", {"username": "x", "password": "y"}, **AT_CLIENT)

    response = http.post("/accounts/login/", {"username": "x", "password": "y"}, **AT_CLIENT)

    assert 1 <= int(response["Retry-After"]) <= 3600
    assert_page_refusal(response, 429, "<h1>Too many requests</h1>", "Too many sign-in attempts from this address")


def test_a_429_on_mcp_is_the_jsonrpc_error_the_endpoint_sends() -> None:
    """What mcp_bridge.endpoint answers a rate-limited token (JSON-RPC code -32029)."""
    message = "Too many requests with this access token; try again in 7 seconds."
    expected = (
        b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32029, "message": "Too many requests with this '
        b'access token; try again in 7 seconds."}}'
    )

    response = errors.refusal(
        "/mcp", status=429, error="temporarily_unavailable", description=message, headers={"Retry-After": "7"}
    )

    assert_jsonrpc_refusal(response, 429, expected)
    assert response["Retry-After"] == "7"


# ---------------------------------------------------------------------------
# 503 (the database away) on each kind
# ---------------------------------------------------------------------------
def test_a_503_on_an_oauth_route_is_json_with_retry_after(public_client: Any) -> None:
    http = HttpClient(raise_request_exception=False)
    with database_down():
        response = http.post(
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
            HTTP_HOST=PUBLIC,
        )
    assert_oauth_refusal(
        response,
        503,
        b'{"error": "temporarily_unavailable", "error_description": "The authorization server is currently '
        b'unable to handle the request; try again in a few seconds."}',
    )
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)


def test_a_503_on_a_browser_route_is_a_page_with_retry_after() -> None:
    http = HttpClient(raise_request_exception=False)
    with database_down():
        response = http.get("/oauth/authorize?client_id=x", HTTP_HOST=PUBLIC, **proxy_headers(ALICE))
    assert_page_refusal(response, 503, "<h1>This service is temporarily unavailable</h1>")
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert "Connection refused" not in response.content.decode()


def test_a_503_on_mcp_is_a_jsonrpc_internal_error_with_retry_after() -> None:
    response = errors.unavailable("/mcp")

    assert_jsonrpc_refusal(
        response,
        503,
        b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": "The service is temporarily '
        b'unavailable; try again in a few seconds."}}',
    )
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)


@pytest.mark.parametrize(
    ("status", "code", "message", "request_id"),
    [
        (403, endpoint.INVALID_REQUEST, "Origin not allowed", None),
        (400, endpoint.INVALID_REQUEST, "Invalid request: bad", 7),
        (413, endpoint.INVALID_REQUEST, "Request body too large", "a"),
    ],
)
def test_jsonrpc_refusal_writes_a_jsonrpc_error_object(status: int, code: int, message: str, request_id: Any) -> None:
    response = errors.jsonrpc_refusal(status, code, message, id=request_id)
    expected = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    assert_jsonrpc_refusal(response, status, json.dumps(expected).encode())


# ---------------------------------------------------------------------------
# The sign-in refusal (identity.middleware)
# ---------------------------------------------------------------------------
def test_a_refused_sign_in_is_a_page_that_is_never_cached(http: HttpClient) -> None:
    response = http.get("/oauth/authorize?client_id=x", HTTP_HOST=PUBLIC, **proxy_headers(MALLORY))
    assert_page_refusal(
        response,
        403,
        "<h1>You cannot sign in here</h1>",
        "mallory@evil.test is not in an email domain allowed here.",
    )
    assert not User.objects.exists()
