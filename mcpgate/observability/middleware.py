"""Per-request observation of the Django routes (metrics, trace spans)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class ObservabilityMiddleware:
    """Observes every Django request; first in MIDDLEWARE so it sees refusals of the others too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
