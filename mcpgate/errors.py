"""Error pages: JSON for the machine routes (OAuth, discovery, /mcp), plain HTML for people."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from django.views import defaults

logger = logging.getLogger(__name__)

MACHINE_PREFIXES = ("/oauth/", "/.well-known/", "/mcp", "/token", "/register", "/authorize")


# The authorization endpoint (and its legacy alias) is a page a person sees, not an API.
PEOPLE_PREFIXES = ("/oauth/authorize", "/authorize")


def _is_machine(request: HttpRequest) -> bool:
    return request.path.startswith(MACHINE_PREFIXES) and not request.path.startswith(PEOPLE_PREFIXES)


def _json(error: str, description: str, status: int) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_machine(request):
        return _json("invalid_request", "The request could not be understood.", 400)
    return defaults.bad_request(request, exception)  # type: ignore[arg-type]


def unknown_host(request: HttpRequest) -> HttpResponse:
    """400 for a Host that is not one of the configured ones: JSON on machine routes, a page elsewhere.

    Never cached: the same URL on the right host is a different answer.
    """
    if _is_machine(request):
        return _json("invalid_request", "This host is not served here.", 400)
    response = defaults.bad_request(request, None)  # type: ignore[arg-type]
    response["Cache-Control"] = "no-store"
    return response


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_machine(request):
        return _json("access_denied", "Forbidden.", 403)
    return defaults.permission_denied(request, exception)  # type: ignore[arg-type]


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_machine(request):
        return _json("not_found", "No such endpoint.", 404)
    return defaults.page_not_found(request, exception)


# How long clients are asked to wait (RFC 9110 §10.2.3) when the database is away: long enough
# for a restart or a fail-over, short enough that nobody gives up. Workers reconnect on their own
# (CONN_HEALTH_CHECKS, close_old_connections at each request), so the next try succeeds once it is back.
RETRY_AFTER_SECONDS = 5

# PEP 249: OperationalError is the database's trouble, "not necessarily under the control of the
# programmer" (a lost connection, the server shutting down or refusing connections, a deadlock,
# SQLite's "database is locked"); InterfaceError is a connection that was already closed. Both pass
# with time. IntegrityError, ProgrammingError and DataError are bugs or bad input: still a 500.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


def transient_database_error(exc: BaseException | None) -> BaseException | None:
    """The transient database error behind ``exc`` (itself, or what it was raised from or during), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT_DATABASE_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def unavailable(request: HttpRequest) -> HttpResponse:
    """503 Service Unavailable with ``Retry-After`` (RFC 9110 §15.6.4, §10.2.3), in the route's shape.

    Machine routes get RFC 6749 §4.1.2.1 ``temporarily_unavailable`` in the §5.2 JSON error shape,
    not cached; people get a page. The page is rendered without the request, so that no context
    processor (``request.user``: the session, the database) runs while the database is away.
    """
    if _is_machine(request):
        response: HttpResponse = _json(
            "temporarily_unavailable",
            "The authorization server is currently unable to handle the request; try again in a few seconds.",
            503,
        )
    else:
        response = HttpResponse(loader.render_to_string("503.html"), status=503)
        response["Cache-Control"] = "no-store"
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


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
    if _is_machine(request):
        return _json("server_error", "The server could not complete the request.", 500)
    return defaults.server_error(request)


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for load balancers and the test harness; touches no database."""
    return JsonResponse({"status": "ok"})
