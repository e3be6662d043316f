"""RateLimitMiddleware: the rate limits of the authorization server's endpoints and the sign-in pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from urllib.parse import unquote

from django.http import HttpRequest, HttpResponse

from audit.models import AuditKind
from audit.services import audit_record

from . import ratelimit
from .errors import refusal
from .ratelimit import Limit, Verdict, address_key

Handler = Callable[[HttpRequest], HttpResponse]

# Legacy root aliases (2025-03-26 clients without metadata) are the same doors.
REGISTER_PATHS = frozenset({"/oauth/register", "/register"})
REGISTRATION_MANAGEMENT_PREFIX = "/oauth/register/"  # RFC 7592, /oauth/register/<client_id>
TOKEN_PATHS = frozenset({"/oauth/token", "/token"})
REVOKE_PATHS = frozenset({"/oauth/revoke"})
AUTHORIZE_PATHS = frozenset({"/oauth/authorize", "/authorize"})
# Django's password forms: local sign-in (no oauth2-proxy in front) and the admin's own.
LOGIN_PATHS = frozenset({"/accounts/login/", "/admin/login/"})


def token_request_client_id(request: HttpRequest) -> str | None:
    """The client_id a token request names: HTTP Basic's user part (RFC 6749 §2.3.1), else the body's.

    The body is read as the token view reads it (``request.POST``: a form, urlencoded or
    multipart), so no spelling of the request escapes the count. A body Django cannot parse is a
    400 from Django here, as it would be from the view.
    """
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    if authorization[:6].lower() == "basic ":
        try:
            user, _, _ = base64.b64decode(authorization[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            user = ""
        if user:
            return unquote(user)
    return request.POST.get("client_id") or None


def limits_for(request: HttpRequest) -> tuple[list[tuple[Limit, str | None]], bool]:
    """The limits a request counts against, each with its key (None: unknown, not counted),
    and whether the route is a page people see (else an OAuth endpoint).

    The refusal itself takes its shape from the route (mcpgate.errors.route_kind); the flag is
    for the metrics (mcpgate.observability).
    """
    path, method = request.path_info, request.method
    address = address_key(getattr(request, "mcpgate_client_ip", None))
    if (path in REGISTER_PATHS and method == "POST") or path.startswith(REGISTRATION_MANAGEMENT_PREFIX):
        return [(ratelimit.REGISTER, address)], False
    if path in TOKEN_PATHS and method == "POST":
        # By address first: what one address sends beyond its own limit does not use up a client's.
        return [
            (ratelimit.TOKEN_BY_ADDRESS, address),
            (ratelimit.TOKEN_BY_CLIENT, token_request_client_id(request)),
        ], False
    if path in REVOKE_PATHS and method == "POST":
        return [(ratelimit.REVOKE, address)], False
    if path in AUTHORIZE_PATHS:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            # An office behind one NAT is many people: count each of them, not the address.
            return [(ratelimit.AUTHORIZE_BY_PERSON, str(user.pk))], True
        return [(ratelimit.AUTHORIZE_BY_ADDRESS, address)], True
    if path in LOGIN_PATHS and method == "POST":
        return [(ratelimit.LOGIN, address)], True
    return [], False


def too_many_requests(request: HttpRequest, limit: Limit, verdict: Verdict) -> HttpResponse:
    """429 (RFC 6585 §4) with Retry-After, in the route's shape (mcpgate.errors.refusal).

    The OAuth error code is ``temporarily_unavailable``: the one registered code that means
    "try again later" (RFC 6749 §4.1.2.1); neither RFC 6749 §5.2 nor RFC 7591 §3.2.2 has one for
    a rate limit, and a client that does not read 429 still recognises it.
    """
    return refusal(
        request,
        status=429,
        error="temporarily_unavailable",
        description=ratelimit.refusal_message(limit, verdict),
        headers={"Retry-After": str(verdict.retry_after)},
    )


class RateLimitMiddleware:
    """Count each request to a limited route and refuse it with 429 once its window is full.

    Placed after the trusted-proxy middleware (the client address) and the sign-in middleware
    (the person, for /oauth/authorize), before any view: a refused request costs one cache
    round trip per limit, no database work (except one audit row for the first refusal of
    each window and key: ``Verdict.first_refusal``).
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limits, _page = limits_for(request)
        for limit, key in limits:
            if key is None:
                continue
            verdict = ratelimit.hit(limit, key, request)
            if verdict is not None and verdict.refused:
                detail = ratelimit.note_refusal(limit)
                if limit.key == ratelimit.KeyKind.CLIENT:
                    detail["client_id"] = key[:255]  # public, and says which client is being hammered
                if verdict.first_refusal:
                    audit_record(event=AuditKind.RATE_LIMITED, request=request, detail=detail)
                return too_many_requests(request, limit, verdict)
        return self.get_response(request)
