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
from ..models import Client
from ..resources import canonical_resource
from ..scopes import all_scopes, tools_needing
from ..text import contains_nul
from .common import (
    INCOMPLETE_CONSENT,
    MALFORMED_CHALLENGE,
    MALFORMED_QUERY,
    NUL_IN_REQUEST,
    S256_CHALLENGE,
    nul_in_parameters,
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
        host = host_for_request(request)
        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            audit_record(
                event=AuditKind.AUTHORIZE_ERROR,
                request=request,
                client=Client.objects.filter(client_id=request.GET.get("client_id", "")).first(),
                detail={"error": error.oauthlib_error.error},
            )
            return self.error_response(error, application=None)
        client = Client.objects.get(client_id=credentials["client_id"])
        if client.registration_source == Client.RegistrationSource.CIMD and not client.registered_host:
            services.client_record_metadata_document(
                client=client, ip=getattr(request, "mcpgate_client_ip", None), host=host.name, request=request
            )
        if nul_in_parameters(request.GET):
            # Any other parameter (state, nonce...) would be stored with the code.
            return self._refuse(client, credentials, "invalid_request", NUL_IN_REQUEST)
        if credentials.get("code_challenge_method") != "S256":
            # RFC 9700 §2.1.1: S256 only. oauthlib takes a missing method to mean "plain"
            # (RFC 7636 §4.3) and DOT refuses plain only once the code is minted, i.e.
            # after the person has been asked; refuse before the consent page instead.
            return self._refuse(
                client, credentials, "invalid_request", 'Unsupported code_challenge_method; use "S256".'
            )
        if not S256_CHALLENGE.fullmatch(credentials.get("code_challenge") or ""):
            # oauthlib takes any string; a challenge no verifier can match is refused now,
            # not after the person has been asked.
            return self._refuse(client, credentials, "invalid_request", MALFORMED_CHALLENGE)
        for value in request.GET.getlist("resource"):
            if canonical_resource(value) != host.resource:
                return self._refuse(
                    client,
                    credentials,
                    "invalid_target",
                    f"Unknown resource; this server issues tokens for {host.resource} only.",
                )
        prompt = set(request.GET.get("prompt", "").split())
        if not prompt & {"consent", "login"} and services.consent_covers(
            user=request.user, client=client, scopes=list(scopes)
        ):
            credentials["resource"] = [host.resource]
            try:
                uri, _headers, _body, _status = self.create_authorization_response(
                    request=request, scopes=" ".join(scopes), credentials=credentials, allow=True
                )
            except OAuthToolkitError as error:
                return self.error_response(error, client)
            audit_record(
                event=AuditKind.CONSENT_REMEMBERED, request=request, client=client, detail={"scope": " ".join(scopes)}
            )
            return self.redirect(uri, client)
        audit_record(event=AuditKind.CONSENT_SHOWN, request=request, client=client, detail={"scope": " ".join(scopes)})
        # What the person is shown approval for: an approval is remembered only if the client
        # still has these redirect URIs when it arrives (services.consent_record).
        request.session[self._shown_key(client)] = client.redirect_uris
        return super().get(request, *args, **kwargs)

    @staticmethod
    def _shown_key(client: Client) -> str:
        return f"mcpgate.consent_shown.{client.pk}"

    def _refuse(self, client: Client, credentials: dict[str, Any], error: str, description: str) -> HttpResponse:
        """An error response to the client's validated redirect URI, echoing ``state`` (RFC 6749 §4.1.2.1)."""
        audit_record(event=AuditKind.AUTHORIZE_ERROR, request=self.request, client=client, detail={"error": error})
        refusal = OAuthToolkitError(
            error=CustomOAuth2Error(error=error, description=description, state=credentials.get("state")),
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
                redirect_uris_shown=self.request.session.get(self._shown_key(client), ""),
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
            }
        )
        return context
