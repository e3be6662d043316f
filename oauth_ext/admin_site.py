"""The operators' console: Django's admin site, with an overview page and a clear refusal for non-operators.

Operators sign in through oauth2-proxy like everyone else; ``services.user_sign_in_from_proxy``
gives them staff rights from MCPGATE_OPERATOR_EMAILS / MCPGATE_OPERATOR_GROUPS. Someone signed
in who is not an operator gets a 403 page instead of Django's password form (they have no
password: offering one only confuses). Without a proxy (``make run``) the form stays, for a
``createsuperuser`` account.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse


class OperatorsAdminSite(AdminSite):
    site_header = "mcpgate operators' console"
    site_title = "mcpgate"
    index_title = "Overview"
    index_template = "admin/mcpgate_index.html"
    site_url = None  # no public site to go back to: "/" is not a page here
    enable_nav_sidebar = False  # the lists are wide; the overview links every model

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.user.is_authenticated and not self.has_permission(request):
            return TemplateResponse(
                request,
                "admin/mcpgate_refused.html",
                {**self.each_context(request), "title": "Not an operator"},
                status=403,
            )
        return super().login(request, extra_context)

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        from .selectors import overview

        counts = overview()
        peak = max((n for _, n in counts["per_hour"]), default=0)
        counts["bar_max"] = peak
        # CSS bars, heights in percent of the busiest hour (a sliver for an hour with calls).
        counts["bars"] = [
            {"hour": hour, "count": n, "percent": max(2, round(100 * n / peak)) if n else 0}
            for hour, n in counts["per_hour"]
        ]
        return super().index(request, {"overview": counts, **(extra_context or {})})


class OperatorsAdminConfig(AdminConfig):
    """``django.contrib.admin`` with OperatorsAdminSite as ``admin.site``."""

    default_site = "oauth_ext.admin_site.OperatorsAdminSite"
