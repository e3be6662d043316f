"""The one renderer of refusals: RFC 6749 §5.2 JSON, JSON-RPC 2.0 or an HTML page, by route kind."""

from __future__ import annotations

import enum
import logging
import sqlite3
import sys
from collections.abc import Mapping
from typing import Any

import psycopg
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST

logger = logging.getLogger(__name__)


class RouteKind(enum.Enum):
    """Who is on the other end of a route, and so which shape a refusal takes there."""

    OAUTH = "oauth"  # OAuth clients: token, revocation, registration, discovery (RFC 6749 §5.2 JSON)
    MCP = "mcp"  # MCP clients at /mcp (JSON-RPC 2.0 §5.1 error objects)
    BROWSER = "browser"  # people: consent, sign-in, the console (an HTML page)


# The authorization server's machine endpoints, with the legacy root aliases that 2025-03-26
# clients fall back to (/token, /register). /oauth/authorize and /authorize are pages people see.
OAUTH_PREFIXES = ("/oauth/", "/.well-known/")
OAUTH_ROOT_ALIASES = ("/token", "/register")
BROWSER_PATHS = ("/oauth/authorize", "/authorize")
MCP_PATH = "/mcp"


def _at(path: str, route: str) -> bool:
    """``path`` is ``route`` or below it: ``/token`` and ``/token/x``, never ``/tokens``."""
    return path == route or path.startswith(route + "/")


def route_kind(path: str) -> RouteKind:
    """The kind of the route at ``path``; everything not a machine endpoint is for people (/admin/, /accounts/)."""
    if any(_at(path, route) for route in BROWSER_PATHS):
        return RouteKind.BROWSER
    if path.startswith(OAUTH_PREFIXES) or any(_at(path, route) for route in OAUTH_ROOT_ALIASES):
        return RouteKind.OAUTH
    if _at(path, MCP_PATH):
        return RouteKind.MCP
    return RouteKind.BROWSER


# JSON-RPC error code of the /mcp rate limit (the implementation-defined server-error range of
# JSON-RPC 2.0 §5.1 is -32000 to -32099), as mcp_bridge.endpoint answers it.
JSONRPC_RATE_LIMITED = -32029
# RFC 6750 §3.1: the codes a protected resource refuses a request with. On /mcp these keep the
# RFC 6750 §3 JSON object (the MCP authorization spec's "Error Handling" defers to OAuth there), as
# the 401 with its WWW-Authenticate challenge does; every other refusal there is JSON-RPC.
RESOURCE_SERVER_ERRORS = frozenset({"invalid_request", "invalid_token", "insufficient_scope"})
# What /mcp says while the database is away (mcp_bridge.server.UNAVAILABLE_MESSAGE says the same).
MCP_UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; try again in a few seconds."

# The refusal pages are static: nothing to load, nothing to run, nothing to frame.
PAGE_CSP = "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"

# The page for each status; the default for any other 4xx or 5xx.
PAGES = {400: "400.html", 403: "403.html", 404: "404.html", 429: "429.html", 503: "503.html"}
DEFAULT_CLIENT_ERROR_PAGE = "400.html"
DEFAULT_SERVER_ERROR_PAGE = "500.html"


def _path_of(request_or_path: HttpRequest | str) -> str:
    """The path as the URL patterns see it (without any script prefix), as the rate limits read it."""
    return request_or_path if isinstance(request_or_path, str) else request_or_path.path_info


def _never_cached(response: HttpResponse, headers: Mapping[str, str] | None) -> HttpResponse:
    """A refusal is about this request only: never stored (RFC 9111 §5.2.2.5), plus its own headers."""
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def oauth_refusal(
    *, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """RFC 6749 §5.2 (and RFC 7591 §3.2.2, RFC 6750 §3) error object: ``error`` and ``error_description``.

    ``Pragma: no-cache`` as well as ``Cache-Control: no-store``, as RFC 6749 §5.1 asks of the token
    endpoint's answers and as oauthlib sends with its own refusals there.
    """
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Pragma"] = "no-cache"
    return _never_cached(response, headers)


def jsonrpc_refusal(
    status: int,
    code: int,
    message: str,
    id: str | int | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """A JSON-RPC 2.0 §5 response holding an error object (§5.1), sent with HTTP ``status``; never cached.

    ``id`` is the request's, or null when it could not be read (§5). Used by the ASGI /mcp
    endpoint, which has no Django request, and by ``refusal`` on /mcp.
    """
    response = JsonResponse({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}, status=status)
    return _never_cached(response, headers)


def page_refusal(
    *, status: int, description: str, page: str | None = None, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """An HTML page for a person (``page``, else the status's own), with ``description`` as its ``message``.

    Rendered without the request, so that no context processor (``request.user``: the session,
    the database) runs: the page must render while the database is away too.
    """
    template = page or PAGES.get(status) or (DEFAULT_SERVER_ERROR_PAGE if status >= 500 else DEFAULT_CLIENT_ERROR_PAGE)
    response = HttpResponse(
        loader.render_to_string(template, {"message": description, "status": status}), status=status
    )
    response["Content-Security-Policy"] = PAGE_CSP
    return _never_cached(response, headers)


def _jsonrpc_code(status: int) -> int:
    if status == 429:
        return JSONRPC_RATE_LIMITED
    return INTERNAL_ERROR if status >= 500 else INVALID_REQUEST


def refusal(
    request_or_path: HttpRequest | str,
    *,
    status: int,
    error: str,
    description: str,
    headers: Mapping[str, str] | None = None,
    page: str | None = None,
) -> HttpResponse:
    """Refuse a request in the shape of its route (``route_kind``), always with ``Cache-Control: no-store``.

    ``error`` is the RFC 6749 §5.2 (or RFC 6750 §3.1, RFC 7591 §3.2.2) code and ``description``
    what the caller is told: never exception text or internals. ``headers`` adds Retry-After,
    WWW-Authenticate, Allow... ``page`` names the template people see instead of the status's own.
    """
    kind = route_kind(_path_of(request_or_path))
    if kind is RouteKind.BROWSER:
        return page_refusal(status=status, description=description, page=page, headers=headers)
    if kind is RouteKind.MCP and error not in RESOURCE_SERVER_ERRORS:
        return jsonrpc_refusal(status, _jsonrpc_code(status), description, headers=headers)
    return oauth_refusal(status=status, error=error, description=description, headers=headers)


# ---------------------------------------------------------------------------
# Django's handlers (mcpgate.urls handler400, handler403, handler404, handler500) and the host refusal
# ---------------------------------------------------------------------------
def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return refusal(request, status=400, error="invalid_request", description="The request could not be understood.")


def unknown_host(request: HttpRequest) -> HttpResponse:
    """400 for a Host that is not one of the configured ones.

    Never cached: the same URL on the right host is a different answer.
    """
    return refusal(request, status=400, error="invalid_request", description="This host is not served here.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return refusal(request, status=403, error="access_denied", description="Forbidden.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return refusal(request, status=404, error="not_found", description="No such endpoint.")


# How long clients are asked to wait (RFC 9110 §10.2.3) when the database is away: long enough
# for a restart or a fail-over, short enough that nobody gives up. Workers reconnect on their own
# (CONN_HEALTH_CHECKS, close_old_connections at each request), so the next try succeeds once it is back.
RETRY_AFTER_SECONDS = 5

# PEP 249: OperationalError is the database's trouble, "not necessarily under the control of the
# programmer" (a lost connection, the server shutting down or refusing connections, a deadlock,
# SQLite's "database is locked"); InterfaceError is a connection that was already closed. Both pass
# with time. IntegrityError, ProgrammingError and DataError are bugs or bad input: still a 500.
# Django raises its own classes for the driver's (DatabaseErrorWrapper), but not on every path: closing
# a server-side cursor (QuerySet.iterator() on PostgreSQL; Django's compiler.cursor_iter calls the
# driver's ``close`` unwrapped) raised psycopg's own AdminShutdown when PostgreSQL stopped at that
# moment (tests/faults/test_database_outage.py, 4 December). So the drivers' own classes of the same
# PEP 249 kinds count too.
TRANSIENT_DATABASE_ERRORS = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
)


def transient_database_error(exc: BaseException | None) -> BaseException | None:
    """The transient database error behind ``exc`` (itself, or what it was raised from or during), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT_DATABASE_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def unavailable(request_or_path: HttpRequest | str) -> HttpResponse:
    """503 Service Unavailable with ``Retry-After`` (RFC 9110 §15.6.4, §10.2.3), in the route's shape.

    OAuth routes get RFC 6749 §4.1.2.1 ``temporarily_unavailable`` in the §5.2 JSON error shape;
    /mcp a JSON-RPC -32603 (as mcp_bridge.endpoint's own); people a page.
    """
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if route_kind(_path_of(request_or_path)) is RouteKind.MCP:
        return jsonrpc_refusal(503, INTERNAL_ERROR, MCP_UNAVAILABLE_MESSAGE, headers=retry)
    return refusal(
        request_or_path,
        status=503,
        error="temporarily_unavailable",
        description=("The authorization server is currently unable to handle the request; try again in a few seconds."),
        headers=retry,
    )


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """handler500: 503 + Retry-After when the database is away, else the route's 500.

    Django calls it inside the ``except`` block of the failed view or middleware (under ASGI in
    another thread, where asgiref re-raises the exception first), so ``sys.exc_info()`` is the
    failure. A DOT or oauthlib view has no say here: oauthlib only catches exceptions when
    ``catch_errors`` is set, which DOT never does, so a database error in the validator reaches this
    handler rather than becoming ``invalid_grant``.

    An outage fails every request: each is logged as one warning line, not with Django's traceback
    (``django.utils.log.log_response`` logs every 5xx with ``exc_info`` unless the response is
    marked ``_has_been_logged``; that private attribute is the only way to say "already logged",
    pinned by tests/faults/test_database_errors.py).
    """
    failure = transient_database_error(sys.exc_info()[1])
    if failure is not None:
        reason = str(failure).strip().splitlines()[0][:200] if str(failure).strip() else ""
        logger.warning(
            "database unavailable (%s: %s): %s %s answered 503",
            type(failure).__name__,
            reason,
            request.method,
            request.path,
        )
        response = unavailable(request)
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
    return refusal(request, status=500, error="server_error", description="The server could not complete the request.")


# ---------------------------------------------------------------------------
# A streamed response that cannot be finished.
# ---------------------------------------------------------------------------
BROKEN_OFF_KEY = "mcpgate.broken_off"


def break_off(request: HttpRequest) -> None:
    """Leave ``request``'s streaming response unfinished: call it, then end the iterator.

    Once a streaming response has sent its status and first bytes, a failure (the database gone part
    way through a CSV export) can no longer become an error response. Ending the iterator would send
    the chunked body's last chunk, and the client would keep a short body that looks whole. Instead
    ``mcpgate.asgi`` withholds that last chunk; the server then closes the connection (uvicorn logs
    "ASGI callable returned without completing response."), and the client sees the transfer fail, as
    HTTP/1.1 says an incomplete chunked body must be read (RFC 9112 §8). Raising from the iterator would
    do the same but skip Django's end of request (``request_finished``, the response's ``close``)
    and log a traceback. The caller logs why.
    """
    scope = getattr(request, "scope", None)
    if scope is not None:  # ASGI; under WSGI there is nothing to withhold
        scope[BROKEN_OFF_KEY] = True


def broken_off(scope: Mapping[str, Any]) -> bool:
    """Whether ``break_off`` was called for the request of this ASGI ``scope``."""
    return bool(scope.get(BROKEN_OFF_KEY))
