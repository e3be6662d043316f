"""The operators' console: Django's admin site, with an overview page and a clear refusal for non-operators.

Operators sign in through oauth2-proxy like everyone else; ``identity.services.user_sign_in_from_proxy``
gives them staff rights from MCPGATE_OPERATOR_EMAILS / MCPGATE_OPERATOR_GROUPS. Someone signed
in who is not an operator gets a 403 page instead of Django's password form (they have no
password: offering one only confuses). Without a proxy (``make run``) the form stays, for a
``createsuperuser`` account.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.response import TemplateResponse

# CSP Level 3 (W3C): the console's scripts, styles and images come from this origin only (Django's
# admin and oauth_ext/static), nothing inline, so markup that slips into a page (a client's name,
# an audit detail) cannot run; connect-src 'self' is for the admin's autocomplete. No form-action:
# behind oauth2-proxy an expired sign-in answers a POST with a redirect to the identity provider,
# which a form-action 'self' would block (browsers apply it to redirects after a form submission).
CONSOLE_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def with_console_csp(view: View) -> View:
    """``view`` with the console's Content-Security-Policy on every response it returns."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONSOLE_CSP
        return response

    return cast(View, wrapped)


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
        else:
            response = super().login(request, extra_context)
        response["Content-Security-Policy"] = CONSOLE_CSP
        return response

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        from console.selectors import overview

        counts = overview()
        peak = max((n for _, n in counts["per_hour"]), default=0)
        counts["bar_max"] = peak
        # SVG bars in a 100-high box, heights in percent of the busiest hour (a sliver for an hour
        # with calls), standing on the bottom edge (y counts down from the top).
        counts["bars"] = []
        for hour, n in counts["per_hour"]:
            percent = max(2, round(100 * n / peak)) if n else 0
            counts["bars"].append({"hour": hour, "count": n, "percent": percent, "y": 100 - percent})
        return super().index(request, {"overview": counts, **(extra_context or {})})


class OperatorsAdminConfig(AdminConfig):
    """``django.contrib.admin`` with OperatorsAdminSite as ``admin.site``."""

    default_site = "console.admin_site.OperatorsAdminSite"
