"""The authorization endpoint and consent page (RFC 6749 §4.1.1, RFC 7636, RFC 8707, RFC 9207)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.views import (
    AuthorizationView,
)
from oauthlib.common import INVALID_HEX_PATTERN
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidRequestFatalError

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate.hosts import host_for_request

from .. import services
from ..authorization import (
    MALFORMED_CHALLENGE,
    S256_CHALLENGE,
    AuthorizationRefusal,
    authorization_request_problem,
    consent_forced,
)
from ..models import Client
from ..scopes import all_scopes, personal_accounts, tools_needing
from ..text import NUL_IN_REQUEST, contains_nul, nul_in_parameters
from .common import (
    INCOMPLETE_CONSENT,
    MALFORMED_QUERY,
    with_iss,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# /oauth/authorize and the consent page
# ---------------------------------------------------------------------------
CONSENT_CSP = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"


@method_decorator(never_cache, name="dispatch")
class AuthorizeView(AuthorizationView):
    """RFC 6749 §4.1.1 with PKCE (RFC 7636), RFC 8707 ``resource`` and RFC 9207 ``iss``.

    The person is signed in by oauth2-proxy (or Django's login when no proxy is configured).
    A client is never approved on the person's behalf without consent (checklist AS8), except
    that an approval already given for the same client and scopes is remembered, for as long
    as the client's redirect URIs stay the ones the person was shown.
    """

    template_name = "oauth_ext/consent.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        problem = self._unanswerable(request)
        if problem:
            response = self.error_response(
                FatalClientError(error=InvalidRequestFatalError(description=problem)), application=None
            )
        else:
            response = super().dispatch(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONSENT_CSP
        return response

    @staticmethod
    def _unanswerable(request: HttpRequest) -> str | None:
        """Why the request gets an error page without reaching DOT, or None.

        RFC 6749 §4.1.2.1: with a client_id or redirect URI that cannot be valid (here, one
        holding a NUL, which the database cannot even look up) the person is told and nobody is
        redirected; likewise when the query string itself is not valid URL encoding (RFC 3986
        §2.1 ``%`` HEXDIG HEXDIG), since nothing in it can be trusted to name the redirect URI.
        The consent form is one this server wrote from a validated request, so a
        NUL or a malformed PKCE challenge in it means it was tampered with.
        """
        if INVALID_HEX_PATTERN.search(request.META.get("QUERY_STRING", "")):
            # oauthlib's urldecode (the same pattern) would raise ValueError on it.
            return MALFORMED_QUERY
        for query in (request.GET, request.POST):
            if contains_nul(query.getlist("client_id") + query.getlist("redirect_uri")):
                return NUL_IN_REQUEST
        if request.method == "POST":
            if nul_in_parameters(request.GET, request.POST):
                return NUL_IN_REQUEST
            challenge = request.POST.get("code_challenge")
            if challenge is not None and not S256_CHALLENGE.fullmatch(challenge):
                return MALFORMED_CHALLENGE
        return None

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Validate (DOT), apply the policy (oauth_ext.authorization), then consent or answer (services)."""
        host = host_for_request(request)
        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            services.authorization_refusal_record(
                request=request, error=error.oauthlib_error.error, client_id=request.GET.get("client_id", "")
            )
            return self.error_response(error, application=None)
        client = services.authorization_client_get(
            client_id=credentials["client_id"],
            ip=getattr(request, "mcpgate_client_ip", None),
            host=host.name,
            request=request,
        )
        problem = authorization_request_problem(query=request.GET, credentials=credentials, resource=host.resource)
        if problem is not None:
            return self._refuse(client, credentials, problem)
        step = services.consent_page_prepare(
            request=request, client=client, scopes=list(scopes), forced=consent_forced(request.GET)
        )
        if step is services.ConsentStep.ASK:
            return super().get(request, *args, **kwargs)
        credentials["resource"] = [host.resource]
        try:
            uri, _headers, _body, _status = self.create_authorization_response(
                request=request, scopes=" ".join(scopes), credentials=credentials, allow=True
            )
        except OAuthToolkitError as error:
            return self.error_response(error, client)
        services.consent_reuse_record(request=request, client=client, scopes=list(scopes))
        return self.redirect(uri, client)

    def _refuse(self, client: Client, credentials: dict[str, Any], problem: AuthorizationRefusal) -> HttpResponse:
        """An error response to the client's validated redirect URI, echoing ``state`` (RFC 6749 §4.1.2.1)."""
        services.authorization_refusal_record(request=self.request, error=problem.error, client=client)
        refusal = OAuthToolkitError(
            error=CustomOAuth2Error(
                error=problem.error, description=problem.description, state=credentials.get("state")
            ),
            redirect_uri=credentials["redirect_uri"],
        )
        return self.error_response(refusal, client)

    def redirect(self, redirect_to: str, application: Any) -> HttpResponse:
        """RFC 9207 §2: every authorization response carries ``iss``, error responses included.

        DOT adds it to successful responses only; a client that checks ``iss`` (as RFC 9207
        §2.4 asks once metadata advertises it) would otherwise discard ``access_denied``.
        """
        return super().redirect(with_iss(redirect_to, host_for_request(self.request).issuer), application)

    def form_invalid(self, form: Any) -> HttpResponse:
        """A consent form this server did not write (fields missing): the error page, RFC 6749 §4.1.2.1.

        Without a validated client and redirect URI there is nobody to send an error to.
        """
        return self._incomplete_consent()

    def _incomplete_consent(self) -> HttpResponse:
        return self.error_response(
            FatalClientError(error=InvalidRequestFatalError(description=INCOMPLETE_CONSENT)), application=None
        )

    def form_valid(self, form: Any) -> HttpResponse:
        if not Client.objects.filter(client_id=form.cleaned_data.get("client_id") or "").exists():
            # DOT would look the client up with .get() and raise.
            return self._incomplete_consent()
        response = super().form_valid(form)
        client = Client.objects.filter(client_id=form.cleaned_data.get("client_id")).first()
        scopes = str(form.cleaned_data.get("scope") or "").split()
        succeeded = bool(getattr(self, "success_url", None))
        if form.cleaned_data.get("allow") and succeeded and client is not None:
            remembered = services.consent_record(
                user=self.request.user,
                client=client,
                scopes=scopes,
                host=host_for_request(self.request).name,
                redirect_uris_shown=self.request.session.get(services.consent_shown_session_key(client), ""),
            )
            detail: dict[str, Any] = {"scope": " ".join(scopes)}
            if remembered is None:  # its redirect URIs changed while the page was open
                detail["remembered"] = False
            audit_record(event=AuditKind.CONSENT_GIVEN, request=self.request, client=client, detail=detail)
        else:
            audit_record(
                event=AuditKind.CONSENT_REFUSED if not form.cleaned_data.get("allow") else AuditKind.AUTHORIZE_ERROR,
                request=self.request,
                client=client,
                detail={"scope": " ".join(scopes)},
            )
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        client = context.get("application")
        redirect_uri = context.get("redirect_uri") or ""
        descriptions = all_scopes()
        context.update(
            {
                "client": client,
                "redirect_host": urlsplit(redirect_uri).netloc or urlsplit(redirect_uri).scheme + ":",
                "scope_rows": [(s, descriptions.get(s, s), tools_needing(s)) for s in context.get("scopes", [])],
                "operator_made": client is not None and client.registration_source == Client.RegistrationSource.MANUAL,
                "loopback_only": client is not None and client.is_loopback_only,
                "host": host_for_request(self.request),
                "personal_accounts": personal_accounts() if client is not None else [],
            }
        )
        return context
