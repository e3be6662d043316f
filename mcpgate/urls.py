"""Root URLs: the authorization server at the origin root, /mcp, the admin, local sign-in, health and metrics."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from gateway import views as gateway_views

from . import errors
from .observability import health
from .observability.views import metrics_view

urlpatterns = [
    path("", include("oauth_ext.urls", namespace="oauth2_provider")),
    # Identity assertion keys for upstreams (gateway.assertions): public, like the other /.well-known documents.
    path(".well-known/jwks.json", gateway_views.jwks, name="jwks"),
    # People connect their own accounts at per-person upstreams (gateway.connections), behind oauth2-proxy.
    path("connect/", gateway_views.connect_list, name="connect_list"),
    path("connect/<slug:name>/", gateway_views.connect_upstream, name="connect_upstream"),
    path("connect/<slug:name>/disconnect", gateway_views.connect_disconnect, name="connect_disconnect"),
    path("connect/<slug:name>/callback", gateway_views.connect_callback, name="connect_callback"),
    path("admin/", admin.site.urls),
    # Local sign-in when no oauth2-proxy is in front (make run).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Prometheus: answers only MCPGATE_METRICS_NETWORKS, a 404 for everyone else.
    path("metrics", metrics_view, name="metrics"),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.not_found
handler500 = errors.server_error
