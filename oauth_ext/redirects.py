"""Redirect URI policy (checklist AS2): loopback on any port (RFC 8252 §7.3), else the operator allowlist."""

from __future__ import annotations

from urllib.parse import urlsplit

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


def is_loopback_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` may not be registered as a redirect URI, or None when it may."""
    from .models import RedirectAllowlistEntry

    parts = urlsplit(uri)
    if not parts.scheme:
        return f"{uri!r} is not an absolute URI."
    if "#" in uri:
        return f"{uri!r} has a fragment, which RFC 6749 §3.1.2 forbids."
    if parts.username is not None or parts.password is not None:
        return f"{uri!r} carries credentials."
    if is_loopback_uri(uri):
        return None
    if parts.scheme == "http":
        return f"{uri!r}: http redirect URIs are allowed only on loopback (127.0.0.1, [::1], localhost)."
    for entry in RedirectAllowlistEntry.objects.all():
        if entry.match == RedirectAllowlistEntry.Match.EXACT and uri == entry.uri:
            return None
        if entry.match == RedirectAllowlistEntry.Match.PREFIX and uri.startswith(entry.uri):
            return None
    return f"{uri!r} is not on this server's redirect URI allowlist."
