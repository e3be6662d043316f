"""GET /metrics: the Prometheus exposition, for the networks in MCPGATE_METRICS_NETWORKS only."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics


def scraper_allowed(client_ip: str | None) -> bool:
    """Whether the client (as TrustedProxyMiddleware resolved it, never a raw header) may scrape."""
    try:
        address = ipaddress.ip_address(client_ip or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return any(address in network for network in settings.MCPGATE_METRICS_NETWORKS)


# Exempt from CSRF so that no method tells an outsider more than a 404 would (it changes nothing).
@csrf_exempt
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics; anyone else gets the site's 404, as if there were nothing here (whatever the method)."""
    if not scraper_allowed(getattr(request, "mcpgate_client_ip", None)):
        raise Http404
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    response = HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
