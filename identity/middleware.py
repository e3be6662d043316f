"""Sign the person in from what oauth2-proxy forwarded (headers or its ID token)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.contrib.auth import authenticate, login
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate import errors

from .forwarded import identity_from_meta
from .proxy import ProxyIdentity, SignInRefused, printable

logger = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], HttpResponse]


def sign_in_refused(request: HttpRequest, reason: str) -> HttpResponse:
    """403: this person may not sign in here, and why (a page for people, RFC 6749 §5.2 JSON for clients)."""
    return errors.refusal(request, status=403, error="access_denied", description=reason, page="identity/refused.html")


class ProxyIdentityMiddleware:
    """Sign the person in from oauth2-proxy's forwarded identity headers (or its ID token).

    Only headers that survived TrustedProxyMiddleware are seen here. With
    MCPGATE_IDENTITY_MODE=headers this trusts what it reads; with ``id_token`` the person is
    whoever the provider's verified ID token names (identity.forwarded.identity_from_meta), and a
    token that fails verification is refused with a 403 page. The session is (re)established
    when the header names someone else than the session's user; recorded groups follow the
    header on every request. An address outside MCPGATE_EMAIL_DOMAINS (defence in depth:
    oauth2-proxy restricts too) or a disabled account is refused with a 403 page rather than
    silently treated as anonymous.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            identity = identity_from_meta(request.META)
        except SignInRefused as refusal:
            # A malformed header or a bad ID token: nobody is looked up, but operators see it.
            logger.warning(
                "refused a forwarded identity from %s: %s (%s)",
                request.META.get("REMOTE_ADDR", ""),
                refusal,
                printable(str(refusal.audit)),
            )
            audit_record(event=AuditKind.SIGN_IN_REFUSED, request=request, user=AnonymousUser(), detail=refusal.audit)
            return sign_in_refused(request, str(refusal))
        if identity is not None:
            refused = self._sign_in(request, identity)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _sign_in(self, request: HttpRequest, identity: ProxyIdentity) -> HttpResponse | None:
        current = request.user
        try:
            # Through Django's authentication machinery (identity.backends.ProxyIdentityBackend),
            # so user_logged_in / user_login_failed fire and the session names the backend.
            user = authenticate(request, proxy_identity=identity)
        except SignInRefused as refusal:
            return sign_in_refused(request, str(refusal))
        if user is None:
            # Only if the backend is missing from AUTHENTICATION_BACKENDS: refuse rather than serve anonymously.
            logger.error("no authentication backend accepted a proxy identity; is ProxyIdentityBackend configured?")
            return sign_in_refused(request, "Sign-in is not configured.")
        if user != current or not current.is_authenticated:
            login(request, user)
        request.user = user
        return None
