"""The person behind a request, as oauth2-proxy asserts it in forwarded headers or proves it with an ID token."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from enum import StrEnum

from django.conf import settings

logger = logging.getLogger(__name__)


class RefusalReason(StrEnum):
    """Why a forwarded identity was refused before anyone was looked up (the audit's ``reason``)."""

    NOT_ONE_ADDRESS = "not_one_address"
    MALFORMED_HEADER = "malformed_header"
    NOT_VERIFIED = "identity_not_verified"  # the ID token failed verification, or disagrees with a header


class SignInRefused(Exception):
    """The proxy vouched for someone this deployment does not admit.

    ``audit`` is what the refusal adds to the ``sign_in_refused`` audit event when it is raised
    before a person is looked up (the middleware records it); never a token.
    """

    def __init__(self, message: str, *, audit: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.audit = audit if audit is not None else {"reason": RefusalReason.NOT_VERIFIED.value}


# User.username (AbstractUser) holds at most 150 characters; a longer address could not be stored.
EMAIL_MAX_LENGTH = 150
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
NOT_ONE_ADDRESS = "The email address the sign-in proxy sent is not exactly one valid address."


def printable(value: str, limit: int = 320) -> str:
    """``value`` with control and non-ASCII characters escaped, for a log line or a JSON audit field."""
    return value.encode("unicode_escape").decode("ascii")[:limit]


def email_address(value: str) -> str:
    """The one RFC 5322 §3.4.1 addr-spec that ``value`` is, lower-cased; SignInRefused for anything else.

    Parsed by the standard library (``email.headerregistry.Address``), then held to the plain
    form organisations issue: printable ASCII, a dot-atom local part (no quoted string, no
    comment, no folding whitespace), a host-name domain (no literal), and nothing before or after
    it, so a list (``a@x,b@y``), a display name (``Name <a@x>``) or ``a@b@example.com`` is refused
    rather than read as whatever follows the last ``@``. Whitespace around the whole value is not
    part of it (RFC 9110 §5.5).
    """
    refused = SignInRefused(
        NOT_ONE_ADDRESS, audit={"email": printable(value), "reason": RefusalReason.NOT_ONE_ADDRESS.value}
    )
    text = value.strip(" \t")
    if not text or len(text) > EMAIL_MAX_LENGTH or not text.isascii() or _CONTROL_CHARACTERS.search(text):
        raise refused
    # RFC 5322 also allows quoted local parts, comments, folding whitespace and domain literals,
    # which the parser accepts (and rewrites) but no sign-in proxy sends: their delimiters, and
    # those of lists and display names, are refused outright; the round trip below catches the rest.
    if any(c in text for c in ' "()<>[],;:\\'):
        raise refused
    try:
        address = Address(addr_spec=text)
    except (ValueError, IndexError, HeaderParseError):
        # ValueError covers the parser's defects; IndexError is what it raises for "alice@".
        raise refused from None
    if address.addr_spec != text or not address.username or not address.domain:
        raise refused
    return text.lower()


def meta_key(header: str) -> str:
    """The WSGI/ASGI META key of an HTTP header name."""
    return "HTTP_" + header.upper().replace("-", "_")


def identity_meta_keys() -> tuple[str, ...]:
    """The META keys of every header only a trusted proxy may send (the ID token's among them)."""
    return tuple(
        meta_key(h)
        for h in (
            settings.MCPGATE_EMAIL_HEADER,
            settings.MCPGATE_USER_HEADER,
            settings.MCPGATE_GROUPS_HEADER,
            settings.MCPGATE_ID_TOKEN_HEADER,
        )
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
        """Read the identity headers, or None when the email header is absent or empty.

        SignInRefused when the email header is not exactly one address (``email_address``), or
        when the user or groups header carries control characters (NUL, CR, LF...) or a subject
        longer than ``User.proxy_subject`` holds: no proxy sends those, and stored they would
        break the database (PostgreSQL refuses NUL and over-long values) or a log line.
        """
        raw_email = str(meta.get(meta_key(settings.MCPGATE_EMAIL_HEADER), ""))
        if not raw_email.strip():
            return None
        email = email_address(raw_email)
        subject = str(meta.get(meta_key(settings.MCPGATE_USER_HEADER), "")).strip()
        raw_groups = str(meta.get(meta_key(settings.MCPGATE_GROUPS_HEADER), ""))
        if _CONTROL_CHARACTERS.search(subject) or _CONTROL_CHARACTERS.search(raw_groups) or len(subject) > 255:
            raise SignInRefused(
                "The sign-in proxy sent a user or groups header with control characters, or too long.",
                audit={"reason": RefusalReason.MALFORMED_HEADER.value},
            )
        groups = tuple(sorted({g.strip() for g in raw_groups.split(",") if g.strip()}))
        return cls(email=email, subject=subject or email, groups=groups)


def email_domain_allowed(email: str) -> bool:
    """True when ``email`` is exactly one address whose domain is listed in MCPGATE_EMAIL_DOMAINS.

    Fail closed: anything ``email_address`` refuses is not allowed, whatever follows its last "@".
    """
    try:
        address = email_address(email)
    except SignInRefused:
        return False
    return address.rpartition("@")[2] in settings.MCPGATE_EMAIL_DOMAINS


# ---------------------------------------------------------------------------
# Verified identity (MCPGATE_IDENTITY_MODE=id_token): the identity provider's own ID token,
# as oauth2-proxy forwards it, checked here rather than believed.
# ---------------------------------------------------------------------------
