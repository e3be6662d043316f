"""HTTP endpoints of the authorization server: DOT's views, subclassed for MCP clients and audit."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.views import (
    AuthorizationView,
    DynamicClientRegistrationView,
    OAuthProtectedResourceMetadataView,
    OAuthServerMetadataView,
    RevokeTokenView,
    TokenView,
)
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error

from . import services
from .hosts import MCP_PATH, host_for_request
from .models import Client
from .redirects import redirect_uri_problem
from .resources import canonical_resource
from .scopes import BASIC_SCOPE, all_scopes, tools_needing

logger = logging.getLogger(__name__)


def oauth_error(error: str, description: str, status: int = 400, **headers: str) -> JsonResponse:
    """RFC 6749 §5.2 error body; never cached."""
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


# RFC 6749 §5.2 and RFC 7009 §2.2.1 codes that oauthlib sends without a description.
ERROR_DESCRIPTIONS = {
    "invalid_request": "The request is missing a parameter or is otherwise malformed.",
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The code or refresh token is invalid, expired, revoked, or was issued to another client.",
    "unauthorized_client": "This client may not use this grant type.",
    "unsupported_grant_type": "This server supports authorization_code and refresh_token.",
    "invalid_scope": "The requested scope is invalid or exceeds what was granted.",
    "unsupported_token_type": "This server cannot revoke that type of token.",
}


def with_error_description(response: HttpResponse) -> HttpResponse:
    """Give a JSON error from DOT's token or revocation core our shape: error, error_description, no-store.

    An error raised while the token is being saved (RFC 8707 ``invalid_target``) reaches DOT
    without oauthlib's headers, so the content type is set here too.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        return response
    if not isinstance(body, dict) or not body.get("error"):
        return response
    if not body.get("error_description"):
        body["error_description"] = ERROR_DESCRIPTIONS.get(body["error"], "The request was refused.")
        response.content = json.dumps(body).encode()
    response["Content-Type"] = "application/json"
    response["Cache-Control"] = "no-store"
    return response


def with_iss(uri: str, issuer: str) -> str:
    """``uri`` with exactly one RFC 9207 ``iss`` query parameter, ``issuer``."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "iss"]
    query.append(("iss", issuer))
    return urlunsplit(parts._replace(query=urlencode(query)))


# ---------------------------------------------------------------------------
# /oauth/authorize and the consent page
# ---------------------------------------------------------------------------
CONSENT_CSP = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"


@method_decorator(never_cache, name="dispatch")
class AuthorizeView(AuthorizationView):
    """RFC 6749 §4.1.1 with PKCE (RFC 7636), RFC 8707 ``resource`` and RFC 9207 ``iss``.

    The person is signed in by oauth2-proxy (or Django's login when no proxy is configured).
    A client is never approved on the person's behalf without consent (checklist AS8), except
    that an approval already given for the same client and scopes is remembered.
    """

    template_name = "oauth_ext/consent.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().dispatch(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONSENT_CSP
        return response

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        host = host_for_request(request)
        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            services.audit_record(
                event="authorize_error",
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
        if credentials.get("code_challenge_method") != "S256":
            # RFC 9700 §2.1.1: S256 only. oauthlib takes a missing method to mean "plain"
            # (RFC 7636 §4.3) and DOT refuses plain only once the code is minted, i.e.
            # after the person has been asked; refuse before the consent page instead.
            return self._refuse(
                client, credentials, "invalid_request", 'Unsupported code_challenge_method; use "S256".'
            )
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
            services.audit_record(
                event="consent_remembered", request=request, client=client, detail={"scope": " ".join(scopes)}
            )
            return self.redirect(uri, client)
        services.audit_record(event="consent_shown", request=request, client=client, detail={"scope": " ".join(scopes)})
        return super().get(request, *args, **kwargs)

    def _refuse(self, client: Client, credentials: dict[str, Any], error: str, description: str) -> HttpResponse:
        """An error response to the client's validated redirect URI, echoing ``state`` (RFC 6749 §4.1.2.1)."""
        services.audit_record(event="authorize_error", request=self.request, client=client, detail={"error": error})
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

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        client = Client.objects.filter(client_id=form.cleaned_data.get("client_id")).first()
        scopes = str(form.cleaned_data.get("scope") or "").split()
        succeeded = bool(getattr(self, "success_url", None))
        if form.cleaned_data.get("allow") and succeeded and client is not None:
            services.consent_record(
                user=self.request.user, client=client, scopes=scopes, host=host_for_request(self.request).name
            )
            services.audit_record(
                event="consent_given", request=self.request, client=client, detail={"scope": " ".join(scopes)}
            )
        else:
            services.audit_record(
                event="consent_refused" if not form.cleaned_data.get("allow") else "authorize_error",
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


# ---------------------------------------------------------------------------
# /oauth/token and /oauth/revoke
# ---------------------------------------------------------------------------
def _client_id_of(request: HttpRequest) -> str:
    """The client_id a token-endpoint request names (body or Basic user part), for the audit."""
    import base64

    client_id = request.POST.get("client_id", "")
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if not client_id and auth[:6].lower() == "basic ":
        try:
            client_id = base64.b64decode(auth[6:]).decode("utf-8").partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            client_id = ""
    from urllib.parse import unquote

    return unquote(client_id)[:255]


class TokenEndpointView(TokenView):
    """RFC 6749 §3.2 token endpoint (authorization_code with PKCE, refresh_token); refusals audited."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.POST.get("grant_type") not in ("authorization_code", "refresh_token"):
            response: HttpResponse = oauth_error(
                "unsupported_grant_type", "This server supports authorization_code and refresh_token."
            )
        else:
            response = with_error_description(super().post(request, *args, **kwargs))
        if response.status_code == 401:
            # RFC 6749 §5.2: the challenge names the scheme clients authenticate with here
            # (oauthlib answers with a Bearer challenge, which is the resource server's scheme).
            response["WWW-Authenticate"] = 'Basic realm="oauth", charset="UTF-8"'
        if response.status_code != 200:
            try:
                error = json.loads(response.content).get("error", "")
            except ValueError:
                error = ""
            client_id = _client_id_of(request)
            services.audit_record(
                event="token_error",
                request=request,
                client=Client.objects.filter(client_id=client_id).first() if client_id else None,
                detail={"error": error, "grant_type": request.POST.get("grant_type", "")[:64]},
            )
        return response


class RevokeEndpointView(RevokeTokenView):
    """RFC 7009 revocation; the token value itself is never recorded."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = with_error_description(super().post(request, *args, **kwargs))
        if response.status_code == 200:
            client_id = _client_id_of(request)
            services.audit_record(
                event="token_revoked",
                request=request,
                client=Client.objects.filter(client_id=client_id).first() if client_id else None,
                detail={"token_type_hint": request.POST.get("token_type_hint", "")[:32]},
            )
        return response


# ---------------------------------------------------------------------------
# /oauth/register (RFC 7591)
# ---------------------------------------------------------------------------
SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")


def unsupported_flow_problem(metadata: dict[str, Any]) -> str | None:
    """Why the grant and response types asked for cannot be had here (checklist AS1), or None.

    RFC 7591 §2 defaults are ``["authorization_code"]`` and ``["code"]``. DOT would register
    an implicit, password or client_credentials client that this server then never serves.
    """
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if _strings(grant_types) and not set(grant_types) <= set(SUPPORTED_GRANT_TYPES):
        return "This server supports only the authorization_code and refresh_token grant types."
    response_types = metadata.get("response_types", ["code"])
    if not _strings(response_types):
        return "response_types must be an array of strings."
    if not set(response_types) <= {"code"}:
        return "This server supports only the code response type."
    return None  # malformed grant_types are DOT's to report


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class RegisterView(DynamicClientRegistrationView):
    """RFC 7591 registration, open to anonymous MCP clients but bounded (checklist AS6).

    DOT validates the metadata and creates the client; around it this view rate-limits per
    address, applies the redirect URI policy with RFC 7591 §3.2.2 ``invalid_redirect_uri``,
    hands a recent identical public registration back instead of piling up a new one, and
    records how the client authenticates and where it registered from.
    """

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = self._register(request, *args, **kwargs)
        # RFC 7591 §3.2: the response carries a client secret and a registration token.
        response["Cache-Control"] = "no-store"
        return response

    def _register(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        host = host_for_request(request)
        ip = getattr(request, "mcpgate_client_ip", None)
        if services.client_registration_rate_exceeded(ip=ip):
            services.audit_record(event="register_refused", request=request, detail={"error": "rate_limited"})
            return oauth_error(
                "temporarily_unavailable",
                "Too many registrations from this address; try again in a minute.",
                status=429,
                Retry_After="60",
            )
        try:
            metadata = json.loads(request.body)
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            return super().post(request, *args, **kwargs)  # DOT answers invalid_client_metadata
        redirect_uris = metadata.get("redirect_uris")
        if isinstance(redirect_uris, list):
            for uri in redirect_uris:
                problem = redirect_uri_problem(uri) if isinstance(uri, str) else None
                if problem:
                    services.audit_record(
                        event="register_refused", request=request, detail={"error": "invalid_redirect_uri"}
                    )
                    return oauth_error("invalid_redirect_uri", problem)
        problem = unsupported_flow_problem(metadata)
        if problem:
            services.audit_record(
                event="register_refused", request=request, detail={"error": "invalid_client_metadata"}
            )
            return oauth_error("invalid_client_metadata", problem)
        duplicate = services.client_find_duplicate(metadata=metadata, ip=ip, host=host.name)
        if duplicate is not None:
            token = services.registration_token_issue(client=duplicate)
            return JsonResponse(self._describe(request, duplicate, token, secret=None), status=201)
        response = super().post(request, *args, **kwargs)
        if response.status_code != 201:
            services.audit_record(
                event="register_refused",
                request=request,
                detail={"error": json.loads(response.content).get("error", "")},
            )
            return response
        issued = json.loads(response.content)
        client = services.client_record_registration(
            client_id=issued["client_id"], metadata=metadata, ip=ip, host=host.name
        )
        services.audit_record(
            event="register",
            request=request,
            client=client,
            detail={"auth_method": client.token_endpoint_auth_method, "software_id": client.software_id},
        )
        body = self._describe(request, client, issued["registration_access_token"], secret=issued.get("client_secret"))
        # Registrations that never lead to a grant pile up (claude.ai registers on every
        # fresh connection); registering is what adds them, so it is also what sweeps them.
        services.clients_purge_unused(older_than=timedelta(hours=settings.MCPGATE_UNUSED_CLIENT_PURGE_HOURS))
        return JsonResponse(body, status=201)

    def _describe(self, request: HttpRequest, client: Client, token: str, *, secret: str | None) -> dict[str, Any]:
        """RFC 7591 §3.2.1 client information response (and RFC 7592 management fields)."""
        host = host_for_request(request)
        body: dict[str, Any] = {
            "client_id": client.client_id,
            "client_id_issued_at": int(client.created.timestamp()),
            "client_name": client.name,
            "redirect_uris": client.redirect_uris.split(),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "scope": BASIC_SCOPE,
            "registration_access_token": token,
            "registration_client_uri": host.url(
                reverse("oauth2_provider:dcr-register-management", kwargs={"client_id": client.client_id})
            ),
        }
        if client.software_id:
            body["software_id"] = client.software_id
        if secret:
            body["client_secret"] = secret
            body["client_secret_expires_at"] = 0  # RFC 7591 §3.2.1: does not expire
        return body


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
            return JsonResponse(
                {"error": "not_found", "error_description": "No protected resource at this path."}, status=404
            )
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
