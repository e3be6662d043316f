"""The person behind a request, as oauth2-proxy asserts it in forwarded headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings


class SignInRefused(Exception):
    """The proxy vouched for someone this deployment does not admit."""


def meta_key(header: str) -> str:
    """The WSGI/ASGI META key of an HTTP header name."""
    return "HTTP_" + header.upper().replace("-", "_")


def identity_meta_keys() -> tuple[str, ...]:
    return tuple(
        meta_key(h)
        for h in (settings.MCPGATE_EMAIL_HEADER, settings.MCPGATE_USER_HEADER, settings.MCPGATE_GROUPS_HEADER)
    )


@dataclass(frozen=True)
class ProxyIdentity:
    email: str
    subject: str
    groups: tuple[str, ...]

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    @classmethod
    def from_meta(cls, meta: Mapping[str, object]) -> ProxyIdentity | None:
        """Read the identity headers, or None when the email header is absent or empty."""
        email = str(meta.get(meta_key(settings.MCPGATE_EMAIL_HEADER), "")).strip().lower()
        if not email:
            return None
        subject = str(meta.get(meta_key(settings.MCPGATE_USER_HEADER), "")).strip()
        raw_groups = str(meta.get(meta_key(settings.MCPGATE_GROUPS_HEADER), ""))
        groups = tuple(sorted({g.strip() for g in raw_groups.split(",") if g.strip()}))
        return cls(email=email, subject=subject or email, groups=groups)


def email_domain_allowed(email: str) -> bool:
    """True when the address's domain is listed exactly in MCPGATE_EMAIL_DOMAINS (fail closed)."""
    local, at, domain = email.lower().rpartition("@")
    return bool(local and at) and domain in settings.MCPGATE_EMAIL_DOMAINS
