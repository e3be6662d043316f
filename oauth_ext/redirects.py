"""Redirect URI policy (checklist AS2): loopback on any port (RFC 8252 §7.3), else the operator allowlist.

A URI is compared on its parsed parts (scheme, host, port, path, query), never as a string:
a string prefix is no boundary once a browser resolves ``..`` (RFC 3986 §5.2.4) or reads
``%2e`` as a dot and ``\\`` as ``/`` (WHATWG URL standard), and the server behind it may decode
``%2f``, ``..;`` or a double encoding. So a redirect URI (and an allowlist entry) must first
be *clean*: plain RFC 3986 characters, no dot segment in any spelling, no encoded separator,
no empty segment, no credentials, a well-formed host and port. Only then is it matched.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from django.apps import apps

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

# Seeded into the allowlist by migration 0002; operators edit it in the admin.
KNOWN_CLIENT_CALLBACKS: tuple[tuple[str, str, str], ...] = (
    ("https://claude.ai/api/mcp/auth_callback", "exact", "Claude (claude.ai, Desktop, mobile)"),
    ("https://claude.com/api/mcp/auth_callback", "exact", "Claude (claude.com)"),
    ("https://vscode.dev/redirect", "exact", "VS Code for the Web / VS Code"),
    ("https://insiders.vscode.dev/redirect", "exact", "VS Code Insiders"),
    ("https://chatgpt.com/connector_platform_oauth_redirect", "exact", "ChatGPT (stable callback, needs iss)"),
    ("https://chatgpt.com/connector/oauth/", "prefix", "ChatGPT (per-connector callbacks)"),
    ("https://www.cursor.com/agents/mcp/oauth/callback", "exact", "Cursor Cloud Agents"),
    ("https://vertexaisearch.cloud.google.com/oauth-redirect", "exact", "Gemini Enterprise"),
    ("cursor://anysphere.cursor-mcp/", "prefix", "Cursor desktop (older app-scheme callback)"),
)

# RFC 3986 §2: unreserved, reserved and "%". Anything else (space, controls, "\", non-ASCII)
# is either dropped, folded or rewritten by some parser between here and the callback.
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # RFC 3986 §3.1
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Encoded "/", "\", "." and "%" in a path: servers decode them into separators, dot segments or
# a second round of escapes. No real callback path needs them.
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|25)", re.IGNORECASE)
# host[:port] of an authority without userinfo; the host is a DNS name or an IP literal.
_AUTHORITY = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?")
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Schemes whose "navigation" runs code, reads local files or goes nowhere (RFC 9700 §4.1.1 is
# about https; RFC 8252 §7.1 about private-use schemes: none of these is either).
_FORBIDDEN_SCHEMES = ("javascript", "data", "file", "blob", "about", "vbscript", "ws", "wss")


@dataclass(frozen=True)
class _Parsed:
    """The parts of a clean URI that decide where a browser sends the response."""

    scheme: str
    host: str  # lower-case; "" for a URI without authority (com.example.app:/cb)
    port: int | None  # the effective port: an explicit default port is the same as none
    path: str
    query: str | None  # None when there is no "?" at all

    @classmethod
    def of(cls, uri: str, parts: SplitResult, host: str, port: int | None) -> _Parsed:
        path = parts.path
        if parts.scheme in _DEFAULT_PORTS:
            port = port if port is not None else _DEFAULT_PORTS[parts.scheme]
            path = path or "/"  # RFC 3986 §6.2.3: an empty http(s) path is "/"
        return cls(parts.scheme, host, port, path, parts.query if "?" in uri else None)


def _shape(uri: str) -> tuple[_Parsed | None, str | None]:
    """Parse ``uri`` if it is clean: (parts, None), else (None, why not)."""
    if not _URI_CHARACTERS.fullmatch(uri):
        return None, (
            f"{uri!r} contains characters a URI cannot have (RFC 3986 §2): spaces, controls, backslashes or non-ASCII."
        )
    if _PERCENT_ESCAPE.search(uri):
        return None, f"{uri!r} has a '%' that does not start a percent-encoding (RFC 3986 §2.1)."
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None, f"{uri!r} is not a well-formed URI."
    if not parts.scheme:
        return None, f"{uri!r} is not an absolute URI."
    if "#" in uri:
        return None, f"{uri!r} has a fragment, which RFC 6749 §3.1.2 forbids."
    if "@" in parts.netloc:
        return None, f"{uri!r} carries credentials."
    if parts.scheme in _FORBIDDEN_SCHEMES:
        return None, (
            f"{uri!r}: javascript, data, file, blob, about, vbscript and ws(s) URIs cannot "
            "receive an authorization response."
        )
    host, port, problem = _authority(uri, parts)
    if problem:
        return None, problem
    segments = parts.path.split("/")
    # A segment is a dot segment if it is "." or ".." once decoded and stripped of ";params"
    # (RFC 3986 §3.3; Java servers resolve "..;" like ".."), whatever its spelling.
    if any(unquote(segment).split(";")[0] in (".", "..") for segment in segments):
        return None, (
            f"{uri!r} has a '.' or '..' path segment (in any spelling), "
            "which a browser resolves to another path (RFC 3986 §5.2.4)."
        )
    if _ENCODED_SEPARATOR.search(parts.path):
        return None, (
            f"{uri!r} has an encoded '/', '\\', '.' or '%' in its path (%2F, %5C, %2E, %25), "
            "which a server may decode into another path."
        )
    if "" in segments[1:-1]:
        return None, f"{uri!r} has an empty path segment ('//'), which a server may collapse into another path."
    return _Parsed.of(uri, parts, host, port), None


def _authority(uri: str, parts: SplitResult) -> tuple[str, int | None, str | None]:
    """The host (lower-case) and explicit port of ``parts``, or why they are not well-formed."""
    if not parts.netloc:
        if parts.scheme in _DEFAULT_PORTS:
            return "", None, f"{uri!r} has no host."
        return "", None, None  # RFC 8252 §7.1 private-use URI without authority (com.example.app:/cb)
    match = _AUTHORITY.fullmatch(parts.netloc.lower())
    if match is None:
        return "", None, f"{uri!r} has an invalid host: only letters, digits, '-' and '.', or an IP address."
    host, port_text = match["host"], match["port"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "", None, f"{uri!r} has an invalid IPv6 address."
        host = host[1:-1]
    elif not _HOST_NAME.fullmatch(host):
        return "", None, f"{uri!r} has an invalid host: only letters, digits, '-' and '.', or an IP address."
    if port_text is None:
        return host, None, None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) <= 65535):
        return "", None, f"{uri!r} has an invalid port."
    return host, int(port_text), None


def is_loopback_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS


def redirect_uri_shape_problem(uri: str) -> str | None:
    """Why ``uri`` is no safe redirect URI whatever the allowlist says, or None (no database query).

    Meant also for URIs already stored: a client registered before this check existed may
    hold one that a browser resolves elsewhere.
    """
    return _shape(uri)[1]


def _matches(parsed: _Parsed, entry_uri: str, *, prefix: bool) -> bool:
    """RFC 9700 §2.1 exact matching; a prefix entry matches whole path segments of one origin."""
    entry, problem = _shape(entry_uri)
    if entry is None or problem:
        return False  # an entry stored before entries were checked, which matches nothing
    if (parsed.scheme, parsed.host, parsed.port) != (entry.scheme, entry.host, entry.port):
        return False
    if prefix:
        # The entry's path ends with "/" (allowlist_entry_problem), so startswith is a segment boundary.
        return entry.path.endswith("/") and parsed.path.startswith(entry.path)
    return (parsed.path, parsed.query) == (entry.path, entry.query)


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` may not be registered as a redirect URI, or None when it may.

    RFC 6749 §3.1.2 (absolute, no fragment), RFC 8252 §7.3 (http only on loopback, any port),
    RFC 9700 §2.1 and §4.1 (otherwise on the operator allowlist, compared part by part).
    """
    parsed, problem = _shape(uri)
    if parsed is None or problem:
        return problem
    if parsed.scheme in _DEFAULT_PORTS and parsed.host in LOOPBACK_HOSTS:
        return None
    if parsed.scheme == "http":
        return f"{uri!r}: http redirect URIs are allowed only on loopback (127.0.0.1, [::1], localhost)."
    entries = apps.get_model("oauth_ext", "RedirectAllowlistEntry").objects.values_list("uri", "match")
    for entry_uri, match in entries:
        if _matches(parsed, entry_uri, prefix=match == "prefix"):
            return None
    return f"{uri!r} is not on this server's redirect URI allowlist."


def allowlist_entry_problem(uri: str, *, prefix: bool) -> str | None:
    """Why ``uri`` cannot be an allowlist entry (exact, or a prefix when ``prefix``), or None.

    An entry must itself be clean (see ``redirect_uri_shape_problem``), and a prefix must end
    with "/" and have no query, so that it matches whole path segments of one origin.
    """
    if "#" in uri:
        return "A redirect URI cannot have a fragment."
    if prefix and not uri.endswith("/"):
        return "A prefix entry must end with '/' so it cannot match another host or path."
    if not _SCHEME.match(uri):
        return "Enter an absolute URI (https://… or an app scheme such as cursor://…)."
    parsed, problem = _shape(uri)
    if parsed is None or problem:
        return problem
    if parsed.scheme == "http":
        return "http redirect URIs are only allowed on loopback, which needs no entry."
    if prefix and parsed.query is not None:
        return "A prefix entry cannot have a query; it matches paths only."
    if prefix and not parsed.path.endswith("/"):
        return (
            "A prefix entry needs a path ending with '/' (e.g. cursor://app.example/), so it matches whole "
            "path segments of one host."
        )
    return None
