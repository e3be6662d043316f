"""The gateway's pages: the JWK Set upstreams verify identity assertions with, and /connect/, where people
connect their own accounts at per-person upstreams (gateway.connections)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from mcpgate.hosts import host_for_request
from oauth_ext.models import User

from .assertions import published_key_set
from .connections import (
    ConnectRefused,
    CredentialUnavailable,
    DisconnectReason,
    TokenRejected,
    connect_path,
    connection_delete,
    connection_oauth_finish,
    connection_oauth_start,
    connection_token_save,
    connections_of,
)
from .crypto import KeyMissing
from .models import Credential, Upstream
from .selectors import personal_upstream, personal_upstreams

logger = logging.getLogger(__name__)

CONNECT_LIST = "/connect/"
# As the consent page's: its own stylesheet and icon, nothing to run, nothing to frame.
CONNECT_CSP = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"


@require_safe
@cache_control(public=True, max_age=300)
def jwks(request: HttpRequest) -> JsonResponse:
    """RFC 7517 §5 JWK Set of the identity assertion keys (gateway.assertions), public halves only.

    Cacheable for 5 minutes: a retired key stays in the set for an hour, and a verifier that meets an
    unknown ``kid`` (the key rotated since it fetched) fetches the set again.
    """
    return JsonResponse(published_key_set(), content_type="application/jwk-set+json")


def _page(request: HttpRequest, template: str, context: dict[str, object], *, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    # The connect form of a per-person OAuth upstream redirects to its authorization server, which
    # form-action governs too (CSP 3 §6.4.1).
    upstream = context.get("upstream")
    sign_in = (
        f" {_origin(upstream.authorization_url)}"
        if isinstance(upstream, Upstream) and upstream.credential == Credential.PERSON_OAUTH
        else ""
    )
    response["Content-Security-Policy"] = CONNECT_CSP + f"; form-action 'self'{sign_in}"
    return response


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _person(request: HttpRequest) -> User:
    """The person signed in (``login_required`` ran first)."""
    user = request.user
    assert isinstance(user, User)
    return user


def _upstream_or_404(request: HttpRequest, name: str) -> Upstream:
    """The per-person upstream ``name`` if this person may use it; anything else is the same 404 (an
    upstream they may not use is not theirs to learn about)."""
    upstream = personal_upstream(user=_person(request), name=name)
    if upstream is None:
        raise Http404("no such upstream")
    return upstream


@never_cache
@login_required
@require_safe
def connect_list(request: HttpRequest) -> HttpResponse:
    """Every per-person upstream this person may use, which of them are connected, and the buttons."""
    upstreams = personal_upstreams(user=_person(request))
    connections = connections_of(user=_person(request))
    rows = [(upstream, connections.get(upstream.pk)) for upstream in upstreams]
    return _page(request, "gateway/connect.html", {"rows": rows})


@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def connect_upstream(request: HttpRequest, name: str) -> HttpResponse:
    """One upstream: what connecting means, and the form to paste a token (a per-person-token upstream)."""
    upstream = _upstream_or_404(request, name)
    person = _person(request)
    context: dict[str, object] = {"upstream": upstream, "connection": connections_of(user=person).get(upstream.pk)}
    if request.method != "POST":
        return _page(request, "gateway/connect_upstream.html", context)
    if upstream.credential == Credential.PERSON_OAUTH:
        return _start_sign_in(request, upstream, context)
    try:
        connection_token_save(user=person, upstream=upstream, token=request.POST.get("token", ""))
    except TokenRejected as exc:
        return _page(request, "gateway/connect_upstream.html", context | {"problem": str(exc)}, status=400)
    except KeyMissing:
        logger.error("a token for upstream %s could not be stored: MCPGATE_UPSTREAM_KEYS is not set", upstream.name)
        problem = "mcpgate cannot store tokens right now; the people who run it have been told. Nothing was stored."
        return _page(request, "gateway/connect_upstream.html", context | {"problem": problem}, status=503)
    return HttpResponseRedirect(CONNECT_LIST)


def _start_sign_in(request: HttpRequest, upstream: Upstream, context: dict[str, object]) -> HttpResponse:
    """Per-person OAuth: off to the upstream's authorization server, back at ``callback_uri``."""
    try:
        url = connection_oauth_start(
            user=_person(request),
            upstream=upstream,
            session=request.session,
            redirect_uri=_callback_uri(request, upstream),
        )
    except CredentialUnavailable as exc:
        return _page(request, "gateway/connect_upstream.html", context | {"problem": str(exc)}, status=503)
    return HttpResponseRedirect(url)


def _callback_uri(request: HttpRequest, upstream: Upstream) -> str:
    """``https://HOST/connect/NAME/callback`` on the host the person came to (register it at the upstream)."""
    return host_for_request(request).url(connect_path(upstream.name) + "callback")


@never_cache
@login_required
@require_safe
def connect_callback(request: HttpRequest, name: str) -> HttpResponse:
    """Per-person OAuth: the upstream's authorization response (RFC 6749 §4.1.2) for a connection this
    person started; an answer that is not one gets a page saying so, and nothing is stored."""
    upstream = _upstream_or_404(request, name)
    if upstream.credential != Credential.PERSON_OAUTH:
        raise Http404("no such upstream")
    try:
        connection_oauth_finish(
            user=_person(request), upstream=upstream, session=request.session, query=request.GET.dict()
        )
    except ConnectRefused as exc:
        context: dict[str, object] = {"upstream": upstream, "connection": None, "problem": str(exc)}
        return _page(request, "gateway/connect_upstream.html", context, status=exc.status)
    return HttpResponseRedirect(CONNECT_LIST)


@never_cache
@login_required
@require_POST
def connect_disconnect(request: HttpRequest, name: str) -> HttpResponse:
    """Forget this person's credential at the upstream; their next call there asks them to connect again."""
    upstream = _upstream_or_404(request, name)
    connection = connections_of(user=_person(request)).get(upstream.pk)
    if connection is not None:
        connection_delete(connection=connection, reason=DisconnectReason.PERSON)
    return HttpResponseRedirect(CONNECT_LIST)
