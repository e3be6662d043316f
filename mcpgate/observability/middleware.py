"""Per-request observation of the Django routes (metrics, trace spans)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import metrics, tracing


class ObservabilityMiddleware:
    """Observes every Django request; first in MIDDLEWARE so it sees refusals of the others too.

    With tracing on, each request is a SERVER span under the remote parent its ``traceparent``
    header names (W3C Trace Context §3.2), named after the route pattern (never the raw path,
    which may carry identifiers). The metrics it keeps are described in ``metrics``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not tracing.enabled():
            response = self.get_response(request)
            metrics.observe_django_response(request, response)
            return response
        attributes = {"http.request.method": request.method or "", "url.scheme": request.scheme}
        parent = tracing.context_from_meta(request.META)
        with tracing.server_span(request.method or "HTTP", parent, attributes) as span:
            response = self.get_response(request)
            match = request.resolver_match
            if match is not None and match.route:
                route = "/" + match.route.removeprefix("^").removesuffix("$")  # a re_path's pattern, unanchored
                span.set_attribute("http.route", route)
                span.update_name(f"{request.method} {route}")
            tracing.set_http_status(span, response.status_code)
        metrics.observe_django_response(request, response)
        return response
