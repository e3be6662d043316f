"""Request plumbing: which forwarded headers to believe, which host this is, who signed in."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from mcpgate.errors import unknown_host

from . import services
from .hosts import host_for_netloc
from .identity import ProxyIdentity, SignInRefused, identity_from_meta, identity_meta_keys, printable
from .models import AuditEvent

logger = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], HttpResponse]

# Headers only a trusted proxy may set. Identity headers are added from settings at call time.
_FORWARDING_META = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO")


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def is_trusted_proxy(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in settings.MCPGATE_TRUSTED_PROXIES)


class TrustedProxyMiddleware:
    """Believe X-Forwarded-* and identity headers only from MCPGATE_TRUSTED_PROXIES.

    From any other peer they are removed before anything else reads them, so neither
    Django (host, scheme) nor the sign-in code can be steered by a client. Sets
    ``request.mcpgate_client_ip``: the first address, from the right, that is not a proxy.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        peer = meta.get("REMOTE_ADDR", "")
        if is_trusted_proxy(peer):
            client_ip = peer
            for hop in reversed(meta.get("HTTP_X_FORWARDED_FOR", "").split(",")):
                if not hop.strip():
                    continue
                address = _ip(hop)
                if address is None:
                    # Not an address: the chain cannot be followed past it, so the client is the
                    # last hop that could be named (rate limits then count it with that proxy).
                    break
                client_ip = str(address)
                if not is_trusted_proxy(client_ip):
                    break
            forwarded_host = meta.get("HTTP_X_FORWARDED_HOST", "").split(",")[0].strip()
            if forwarded_host:
                meta["HTTP_HOST"] = forwarded_host
        else:
            client_ip = peer
            present = [key for key in identity_meta_keys() if key in meta]
            if present:
                # Not an error for the client, but a sign of a misconfigured proxy or a probe.
                logger.warning(
                    "ignored identity headers %s from untrusted peer %s",
                    ", ".join(present),
                    peer,
                )
            for key in (*_FORWARDING_META, *present):
                meta.pop(key, None)
        request.mcpgate_client_ip = client_ip  # type: ignore[attr-defined]
        return self.get_response(request)


class HostMiddleware:
    """Resolve the configured host (internal or public) the request came to.

    The scheme is taken from that host's configured URL rather than from the request, so
    every absolute URL Django or DOT builds (issuer, endpoints, resource, ``iss``) is the
    one clients were given. Unconfigured hosts get a 400.

    Transport security follows the host too. ``request.is_secure()`` is true exactly on an
    https host, so Django's SecurityMiddleware sends HSTS there and only there (RFC 6797 §7.2:
    never over plain http). Cookies are flagged Secure by the settings (SESSION_COOKIE_SECURE,
    CSRF_COOKIE_SECURE); on an http host, which the settings allow only on loopback, the flag
    is taken off again on the way out, or the browser could not send the session back there
    (RFC 6265 §4.1.2.5). One deployment can so serve an https public host with Secure cookies
    and HSTS next to an http loopback host without either.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            host = host_for_netloc(request.get_host())
        except DisallowedHost:
            host = None
        if host is None:
            return unknown_host(request)
        request.mcpgate_host = host  # type: ignore[attr-defined]
        # SECURE_PROXY_SSL_HEADER names this key: request.scheme follows the configured URL.
        request.META["HTTP_X_FORWARDED_PROTO"] = host.scheme
        response = self.get_response(request)
        if response.cookies and host.scheme != "https":
            for morsel in response.cookies.values():
                morsel["secure"] = ""
        return response


class ProxyIdentityMiddleware:
    """Sign the person in from oauth2-proxy's forwarded identity headers (or its ID token).

    Only headers that survived TrustedProxyMiddleware are seen here. With
    MCPGATE_IDENTITY_MODE=headers this trusts what it reads; with ``id_token`` the person is
    whoever the provider's verified ID token names (oauth_ext.identity.identity_from_meta), and a
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
            services.audit_record(
                event=AuditEvent.Kind.SIGN_IN_REFUSED, request=request, user=AnonymousUser(), detail=refusal.audit
            )
            return render(request, "oauth_ext/refused.html", {"reason": str(refusal)}, status=403)
        if identity is not None:
            refused = self._sign_in(request, identity)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _sign_in(self, request: HttpRequest, identity: ProxyIdentity) -> HttpResponse | None:
        try:
            user = services.user_sign_in_from_proxy(identity=identity, current=request.user, request=request)
        except SignInRefused as refusal:
            return render(request, "oauth_ext/refused.html", {"reason": str(refusal)}, status=403)
        if user != request.user or not request.user.is_authenticated:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.user = user
        return None
