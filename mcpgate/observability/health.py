"""Liveness (/healthz) and readiness (/readyz) for load balancers and orchestrators.

Liveness says the process answers (no database: a database outage must not get every worker
restarted). Readiness says it can serve: the database answers ``SELECT 1``. Neither is ever
cached (``Cache-Control: no-store``): a cached "ok" would hide the outage it is asked about.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from mcpgate.errors import RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)


def _answer(body: dict[str, str], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers; touches no database."""
    return _answer({"status": "ok"})


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 once the database answers, else 503 with Retry-After (RFC 9110 §15.6.4, §10.2.3).

    Any database error means "not ready" here, not only the transient ones: a wrong password is
    as much a reason to take the replica out of rotation as a restarting server.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        logger.warning("not ready: the database does not answer (%s: %s)", type(exc).__name__, reason)
        response = _answer({"status": "unavailable", "reason": "database"}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return _answer({"status": "ok"})
