"""HTTP endpoints of the authorization server: DOT's views, subclassed for MCP clients and audit."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.models import get_access_token_model
from oauth2_provider.views import (
    AuthorizationView,
    DynamicClientRegistrationManagementView,
    DynamicClientRegistrationView,
    OAuthProtectedResourceMetadataView,
    OAuthServerMetadataView,
    RevokeTokenView,
    TokenView,
)
from oauthlib.common import INVALID_HEX_PATTERN
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidRequestFatalError

from . import services
from .hosts import MCP_PATH, host_for_request
from .models import AuditEvent, Client
from .redirects import redirect_uri_problem
from .resources import canonical_resource
from .scopes import BASIC_SCOPE, all_scopes, tools_needing

logger = logging.getLogger(__name__)

Kind = AuditEvent.Kind


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
# Malformed parameters
# ---------------------------------------------------------------------------
NUL = "\x00"
NUL_IN_REQUEST = "The request contains a NUL character."


def _contains_nul(values: Iterable[str]) -> bool:
    return any(NUL in value for value in values)


def nul_in_parameters(*queries: QueryDict) -> bool:
    """Whether any name or value of these QueryDicts contains NUL.

    No OAuth parameter may (RFC 6749 Appendix A: client_id, code, token, state... are
    printable ASCII; URIs have no NUL either), and PostgreSQL cannot store or even compare
    a string with one: the query raises. So such a request is malformed, and is refused
    before any of it reaches the database.
    """
    for query in queries:
        for name, values in query.lists():
            if NUL in name or _contains_nul(values):
                return True
    return False


def basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    """The client_id and secret of an RFC 6749 §2.3.1 Basic header, decoded as DOT decodes them, or None."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:]).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def nul_in_client_request(request: HttpRequest) -> bool:
    """A NUL in a token or revocation request: a parameter, the Authorization header, or its Basic credentials."""
    credentials = basic_credentials(request) or ()
    return (
        nul_in_parameters(request.GET, request.POST)
        or NUL in request.META.get("HTTP_AUTHORIZATION", "")
        or _contains_nul(credentials)
    )


def malformed_basic_credentials(request: HttpRequest) -> bool:
    """Whether the request names the Basic scheme but its credentials do not decode as RFC 6749 §2.3.1 says.

    DOT's decoding raises on a non-ASCII header (``base64.b64decode`` of a str) instead of
    failing the authentication, so such a request must not reach it.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return header[:6].lower() == "basic " and basic_credentials(request) is None


# RFC 6749 §5.2: the challenge names the scheme clients authenticate with here.
BASIC_CHALLENGE = 'Basic realm="oauth", charset="UTF-8"'
# oauthlib's urldecode raises ValueError on a query string this pattern finds (RFC 3986 §2.1).
MALFORMED_QUERY = "The query string is not valid URL encoding (a % must be followed by two hex digits)."
MALFORMED_BASIC = "The Basic credentials are not base64 of a UTF-8 client_id:client_secret (RFC 6749 §2.3.1)."
# Resource indicators may be repeated (RFC 8707 §2); no other parameter may.
REPEATABLE = frozenset({"resource"})


def repeated_parameter(request: HttpRequest) -> str | None:
    """The first parameter of a token or revocation request that is sent more than once, or None.

    RFC 6749 §3.2 (and RFC 7009 §2.1 through it): "Request and response parameters MUST NOT
    be included more than once." DOT hands oauthlib the last value of each and oauthlib reads
    the query string and the body together, so a repeat would be silently resolved instead.
    """
    seen: set[str] = set()
    for query in (request.GET, request.POST):
        for name, values in query.lists():
            if name in REPEATABLE:
                continue
            if name in seen or len(values) > 1:
                return name
            seen.add(name)
    return None


def client_request_problem(request: HttpRequest) -> HttpResponse | None:
    """The refusal of a token or revocation request (RFC 6749 §5.2 errors) that oauthlib must not see, or None.

    A NUL anywhere; a query string oauthlib cannot decode; undecodable Basic credentials; a
    repeated parameter (``repeated_parameter``).

    Undecodable Basic credentials are ``invalid_client`` with 401, not ``invalid_request``:
    the client did attempt to authenticate with the Authorization header, and §5.2 says such
    a failure MUST be answered 401 with a ``WWW-Authenticate`` challenge for the scheme used.
    """
    if nul_in_client_request(request):
        return oauth_error("invalid_request", NUL_IN_REQUEST)
    if INVALID_HEX_PATTERN.search(request.META.get("QUERY_STRING", "")):
        # oauthlib reads the query string too, and its urldecode raises ValueError on this.
        return oauth_error("invalid_request", MALFORMED_QUERY)
    if malformed_basic_credentials(request):
        return oauth_error("invalid_client", MALFORMED_BASIC, 401, WWW_Authenticate=BASIC_CHALLENGE)
    repeated = repeated_parameter(request)
    if repeated is not None:
        return oauth_error("invalid_request", f"The parameter {printable(repeated, 64)} was sent more than once.")
    return None


def printable(value: str, limit: int) -> str:
    """``value`` fit for the audit trail: PostgreSQL's jsonb cannot hold NUL either."""
    return value.replace(NUL, "\ufffd")[:limit]


# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) without padding is always 43 characters.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 7636 §4.1: code-verifier = 43*128unreserved.
CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
MALFORMED_CHALLENGE = (
    "code_challenge must be the base64url-encoded SHA-256 digest of the code_verifier (43 characters, RFC 7636 §4.2)."
)
MALFORMED_VERIFIER = "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)."
INCOMPLETE_CONSENT = "The consent form is incomplete or names no known application."


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
            if _contains_nul(query.getlist("client_id") + query.getlist("redirect_uri")):
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
            services.audit_record(
                event=Kind.AUTHORIZE_ERROR,
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
            services.audit_record(
                event=Kind.CONSENT_REMEMBERED, request=request, client=client, detail={"scope": " ".join(scopes)}
            )
            return self.redirect(uri, client)
        services.audit_record(
            event=Kind.CONSENT_SHOWN, request=request, client=client, detail={"scope": " ".join(scopes)}
        )
        # What the person is shown approval for: an approval is remembered only if the client
        # still has these redirect URIs when it arrives (services.consent_record).
        request.session[self._shown_key(client)] = client.redirect_uris
        return super().get(request, *args, **kwargs)

    @staticmethod
    def _shown_key(client: Client) -> str:
        return f"mcpgate.consent_shown.{client.pk}"

    def _refuse(self, client: Client, credentials: dict[str, Any], error: str, description: str) -> HttpResponse:
        """An error response to the client's validated redirect URI, echoing ``state`` (RFC 6749 §4.1.2.1)."""
        services.audit_record(event=Kind.AUTHORIZE_ERROR, request=self.request, client=client, detail={"error": error})
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
            services.audit_record(event=Kind.CONSENT_GIVEN, request=self.request, client=client, detail=detail)
        else:
            services.audit_record(
                event=Kind.CONSENT_REFUSED if not form.cleaned_data.get("allow") else Kind.AUTHORIZE_ERROR,
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
    """The client_id a token-endpoint request names (body or Basic user part), for the audit; "" if unusable."""
    client_id = request.POST.get("client_id", "") or (basic_credentials(request) or ("", ""))[0]
    return "" if NUL in client_id else client_id[:255]


class TokenEndpointView(TokenView):
    """RFC 6749 §3.2 token endpoint (authorization_code with PKCE, refresh_token); refusals audited."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = self._malformed(request) or with_error_description(super().post(request, *args, **kwargs))
        if response.status_code == 401:
            # RFC 6749 §5.2: the challenge names the scheme clients authenticate with here
            # (oauthlib answers with a Bearer challenge, which is the resource server's scheme).
            response["WWW-Authenticate"] = BASIC_CHALLENGE
        if response.status_code != 200:
            try:
                error = json.loads(response.content).get("error", "")
            except ValueError:
                error = ""
            client_id = _client_id_of(request)
            services.audit_record(
                event=Kind.TOKEN_ERROR,
                request=request,
                client=Client.objects.filter(client_id=client_id).first() if client_id else None,
                detail={"error": error, "grant_type": printable(request.POST.get("grant_type", ""), 64)},
            )
        return response

    def authorization_flow_token_response(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """DOT's answer, or ``invalid_grant`` when the tokens were revoked before it was written.

        After issuing, DOT looks the new access token up again with ``.get()`` (for its
        app_authorized signal). A concurrent request that proved the code or refresh token was
        used twice (oauth_ext.validators) may have revoked it in between: the tokens in the body
        are dead, and the answer is RFC 6749 §5.2 ``invalid_grant``.
        """
        try:
            response: HttpResponse = super().authorization_flow_token_response(request, *args, **kwargs)
        except get_access_token_model().DoesNotExist:
            return oauth_error("invalid_grant", ERROR_DESCRIPTIONS["invalid_grant"])
        return response

    @staticmethod
    def _malformed(request: HttpRequest) -> HttpResponse | None:
        """The refusal of a request oauthlib must not see, or None.

        A NUL anywhere, undecodable Basic credentials or a repeated parameter
        (``client_request_problem``); a grant type this server does not serve;
        an RFC 7636 §4.1 code_verifier of the wrong length or alphabet (oauthlib compares its
        hash only, so a short, guessable verifier would pass). oauthlib reads parameters from
        the query string too, so every code_verifier there is checked as well.
        """
        problem = client_request_problem(request)
        if problem is not None:
            return problem
        grant_type = request.POST.get("grant_type")
        if grant_type not in SUPPORTED_GRANT_TYPES:
            return oauth_error("unsupported_grant_type", "This server supports authorization_code and refresh_token.")
        verifiers = request.GET.getlist("code_verifier") + request.POST.getlist("code_verifier")
        if grant_type == "authorization_code" and not all(CODE_VERIFIER.fullmatch(v) for v in verifiers):
            return oauth_error("invalid_request", MALFORMED_VERIFIER)
        return None


class RevokeEndpointView(RevokeTokenView):
    """RFC 7009 revocation; the token value itself is never recorded."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        problem = client_request_problem(request)  # RFC 7009 §2.2.1: RFC 6749 §5.2 errors
        if problem is not None:
            return problem
        response = with_error_description(super().post(request, *args, **kwargs))
        if response.status_code == 200:
            client_id = _client_id_of(request)
            services.audit_record(
                event=Kind.TOKEN_REVOKED,
                request=request,
                client=Client.objects.filter(client_id=client_id).first() if client_id else None,
                detail={"token_type_hint": printable(request.POST.get("token_type_hint", ""), 32)},
            )
        return response


# ---------------------------------------------------------------------------
# /oauth/register (RFC 7591) and /oauth/register/<client_id> (RFC 7592)
# ---------------------------------------------------------------------------
SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")
INVALID_METADATA = "invalid_client_metadata"
INVALID_REDIRECT_URI = "invalid_redirect_uri"
TOO_DEEP = "Request body is nested too deeply."

# RFC 7591 §2 client metadata (and OpenID Connect Registration's application_type), by JSON type.
# Fields this server does not know are ignored (RFC 7591 §2), and never stored.
STRING_FIELDS = (
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "software_id",
    "software_version",
    "software_statement",
    "token_endpoint_auth_method",
    "application_type",
)
STRING_ARRAY_FIELDS = ("redirect_uris", "grant_types", "response_types", "contacts")
OBJECT_FIELDS = ("jwks",)
# The fields this server reads. The others it ignores, so there a JSON null means "not given"
# (RFC 7592 §2.2 treats an omitted field as null); here null is a value of the wrong type.
USED_FIELDS = frozenset(
    {
        "client_name",
        "software_id",
        "software_version",
        "token_endpoint_auth_method",
        "redirect_uris",
        "grant_types",
        "response_types",
    }
)
# DOT's wording for the arrays DOT reads too, so a refusal reads the same whichever check meets it.
ARRAY_MESSAGES = {
    "redirect_uris": ("redirect_uris must be an array", "Each redirect_uri must be a string"),
    "grant_types": ("grant_types must be an array", "Each grant_type must be a string"),
}
# What the columns hold: Client.name, Client.software_id, Client.software_version.
MAX_LENGTHS = {"client_name": 255, "software_id": 255, "software_version": 64}
# Each redirect URI is checked against the allowlist; clients register one or two.
MAX_REDIRECT_URIS = 20
# Client metadata is three levels deep at most (jwks: object, keys array, key object).
MAX_JSON_DEPTH = 16


class RegistrationRefused(Exception):
    """An RFC 7591 §3.2.2 error response: ``error`` (invalid_client_metadata or invalid_redirect_uri) and why."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def registration_metadata(body: bytes) -> dict[str, Any]:
    """The JSON object of an RFC 7591 §3.1 or RFC 7592 §2.2 request; raises RegistrationRefused.

    Python's parser recurses once per level of nesting and raises RecursionError on deep
    input. Anything nested deeper than client metadata ever is (MAX_JSON_DEPTH) is refused as
    well, so DOT parsing the same body again a few frames further down the stack cannot be the
    one that hits the limit.
    """
    try:
        metadata = json.loads(body)
    except RecursionError:
        raise RegistrationRefused(INVALID_METADATA, TOO_DEEP) from None
    except ValueError:
        raise RegistrationRefused(INVALID_METADATA, "Request body must be valid JSON") from None
    if not isinstance(metadata, dict):
        raise RegistrationRefused(INVALID_METADATA, "Request body must be a JSON object")
    if _nesting(metadata) > MAX_JSON_DEPTH:
        raise RegistrationRefused(INVALID_METADATA, TOO_DEEP)
    return metadata


def _nesting(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (without recursing), up to MAX_JSON_DEPTH + 1."""
    deepest, pending = 0, [(value, 1)]
    while pending and deepest <= MAX_JSON_DEPTH:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


def check_registration_metadata(metadata: dict[str, Any]) -> None:
    """Refuse (RegistrationRefused) metadata this server does not register (checklist AS1, AS2, AS6).

    The one policy for RFC 7591 registration and RFC 7592 update: each RFC 7591 §2 field
    given has its JSON type (``client_name: null`` is not a name), no string holds a NUL or a lone surrogate,
    stored values fit their columns, only the code flow is asked for, and every redirect URI
    passes the redirect URI policy (RFC 7591 §3.2.2 ``invalid_redirect_uri``).
    """
    given = {field: value for field, value in metadata.items() if value is not None or field in USED_FIELDS}
    for field in STRING_FIELDS:
        if field in given and not isinstance(given[field], str):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be a string.")
    for field in STRING_ARRAY_FIELDS:
        not_array, not_strings = ARRAY_MESSAGES.get(field, (f"{field} must be an array of strings.",) * 2)
        if field in given and not isinstance(given[field], list):
            raise RegistrationRefused(INVALID_METADATA, not_array)
        if not all(isinstance(item, str) for item in given.get(field, [])):
            raise RegistrationRefused(INVALID_METADATA, not_strings)
    for field in OBJECT_FIELDS:
        if field in given and not isinstance(given[field], dict):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be an object.")
    redirect_uris: list[str] = given.get("redirect_uris", [])
    for uri in redirect_uris:
        if NUL in uri:
            raise RegistrationRefused(INVALID_REDIRECT_URI, f"{uri!r} contains a NUL character.")
        if not _encodes_to_utf8(uri):
            raise RegistrationRefused(INVALID_REDIRECT_URI, f"{uri!r} is not valid Unicode text (UTF-8).")
    for field in (*STRING_FIELDS, *STRING_ARRAY_FIELDS):
        value = given.get(field, "")
        values = [value] if isinstance(value, str) else value
        if _contains_nul(values):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must not contain a NUL character.")
        if not all(_encodes_to_utf8(item) for item in values):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be valid Unicode text (UTF-8).")
    for field, limit in MAX_LENGTHS.items():
        if len(given.get(field, "")) > limit:
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be at most {limit} characters.")
    problem = unsupported_flow_problem(given)
    if problem:
        raise RegistrationRefused(INVALID_METADATA, problem)
    if not redirect_uris:
        raise RegistrationRefused(INVALID_METADATA, "redirect_uris is required for grant type 'authorization_code'")
    if len(redirect_uris) > MAX_REDIRECT_URIS:
        raise RegistrationRefused(INVALID_METADATA, f"At most {MAX_REDIRECT_URIS} redirect_uris can be registered.")
    for uri in redirect_uris:
        problem = redirect_uri_problem(uri)
        if problem:
            raise RegistrationRefused(INVALID_REDIRECT_URI, problem)


def _encodes_to_utf8(value: str) -> bool:
    """False for a string with a lone surrogate: JSON's ``"\\ud800"`` decodes to one (RFC 8259 §8.2).

    UTF-8 cannot encode it, so neither the database nor a JSON response can carry it.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unsupported_flow_problem(metadata: dict[str, Any]) -> str | None:
    """Why the grant and response types asked for cannot be had here (checklist AS1), or None.

    RFC 7591 §2 defaults are ``["authorization_code"]`` and ``["code"]``. DOT would register
    an implicit, password or client_credentials client that this server then never serves.
    Both are arrays of strings by now (``check_registration_metadata``).
    """
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if not set(grant_types) <= set(SUPPORTED_GRANT_TYPES):
        return "This server supports only the authorization_code and refresh_token grant types."
    if "authorization_code" not in grant_types:
        return "grant_types must include authorization_code."
    if not set(metadata.get("response_types", ["code"])) <= {"code"}:
        return "This server supports only the code response type."
    return None


def check_update_metadata(client: Client, metadata: dict[str, Any]) -> None:
    """RFC 7592 §2.2 on top of the registration policy; raises RegistrationRefused.

    The client_id, if sent, must be the client's own. How the client authenticates never
    changes: a public client made confidential would have no secret, a confidential one made
    public would shed its secret. An omitted token_endpoint_auth_method keeps the current one
    (§2.2 lets the server keep a value and say so in the response) rather than falling back to
    RFC 7591's default, client_secret_basic.
    """
    if "client_id" in metadata and metadata["client_id"] != client.client_id:
        raise RegistrationRefused(INVALID_METADATA, "client_id must be the client_id of this registration.")
    current = client.token_endpoint_auth_method
    if metadata.get("token_endpoint_auth_method", current) != current:
        raise RegistrationRefused(
            INVALID_METADATA,
            f"token_endpoint_auth_method cannot be changed (it is {current!r}); register a new client instead.",
        )


def client_information(request: HttpRequest, client: Client, token: str, *, secret: str | None) -> dict[str, Any]:
    """RFC 7591 §3.2.1 client information response, with RFC 7592 §3's management fields."""
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


class RegisterView(DynamicClientRegistrationView):
    """RFC 7591 registration, open to anonymous MCP clients but bounded (checklist AS6).

    The registration policy (``check_registration_metadata``) runs first, DOT then creates the
    client, and this view records how the client authenticates and where it registered from.
    Every registration gets a client and a registration access token of its own: identical
    metadata from one address (everybody behind a NAT) is never merged, since whoever holds a
    client's RFC 7592 token controls its redirect URIs. Requests are rate-limited per address
    before they get here; abandoned registrations are swept (``clients_purge_unused``).
    """

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """RFC 7591 §3: registration is a POST; other methods get §3.2.2's JSON shape, not Django's empty page."""
        return oauth_error("invalid_request", "Register a client with POST (RFC 7591 §3.1).", 405, Allow="POST")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = self._register(request, *args, **kwargs)
        # RFC 7591 §3.2: the response carries a client secret and a registration token.
        response["Cache-Control"] = "no-store"
        return response

    def _register(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        host = host_for_request(request)
        ip = getattr(request, "mcpgate_client_ip", None)
        try:
            metadata = registration_metadata(request.body)
            check_registration_metadata(metadata)
        except RegistrationRefused as refusal:
            services.audit_record(event=Kind.REGISTER_REFUSED, request=request, detail={"error": refusal.error})
            return oauth_error(refusal.error, refusal.description)
        response = super().post(request, *args, **kwargs)
        if response.status_code != 201:
            services.audit_record(
                event=Kind.REGISTER_REFUSED,
                request=request,
                detail={"error": json.loads(response.content).get("error", "")},
            )
            return response
        issued = json.loads(response.content)
        client = services.client_record_registration(
            client_id=issued["client_id"], metadata=metadata, ip=ip, host=host.name
        )
        services.audit_record(
            event=Kind.REGISTER,
            request=request,
            client=client,
            detail={"auth_method": client.token_endpoint_auth_method, "software_id": client.software_id},
        )
        body = client_information(
            request, client, issued["registration_access_token"], secret=issued.get("client_secret")
        )
        # Registrations that never lead to a grant pile up (claude.ai registers on every
        # fresh connection); registering is what adds them, so it is also what sweeps them.
        services.clients_purge_unused(older_than=timedelta(hours=settings.MCPGATE_UNUSED_CLIENT_PURGE_HOURS))
        return JsonResponse(body, status=201)


# Who acts at the RFC 7592 endpoint: whoever holds the registration access token, never the
# person a browser session may name (audit_record would take request.user otherwise).
REGISTRANT = AnonymousUser()


# As on DOT's view: an API for clients holding a bearer token, not a form with a session.
@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class RegistrationManagementView(DynamicClientRegistrationManagementView):
    """RFC 7592 client configuration endpoint, held to exactly the registration policy.

    DOT authenticates every request (a live registration access token of this dynamically
    registered client, else 401) and deletes. Reading answers in RegisterView's shape; an
    update is checked like a registration plus RFC 7592 §2.2's own rules, then applied by
    ``services.client_update_registration`` (which forgets consents and codes when the
    redirect URIs change). Updates and deletions are audited.
    """

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().dispatch(request, *args, **kwargs)
        # RFC 7592 §3: the response carries the registration access token.
        response["Cache-Control"] = "no-store"
        return response

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """RFC 7592 §2 defines GET, PUT and DELETE here; anything else is refused in RFC 7591 §3.2.2's shape.

        Django's own answer is an empty HTML page, which a client of a JSON API cannot read.
        """
        return oauth_error(
            "invalid_request",
            "Use GET to read, PUT to update or DELETE to remove this registration (RFC 7592 §2).",
            405,
            Allow="GET, PUT, DELETE",
        )

    def _authenticated(self, request: HttpRequest, client_id: str) -> tuple[Client, str] | HttpResponse:
        """The client and the registration access token presented for it, or DOT's 401.

        DOT's RFC 7592 §2.1 read answers 200 exactly when the bearer token is a live
        registration token of this dynamically registered client, and echoes that token; asking
        it keeps authentication DOT's (the method it uses to check is private).
        """
        read: HttpResponse = super().get(request, client_id)
        if read.status_code != 200:
            return read
        client = Client.objects.filter(client_id=client_id).first()
        if client is None:  # deleted in the meantime
            return oauth_error(
                "invalid_token",
                "Invalid registration access token",
                401,
                WWW_Authenticate='Bearer error="invalid_token"',
            )
        return client, str(json.loads(read.content)["registration_access_token"])

    def get(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """RFC 7592 §2.1: the current registration."""
        authenticated = self._authenticated(request, client_id)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        client, token = authenticated
        return JsonResponse(client_information(request, client, token, secret=None))

    def put(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """RFC 7592 §2.2: replace the metadata, under the registration policy."""
        authenticated = self._authenticated(request, client_id)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        client, presented = authenticated
        try:
            metadata = registration_metadata(request.body)
            check_registration_metadata(metadata)
            check_update_metadata(client, metadata)
            client, token, changes = services.client_update_registration(client=client, metadata=metadata)
        except RegistrationRefused as refusal:
            error, description = refusal.error, refusal.description
        except ValidationError as invalid:  # Client.clean(), DOT's checks included
            error, description = INVALID_METADATA, " ".join(invalid.messages)
        else:
            services.audit_record(
                event=Kind.REGISTRATION_UPDATED, request=request, user=REGISTRANT, client=client, detail=changes
            )
            return JsonResponse(client_information(request, client, token or presented, secret=None))
        services.audit_record(
            event=Kind.REGISTER_REFUSED,
            request=request,
            user=REGISTRANT,
            client=client,
            detail={"error": error, "operation": "update"},
        )
        return oauth_error(error, description)

    def delete(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """RFC 7592 §2.3: the client goes, and with it (cascade) its tokens, codes and consents."""
        authenticated = self._authenticated(request, client_id)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        client, _token = authenticated
        response: HttpResponse = super().delete(request, client_id, *args, **kwargs)
        if response.status_code == 204:
            services.audit_record(
                event=Kind.REGISTRATION_DELETED,
                request=request,
                user=REGISTRANT,
                detail={"client_id": client.client_id, "name": client.name},
            )
        return response


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
