"""Discovery documents: authorization server (RFC 8414) and protected resource (RFC 9728) metadata."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider.views import (
    OAuthProtectedResourceMetadataView,
    OAuthServerMetadataView,
)

from mcpgate.errors import refusal
from mcpgate.hosts import MCP_PATH, host_for_request

from ..scopes import BASIC_SCOPE, all_scopes

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------
class ServerMetadataView(OAuthServerMetadataView):
    """RFC 8414 §3 metadata (also served as /.well-known/openid-configuration): checklist S1-S6.

    DOT builds the document; every URL in it is then written from this host's configured
    origin, so the issuer is byte for byte the one the client used to find it (S2).
    """

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        data = json.loads(super().get(request, *args, **kwargs).content)
        host = host_for_request(request)
        data["issuer"] = host.issuer
        for key, value in list(data.items()):
            if key.endswith("_endpoint") and isinstance(value, str):
                data[key] = host.url(urlsplit(value).path)
        data["scopes_supported"] = sorted(all_scopes())
        data["authorization_response_iss_parameter_supported"] = True
        response = JsonResponse(data)
        response["Access-Control-Allow-Origin"] = "*"
        response["Cache-Control"] = "public, max-age=300"
        return response


class ProtectedResourceMetadataView(OAuthProtectedResourceMetadataView):
    """RFC 9728 §3 metadata for this host's /mcp, at the root and the path-suffixed URL (D1-D5)."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        resource_path = kwargs.get("resource_path")
        if resource_path is not None and "/" + resource_path.strip("/") != MCP_PATH:
            return refusal(request, status=404, error="not_found", description="No protected resource at this path.")
        response = super().get(request, *args, **kwargs)
        response["Cache-Control"] = "public, max-age=300"
        return response

    def get_resource(self, request: HttpRequest) -> str:
        return host_for_request(request).resource

    def get_authorization_servers(self, request: HttpRequest) -> list[str]:
        return [host_for_request(request).issuer]

    def get_scopes_supported(self) -> list[str]:
        # D5: the minimum for basic use, not every scope (and never offline_access).
        return [BASIC_SCOPE]
