"""Request plumbing every route shares: which forwarded headers to believe, which host this is."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

from identity.proxy import identity_meta_keys

from .errors import unknown_host
from .hosts import host_for_netloc

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
