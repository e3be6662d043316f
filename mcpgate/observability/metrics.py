"""Prometheus metrics (prometheus-client): what is counted, where it is observed, and the exposition.

Where each family is observed, and why there:

- ``mcpgate_tool_calls_total`` / ``mcpgate_tool_call_duration_seconds``: from the audit trail's
  ``event_recorded`` signal (``TOOL_CALL`` rows). A tool call always has a person, so its row is
  never suppressed by the anonymous allowance: the count is exact, and no caller is edited.
- ``mcpgate_token_requests_total``, ``mcpgate_registrations_total``, ``mcpgate_rate_limited_total``
  (Django routes): in ``ObservabilityMiddleware``, from the route, the response status and the
  request's ``grant_type``. The audit rows of these are anonymous and may be suppressed, and a
  rate limit audits only the first refusal of a window, so the audit would undercount.
- ``mcpgate_rate_limited_total{route="mcp"}`` and ``mcpgate_database_errors_total{surface="mcp"}``:
  in the /mcp endpoint, from the status it answered (429 is only the rate limit, 503 only the
  database there).
- ``mcpgate_database_errors_total{surface="django"}``: Django's ``got_request_exception`` signal,
  for a transient database error (``mcpgate.errors.TRANSIENT_DATABASE_ERRORS``) behind the failure.
- ``mcpgate_upstream_*``: the gateway's upstream MCP servers, recorded by ``gateway.runtime`` (each
  request to an upstream, by outcome; whether its last report was healthy).

Label values are bounded: a tool name a client made up is ``_unknown`` (an upstream's tool, routed,
keeps its name: the operator's upstreams bound those), a grant type or an error
code outside the known ones is ``other``.

Several gunicorn workers: with ``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory, writable,
emptied at each start), prometheus-client keeps each worker's values in files there and
``exposition()`` merges them; gunicorn's ``child_exit`` must call
``prometheus_client.multiprocess.mark_process_dead(worker.pid)``. Unset, one process registry.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from typing import Any

from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from audit.models import AuditEvent, AuditKind
from audit.signals import event_recorded
from mcp_bridge.registry import registry
from mcpgate.errors import transient_database_error
from mcpgate.ratelimit_middleware import REGISTER_PATHS, TOKEN_PATHS, limits_for
from oauth_ext.registration import SUPPORTED_GRANT_TYPES

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN_TOOL = "_unknown"
OTHER = "other"

# Latency buckets in seconds: tools are database reads and writes, most well under 100 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# RFC 6749 §5.2 and RFC 8707 §2 error codes a token request can be refused with.
TOKEN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_target",
        "server_error",
    }
)
# RFC 7591 §3.2.2 registration errors.
REGISTRATION_ERRORS = frozenset(
    {
        "invalid_redirect_uri",
        "invalid_client_metadata",
        "invalid_software_statement",
        "unapproved_software_statement",
        "invalid_request",
    }
)


class Surface(StrEnum):
    """Where a database error was met: the Django routes or /mcp."""

    DJANGO = "django"
    MCP = "mcp"


class Outcome(StrEnum):
    """Outcomes of the token and registration endpoints besides their error codes."""

    ISSUED = "issued"
    REGISTERED = "registered"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


TOOL_CALLS = Counter(
    "mcpgate_tool_calls",
    "MCP tools/call requests, by tool and outcome (ok, error, invalid_arguments, unknown_tool, insufficient_scope).",
    ["tool", "outcome"],
)
TOOL_CALL_DURATION = Histogram(
    "mcpgate_tool_call_duration_seconds",
    "Time a tool took to run (argument validation, the tool, the audit row), by tool.",
    ["tool"],
    buckets=LATENCY_BUCKETS,
)
TOKEN_REQUESTS = Counter(
    "mcpgate_token_requests",
    "Token endpoint requests, by path (/oauth/token or /token), grant type and outcome "
    "(issued, an RFC 6749 error code, rate_limited, unavailable).",
    ["path", "grant_type", "outcome"],
)
REGISTRATIONS = Counter(
    "mcpgate_registrations",
    "Dynamic client registrations (RFC 7591), by outcome (registered, an RFC 7591 error code, rate_limited, "
    "unavailable).",
    ["outcome"],
)
RATE_LIMITED = Counter(
    "mcpgate_rate_limited",
    "Requests refused with 429 by a rate limit, by route (token, register, revoke, authorize, login, mcp).",
    ["route"],
)
DATABASE_ERRORS = Counter(
    "mcpgate_database_errors",
    "Requests that met a transient database error (answered 503), by surface (django, mcp).",
    ["surface"],
)
UPSTREAM_UP = Gauge(
    "mcpgate_upstream_up",
    "Whether an upstream MCP server answered its last health check (1) or not (0).",
    ["upstream"],
    multiprocess_mode="mostrecent",
)
UPSTREAM_CALL_DURATION = Histogram(
    "mcpgate_upstream_call_duration_seconds",
    "Time a call to an upstream MCP server took, by upstream and outcome (ok, error, timeout).",
    ["upstream", "outcome"],
    buckets=LATENCY_BUCKETS,
)


# ---------------------------------------------------------------------------
# Observers
# ---------------------------------------------------------------------------
def on_audit_event(sender: Any, event: AuditEvent, **kwargs: Any) -> None:
    """``audit.signals.event_recorded`` receiver: tool calls. Runs on the hot path: a dict look-up or two."""
    if event.event != AuditKind.TOOL_CALL:
        return
    detail = event.detail or {}
    name, outcome = str(detail.get("tool", "")), str(detail.get("outcome", ""))
    # A local tool, or an upstream's that was routed (its names come from the operator's upstreams, not
    # from the caller): either is a bounded label; anything else is a name the caller made up.
    known = registry.get(name) is not None or "upstream" in detail
    tool = name if known else UNKNOWN_TOOL
    TOOL_CALLS.labels(tool=tool, outcome=outcome).inc()
    # Refusals never ran the tool (their duration is 0): kept out of the latency.
    if outcome not in ("unknown_tool", "insufficient_scope"):
        TOOL_CALL_DURATION.labels(tool=tool).observe(float(detail.get("duration_ms", 0.0)) / 1000)


def on_request_exception(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``django.core.signals.got_request_exception`` receiver: Django calls it inside the ``except`` block."""
    if transient_database_error(sys.exc_info()[1]) is not None:
        DATABASE_ERRORS.labels(surface=Surface.DJANGO).inc()


def _error_code(response: HttpResponse, known: frozenset[str]) -> str:
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        return OTHER
    return error if error in known else OTHER


def _outcome(response: HttpResponse, success: int, success_outcome: Outcome, known: frozenset[str]) -> str:
    status = response.status_code
    if status == success:
        return success_outcome
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 503:
        return Outcome.UNAVAILABLE
    return _error_code(response, known)


def observe_django_response(request: HttpRequest, response: HttpResponse) -> None:
    """Count what the token and registration endpoints answered, and rate-limit refusals (ObservabilityMiddleware)."""
    path, method = request.path_info, request.method
    if method == "POST" and path in TOKEN_PATHS:
        grant_type = request.POST.get("grant_type", "")
        TOKEN_REQUESTS.labels(
            path=path,
            grant_type=grant_type if grant_type in SUPPORTED_GRANT_TYPES else OTHER,
            outcome=_outcome(response, 200, Outcome.ISSUED, TOKEN_ERRORS),
        ).inc()
    elif method == "POST" and path in REGISTER_PATHS:
        REGISTRATIONS.labels(outcome=_outcome(response, 201, Outcome.REGISTERED, REGISTRATION_ERRORS)).inc()
    if response.status_code == 429:
        limits, _ = limits_for(request)
        if limits:
            RATE_LIMITED.labels(route=limits[0][0].route).inc()


def observe_mcp_status(status: int) -> None:
    """What the /mcp endpoint answered: 429 is its rate limit, 503 the database (mcp_bridge.endpoint)."""
    if status == 429:
        RATE_LIMITED.labels(route="mcp").inc()
    elif status == 503:
        DATABASE_ERRORS.labels(surface=Surface.MCP).inc()


def record_upstream_health(upstream: str, *, up: bool) -> None:
    """For the gateway: the result of an upstream's health check."""
    UPSTREAM_UP.labels(upstream=upstream).set(1 if up else 0)


def record_upstream_call(upstream: str, *, outcome: str, seconds: float) -> None:
    """For the gateway: one call to an upstream MCP server."""
    UPSTREAM_CALL_DURATION.labels(upstream=upstream, outcome=outcome).observe(seconds)


# Connected when this module is first imported, which every serving process does at start-up:
# ObservabilityMiddleware (first in MIDDLEWARE, loaded when Django's handler is built) and the
# /mcp endpoint import it. Not from ObservabilityConfig.ready(): importing this module there would
# be an import inside a function, which the layout refuses (tests/test_layout.py).
event_recorded.connect(on_audit_event, dispatch_uid="mcpgate.observability.metrics.audit")
got_request_exception.connect(on_request_exception, dispatch_uid="mcpgate.observability.metrics.exceptions")


# ---------------------------------------------------------------------------
# Exposition
# ---------------------------------------------------------------------------
def exposition() -> bytes:
    """The text exposition format: every worker's values in multiprocess mode, this process's otherwise."""
    if os.environ.get(MULTIPROC_ENV):
        collected = CollectorRegistry()
        MultiProcessCollector(collected)
        return generate_latest(collected)
    return generate_latest(REGISTRY)
