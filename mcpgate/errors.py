"""Error pages: JSON for the machine routes (OAuth, discovery, /mcp), plain HTML for people."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

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


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_machine(request):
        return _json("access_denied", "Forbidden.", 403)
    return defaults.permission_denied(request, exception)  # type: ignore[arg-type]


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_machine(request):
        return _json("not_found", "No such endpoint.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    if _is_machine(request):
        return _json("server_error", "The server could not complete the request.", 500)
    return defaults.server_error(request)


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for load balancers and the test harness; touches no database."""
    return JsonResponse({"status": "ok"})
