"""The one notion of "host": which configured origin a request came to, and its URLs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed

if TYPE_CHECKING:
    from django.http import HttpRequest

MCP_PATH = "/mcp"


@dataclass(frozen=True)
class Host:
    """A configured origin. Everything a client compares byte for byte is derived here once."""

    name: str  # "public" or "internal"
    base_url: str  # scheme://host[:port], lower-case, no trailing slash

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme

    @property
    def netloc(self) -> str:
        return urlsplit(self.base_url).netloc

    @property
    def issuer(self) -> str:
        """RFC 8414 §2 / checklist S2: the issuer is the origin, no path, no trailing slash."""
        return self.base_url

    @property
    def resource(self) -> str:
        """RFC 9728 §2 / checklist D4: exactly the URL clients use for the endpoint."""
        return self.base_url + MCP_PATH

    @property
    def resource_metadata_url(self) -> str:
        """RFC 9728 §3.1: the path-suffixed form of the well-known URL for /mcp."""
        return self.base_url + "/.well-known/oauth-protected-resource" + MCP_PATH

    def url(self, path: str) -> str:
        return self.base_url + path


@cache
def configured_hosts() -> tuple[Host, ...]:
    hosts = []
    if settings.MCPGATE_INTERNAL_URL:
        hosts.append(Host("internal", settings.MCPGATE_INTERNAL_URL))
    if settings.MCPGATE_PUBLIC_URL:
        hosts.append(Host("public", settings.MCPGATE_PUBLIC_URL))
    return tuple(hosts)


def _forget_hosts(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("MCPGATE_"):
        configured_hosts.cache_clear()


setting_changed.connect(_forget_hosts)


def host_for_netloc(netloc: str) -> Host | None:
    """The configured host whose host[:port] equals ``netloc`` (case-insensitive), if any."""
    netloc = netloc.lower()
    for host in configured_hosts():
        if host.netloc == netloc:
            return host
        # A request to the default port may omit it (Host: example.com for https://example.com:443).
        default_port = ":443" if host.scheme == "https" else ":80"
        if netloc + default_port == host.netloc or host.netloc + default_port == netloc:
            return host
    return None


def host_for_request(request: HttpRequest) -> Host:
    """The host set by HostMiddleware; every request that reaches a view has one."""
    return request.mcpgate_host  # type: ignore[attr-defined]
