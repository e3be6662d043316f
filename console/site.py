"""The operators' console: Django's admin site, with an overview page and a clear refusal for non-operators.

Who is an operator is decided by ``identity.services.is_operator`` alone: on every request through
oauth2-proxy, ``identity.services.user_sign_in_from_proxy`` sets the user's ``is_staff`` and
``is_superuser`` from MCPGATE_OPERATOR_EMAILS / MCPGATE_OPERATOR_GROUPS, and this site lets in whom
Django's ``AdminSite.has_permission`` does (an active staff user), nothing more. Someone signed in
who is not an operator gets a 403 page instead of Django's password form (they have no password:
offering one only confuses). Without a proxy (``make run``) the form stays, for a
``createsuperuser`` account.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from console.admin_site import CONSOLE_CSP, View, with_console_csp
from console.selectors import console_overview, upstreams_overview


class OperatorsAdminSite(AdminSite):
    site_header = "mcpgate operators' console"
    site_title = "mcpgate"
    index_title = "Overview"
    index_template = "admin/mcpgate_index.html"
    site_url = None  # no public site to go back to: "/" is not a page here
    enable_nav_sidebar = False  # the lists are wide; the overview links every model

    def admin_view(self, view: View, cacheable: bool = False) -> View:
        """Every admin view (AdminSite.get_urls and ModelAdmin.get_urls wrap each one with this
        documented hook, custom views included) answers with the console's CSP."""
        return with_console_csp(super().admin_view(view, cacheable))

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The one console view Django does not wrap with ``admin_view``; it gets the CSP here."""
        response: HttpResponse
        if request.user.is_authenticated and not self.has_permission(request):
            response = TemplateResponse(
                request,
                "admin/mcpgate_refused.html",
                {**self.each_context(request), "title": "Not an operator"},
                status=403,
            )
            # A refusal, like every other (mcpgate.errors): never cached. It cannot go through
            # mcpgate.errors.refusal because it is drawn with the admin's own context.
            response["Cache-Control"] = "no-store"
        else:
            response = super().login(request, extra_context)
        response["Content-Security-Policy"] = CONSOLE_CSP
        return response

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        counts = console_overview()
        peak = max((n for _, n in counts["per_hour"]), default=0)
        counts["bar_max"] = peak
        # SVG bars in a 100-high box, heights in percent of the busiest hour (a sliver for an hour
        # with calls), standing on the bottom edge (y counts down from the top).
        counts["bars"] = []
        for hour, n in counts["per_hour"]:
            percent = max(2, round(100 * n / peak)) if n else 0
            counts["bars"].append({"hour": hour, "count": n, "percent": percent, "y": 100 - percent})
        counts["upstreams"] = upstreams_overview()
        return super().index(request, {"overview": counts, **(extra_context or {})})
