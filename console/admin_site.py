"""The console's entry in INSTALLED_APPS: django.contrib.admin with the operators' site, and the console's CSP.

INSTALLED_APPS imports this module before any model is loaded, so it imports no model (nor
anything that does): the site itself, which reads the overview's counts, lives in console.site
and is named here by its dotted path, which the admin resolves once the apps are ready.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponseBase

# CSP Level 3 (W3C): the console's scripts, styles and images come from this origin only (Django's
# admin and console/static), nothing inline, so markup that slips into a page (a client's name,
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


class OperatorsAdminConfig(AdminConfig):
    """``django.contrib.admin`` with console.site.OperatorsAdminSite as ``admin.site``."""

    default_site = "console.site.OperatorsAdminSite"
