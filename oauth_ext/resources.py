"""RFC 8707 resource indicators: compare what a client sends with this host's /mcp, canonically."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_resource(value: str) -> str | None:
    """``value`` as this server writes resource URLs, or None if it is not an absolute http(s) URL.

    Scheme and host are case-insensitive and a default port is implied (RFC 3986 §6.2.2,
    §6.2.3; checklist AS4); one trailing slash is dropped, since clients differ on it. The
    path stays case-sensitive. Query, fragment and userinfo are not part of any resource here.
    """
    if not isinstance(value, str):
        return None
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        return None
    if parts.username is not None or parts.password is not None or "#" in value:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    return f"{scheme}://{netloc}{path}"
