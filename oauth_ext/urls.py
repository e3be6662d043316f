"""Routes of the authorization server, in DOT's ``oauth2_provider`` namespace so DOT's reverse() works."""

from __future__ import annotations

from django.urls import path, re_path

from . import views

app_name = "oauth2_provider"

authorize = views.AuthorizeView.as_view()
token = views.TokenEndpointView.as_view()
register = views.RegisterView.as_view()
server_metadata = views.ServerMetadataView.as_view()
resource_metadata = views.ProtectedResourceMetadataView.as_view()

urlpatterns = [
    # Discovery, at the origin root (RFC 8414 §3, RFC 9728 §3).
    path(".well-known/oauth-authorization-server", server_metadata, name="oauth-server-metadata"),
    re_path(r"^\.well-known/openid-configuration/?$", server_metadata, name="openid-configuration"),
    path(".well-known/oauth-protected-resource", resource_metadata, name="oauth-resource-metadata"),
    path(
        ".well-known/oauth-protected-resource/<path:resource_path>",
        resource_metadata,
        name="oauth-resource-metadata-path",
    ),
    # Endpoints.
    path("oauth/authorize", authorize, name="authorize"),
    path("oauth/token", token, name="token"),
    path("oauth/revoke", views.RevokeEndpointView.as_view(), name="revoke-token"),
    path("oauth/register", register, name="dcr-register"),
    path(
        "oauth/register/<str:client_id>",
        views.RegistrationManagementView.as_view(),
        name="dcr-register-management",
    ),
    # 2025-03-26 clients that find no metadata fall back to these (checklist S7).
    path("authorize", authorize, name="legacy-authorize"),
    path("token", token, name="legacy-token"),
    path("register", register, name="legacy-register"),
]
