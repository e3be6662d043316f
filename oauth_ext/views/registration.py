"""Dynamic client registration (RFC 7591) and its management (RFC 7592), on DOT's views."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.views import (
    DynamicClientRegistrationManagementView,
    DynamicClientRegistrationView,
)

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate.errors import refusal
from mcpgate.hosts import host_for_request

from .. import services
from ..models import Client
from ..registration import (
    INVALID_METADATA,
    RegistrationRefused,
    check_registration_metadata,
    check_update_metadata,
    registration_metadata,
    registration_request,
)
from ..scopes import BASIC_SCOPE

logger = logging.getLogger(__name__)


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
        return refusal(
            request,
            status=405,
            error="invalid_request",
            description="Register a client with POST (RFC 7591 §3.1).",
            headers={"Allow": "POST"},
        )

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = self._register(request, *args, **kwargs)
        # RFC 7591 §3.2: the response carries a client secret and a registration token.
        response["Cache-Control"] = "no-store"
        return response

    def _register(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Parse and check (oauth_ext.registration), let DOT create the client, record it (services)."""
        try:
            metadata = registration_request(request.body)
        except RegistrationRefused as refused:
            services.registration_refusal_record(request=request, error=refused.error)
            return refusal(request, status=400, error=refused.error, description=refused.description)
        # DOT's view is the one public way to create the client and its registration token.
        created = super().post(request, *args, **kwargs)
        if created.status_code != 201:
            services.registration_refusal_record(request=request, error=json.loads(created.content).get("error", ""))
            return created
        registered = services.client_register(
            issued=json.loads(created.content),
            metadata=metadata,
            ip=getattr(request, "mcpgate_client_ip", None),
            host=host_for_request(request).name,
            request=request,
        )
        body = client_information(
            request, registered.client, registered.registration_access_token, secret=registered.client_secret
        )
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
        return refusal(
            request,
            status=405,
            error="invalid_request",
            description="Use GET to read, PUT to update or DELETE to remove this registration (RFC 7592 §2).",
            headers={"Allow": "GET, PUT, DELETE"},
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
            return refusal(
                request,
                status=401,
                error="invalid_token",
                description="Invalid registration access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
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
        except RegistrationRefused as refused:
            error, description = refused.error, refused.description
        except ValidationError as invalid:  # Client.clean(), DOT's checks included
            error, description = INVALID_METADATA, " ".join(invalid.messages)
        else:
            audit_record(
                event=AuditKind.REGISTRATION_UPDATED, request=request, user=REGISTRANT, client=client, detail=changes
            )
            return JsonResponse(client_information(request, client, token or presented, secret=None))
        services.registration_refusal_record(
            request=request, error=error, user=REGISTRANT, client=client, operation="update"
        )
        return refusal(request, status=400, error=error, description=description)

    def delete(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """RFC 7592 §2.3: the client goes, and with it (cascade) its tokens, codes and consents."""
        authenticated = self._authenticated(request, client_id)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        client, _token = authenticated
        response: HttpResponse = super().delete(request, client_id, *args, **kwargs)
        if response.status_code == 204:
            audit_record(
                event=AuditKind.REGISTRATION_DELETED,
                request=request,
                user=REGISTRANT,
                detail={"client_id": client.client_id, "name": client.name},
            )
        return response
