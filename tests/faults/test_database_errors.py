"""The database unreachable inside a request: 503 with Retry-After in the route's shape, never a 500.

In-process, on the suite's database (both passes): every query of the request fails as it does
when PostgreSQL has gone away, through Django's public ``connection.execute_wrapper`` hook, so the
failure comes from wherever the code first touches the database (a view, DOT's validator, the
session or the proxy sign-in middleware). The same over real gunicorn and a stopped PostgreSQL:
test_database_outage.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished, request_started
from django.db import IntegrityError, OperationalError, close_old_connections, connection
from django.test import Client as HttpClient
from django.test import RequestFactory

from mcpgate import errors
from tests.asgi import http_scope
from tests.conftest import CLIENT_ADDR, LOOPBACK_REDIRECT, PUBLIC, Flow, authorize_params, proxy_headers
from tests.e2e.oauthclient import PKCE
from tests.personas import ALICE

pytestmark = pytest.mark.django_db

UNAVAILABLE_BODY = {
    "error": "temporarily_unavailable",
    "error_description": (
        "The authorization server is currently unable to handle the request; try again in a few seconds."
    ),
}
# What psycopg says when PostgreSQL is not there (Django wraps it in django.db.OperationalError).
REFUSED = 'connection to server at "127.0.0.1", port 5432 failed: Connection refused'


@contextmanager
def database_down(
    exception: Callable[[], Exception] = lambda: OperationalError(REFUSED), *, touching: str = ""
) -> Iterator[list[str]]:
    """Every query (or every query on the table ``touching``) fails with ``exception``; savepoint
    bookkeeping still runs, so the test's own transaction survives. Yields the refused statements."""
    refused: list[str] = []

    def fail(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.split(None, 1)[0].upper() in ("SAVEPOINT", "RELEASE", "ROLLBACK") or touching not in sql:
            return execute(sql, params, many, context)
        refused.append(sql)
        raise exception()

    with connection.execute_wrapper(fail):
        yield refused


@pytest.fixture
def client() -> HttpClient:
    """A browser-like client that gets the error page rather than the exception, as under gunicorn."""
    return HttpClient(enforce_csrf_checks=True, raise_request_exception=False)


def assert_oauth_unavailable(response: Any) -> None:
    """RFC 6749 §4.1.2.1 ``temporarily_unavailable`` as JSON (§5.2 shape), 503 with Retry-After (RFC 9110 §10.2.3)."""
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert json.loads(response.content) == UNAVAILABLE_BODY


def assert_page_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    page = response.content.decode()
    assert "<html" in page
    assert "temporarily unavailable" in page
    assert "Connection refused" not in page and "Traceback" not in page


def test_a_refresh_while_the_database_is_away_is_answered_503_temporarily_unavailable(
    client: HttpClient, public_client: Any
) -> None:
    """The failure is in DOT's client lookup, inside oauthlib: it must not become invalid_grant or a 500."""
    with database_down() as refused:
        response = client.post(
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
            HTTP_HOST=PUBLIC,
        )
    assert refused
    assert_oauth_unavailable(response)


def test_a_connection_lost_inside_oauthlibs_refresh_grant_is_a_503_not_invalid_grant(
    client: HttpClient, public_client: Any
) -> None:
    """The client is found; the refresh token's lookup (validate_refresh_token, inside oauthlib's
    grant) loses the database. oauthlib does not catch it (DOT leaves ``catch_errors`` off), so the
    client is told to retry, not that its refresh token is bad."""
    with database_down(touching="oauth2_provider_refreshtoken") as refused:
        response = client.post(
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
            HTTP_HOST=PUBLIC,
        )
    assert refused
    assert_oauth_unavailable(response)


def test_a_connection_lost_while_a_code_is_checked_is_a_503_not_invalid_grant(
    client: HttpClient, public_client: Any
) -> None:
    """The code's grant is read inside oauthlib's authorization_code grant (DOT's validate_code)."""
    flow = Flow(client)
    code, pkce, params = flow.authorize_code(public_client.client_id)
    from oauth2_provider.models import get_grant_model

    with database_down(touching=get_grant_model()._meta.db_table) as refused:
        response = flow.token(
            {
                "grant_type": "authorization_code",
                "code": code["code"],
                "redirect_uri": params["redirect_uri"],
                "code_verifier": pkce.verifier,
                "client_id": public_client.client_id,
            }
        )
    assert refused
    assert_oauth_unavailable(response)
    # Nothing was spent: the code still redeems once the database is back.
    assert (
        flow.token(
            {
                "grant_type": "authorization_code",
                "code": code["code"],
                "redirect_uri": params["redirect_uri"],
                "code_verifier": pkce.verifier,
                "client_id": public_client.client_id,
            }
        ).status_code
        == 200
    )


def register(client: HttpClient) -> Any:
    """A public client's RFC 7591 registration, as Claude Code sends it."""
    metadata = {"client_name": "Claude", "redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none"}
    return client.post(
        "/oauth/register",
        json.dumps(metadata),
        content_type="application/json",
        HTTP_HOST=PUBLIC,
        REMOTE_ADDR=CLIENT_ADDR,
    )


def test_a_registration_while_the_database_is_away_is_answered_503_and_registers_nothing(
    client: HttpClient,
) -> None:
    from oauth_ext.models import Client

    before = Client.objects.count()
    with database_down():
        response = register(client)
    assert_oauth_unavailable(response)
    assert Client.objects.count() == before


def test_the_authorization_page_is_an_html_503_when_sign_in_cannot_reach_the_database(
    client: HttpClient, public_client: Any
) -> None:
    """The proxy sign-in middleware is the first to need the database: the person gets a page, not JSON."""
    params = authorize_params(public_client.client_id, PKCE.make())
    with database_down() as refused:
        response = client.get("/oauth/authorize", params, HTTP_HOST=PUBLIC, **proxy_headers(ALICE, "eng"))
    assert refused
    assert_page_unavailable(response)


def test_the_legacy_token_alias_answers_like_the_token_endpoint(client: HttpClient, public_client: Any) -> None:
    with database_down():
        response = client.post(
            "/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
            HTTP_HOST=PUBLIC,
        )
    assert_oauth_unavailable(response)


def test_a_consent_submitted_while_the_database_is_away_is_an_html_503(client: HttpClient, public_client: Any) -> None:
    flow = Flow(client)
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 200
    with database_down():
        response = flow.consent(page)
    assert_page_unavailable(response)


def asgi_post(path: str, form: dict[str, str], host: str = PUBLIC) -> tuple[int, dict[str, str], bytes]:
    """POST a form through Django's ASGIHandler, as uvicorn does (Django's AsyncClient cannot set Host)."""
    body = urlencode(form).encode()
    headers = [
        (b"host", host.encode()),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = http_scope("POST", path, headers, client=(CLIENT_ADDR, 50000))
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: cancelled once the response is sent
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # As Django's own test clients do: the test's connection (and its transaction) must survive.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        async_to_sync(ASGIHandler())(scope, receive, send)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, content


def test_the_503_comes_through_the_asgi_handler_too(public_client: Any) -> None:
    """gunicorn runs Django's ASGI handler, which converts a view's exception in another thread;
    asgiref re-raises it there, so ``server_error`` still sees the database failure."""
    with database_down():
        status, headers, content = asgi_post(
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
        )
    assert status == 503, content
    assert headers["retry-after"] == str(errors.RETRY_AFTER_SECONDS)
    assert headers["cache-control"] == "no-store"
    assert json.loads(content) == UNAVAILABLE_BODY


def test_a_query_that_is_wrong_is_still_a_500_not_a_503(client: HttpClient, public_client: Any) -> None:
    """Only an unreachable or vanished database is "try again later"; a bug must not hide behind Retry-After."""
    with database_down(lambda: IntegrityError("duplicate key value violates unique constraint")):
        response = client.post(
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
            HTTP_HOST=PUBLIC,
        )
    assert response.status_code == 500
    assert "Retry-After" not in response
    assert json.loads(response.content)["error"] == "server_error"


def test_an_outage_is_logged_as_one_warning_without_a_traceback(
    client: HttpClient, public_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """During an outage every request fails: one line each, not Django's traceback per request."""
    with caplog.at_level(logging.INFO), database_down():
        client.post(
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": "r" * 40, "client_id": public_client.client_id},
            HTTP_HOST=PUBLIC,
        )
    records = [r for r in caplog.records if r.name in ("django.request", errors.logger.name)]
    assert [(r.name, r.levelname) for r in records] == [(errors.logger.name, "WARNING")]
    assert records[0].exc_info is None
    assert "OperationalError" in records[0].getMessage()
    assert "/oauth/token" in records[0].getMessage()


def test_django_still_skips_logging_a_response_marked_as_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Pins the private hook ``server_error`` relies on: ``django.utils.log.log_response`` returns early
    for a response whose ``_has_been_logged`` is set. If Django changes that, this fails (and an
    outage would log a traceback per request again)."""
    from django.http import HttpResponse
    from django.utils.log import log_response

    marked, unmarked = HttpResponse(status=503), HttpResponse(status=503)
    marked._has_been_logged = True  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="django.request"):
        log_response("Service Unavailable: %s", "/marked", response=marked)
        log_response("Service Unavailable: %s", "/unmarked", response=unmarked)
    assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == ["Service Unavailable: /unmarked"]


def test_server_error_answers_503_only_inside_a_database_failure() -> None:
    """Called by Django inside the except block (sys.exc_info() is the failure), as handler500 is."""
    request = RequestFactory().post("/oauth/token")
    try:
        raise OperationalError(REFUSED)
    except OperationalError:
        response = errors.server_error(request)
    assert_oauth_unavailable(response)
    assert errors.server_error(request).status_code == 500


# What psycopg raises when PostgreSQL stops under a statement (``pg_ctl stop -m fast``).
ADMIN_SHUTDOWN = "terminating connection due to administrator command"


@pytest.mark.parametrize(
    "failure",
    [
        psycopg.errors.AdminShutdown(ADMIN_SHUTDOWN),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.InterfaceError("Cannot operate on a closed database."),
    ],
    ids=lambda failure: f"{type(failure).__module__}.{type(failure).__name__}",
)
def test_a_drivers_own_error_that_django_did_not_wrap_is_a_503_too(failure: Exception) -> None:
    """Django's compiler closes a server-side cursor (QuerySet.iterator() on PostgreSQL) with the
    driver's error unwrapped: psycopg's AdminShutdown reached handler500 during an outage."""
    request = RequestFactory().post("/oauth/register")
    try:
        raise failure
    except type(failure):
        response = errors.server_error(request)
    assert_oauth_unavailable(response)


def test_a_drivers_own_integrity_error_is_still_a_500() -> None:
    request = RequestFactory().post("/oauth/register")
    try:
        raise psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")
    except psycopg.errors.UniqueViolation:
        response = errors.server_error(request)
    assert response.status_code == 500


def test_a_registration_that_meets_psycopgs_own_error_is_answered_503(
    client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The request the outage test met: the sweep after the client was made failed with the driver's
    own error (raised here by every query, outside Django's wrapper, as cursor_iter's close raised it)."""
    with caplog.at_level(logging.WARNING), database_down(lambda: psycopg.errors.AdminShutdown(ADMIN_SHUTDOWN)):
        response = register(client)
    assert_oauth_unavailable(response)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"database unavailable (AdminShutdown: {ADMIN_SHUTDOWN}): POST /oauth/register answered 503"
    ]
    assert not any(r.exc_info for r in caplog.records)
