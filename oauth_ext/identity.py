"""The person behind a request, as oauth2-proxy asserts it in forwarded headers or proves it with an ID token."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from enum import StrEnum
from functools import cache
from typing import Any

import httpx2
import jwt
from django.conf import settings
from django.core.signals import setting_changed

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
# Google signs with RS256; nothing weaker (and never "none" or an HMAC keyed by a public key).
ID_TOKEN_ALGORITHMS = ["RS256"]
# Clock skew tolerated between the provider and this host, in seconds.
ID_TOKEN_LEEWAY = 30
# An unknown key id triggers a JWKS refetch (the provider rotated keys), at most this often.
JWKS_MIN_REFETCH_SECONDS = 60
JWKS_TIMEOUT_SECONDS = 5
JWKS_MAX_BYTES = 256 * 1024


def fetch_json(url: str) -> dict[str, Any]:
    """GET ``url`` and parse its JSON object: the one outbound HTTP call of the verifier (tests patch it)."""
    with httpx2.Client(timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False, trust_env=True) as http:
        response = http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > JWKS_MAX_BYTES:
            raise ValueError(f"{url}: document larger than {JWKS_MAX_BYTES} bytes")
        body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"{url}: not a JSON object")
    return body


@dataclass
class _KeyCache:
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = float("-inf")  # last successful fetch
    attempted_at: float = float("-inf")  # last fetch, successful or not


class IdTokenVerifier:
    """Verify an OpenID Connect ID token: signature (JWKS), issuer, audience, expiry, Google's ``hd``.

    - The signature is checked against the provider's JWKS (``jwks_url``, or ``jwks_uri`` from the
      issuer's discovery document), cached for ``cache_seconds`` and refetched early, at most once
      a minute, when a token names a key id the cache lacks (key rotation).
    - ``iss`` must equal the configured issuer and ``aud`` must contain the configured audience
      (oauth2-proxy's client id at the provider); ``exp`` and ``iat`` are required (OIDC Core §2,
      §3.1.3.7).
    - ``email_verified`` must be true, and the hosted-domain claim ``hd`` (which Google sets only
      for Workspace accounts, to the organisation's primary domain) must be one of ``domains``:
      a consumer account whose address merely ends in an allowed domain has no ``hd`` and fails.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        domains: list[str],
        jwks_url: str = "",
        cache_seconds: int = 3600,
        fetch: Callable[[str], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.domains = [d.lower() for d in domains]
        self.jwks_url = jwks_url
        self.cache_seconds = cache_seconds
        self._fetch = fetch
        self._clock = clock
        self._cache = _KeyCache()
        self._lock = threading.Lock()

    def fetch(self, url: str) -> dict[str, Any]:
        return (self._fetch or fetch_json)(url)

    @property
    def accepted_issuers(self) -> list[str]:
        """Google's ID tokens say ``https://accounts.google.com`` or, in older flows, the bare host
        ``accounts.google.com`` (Google Identity, "Validating an ID token")."""
        if self.issuer == "https://accounts.google.com":
            return [self.issuer, "accounts.google.com"]
        return [self.issuer]

    def _jwks_url(self) -> str:
        if not self.jwks_url:
            discovery = self.fetch(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if discovery.get("issuer") != self.issuer or not isinstance(discovery.get("jwks_uri"), str):
                raise ValueError("the provider's discovery document does not match MCPGATE_OIDC_ISSUER")
            self.jwks_url = discovery["jwks_uri"]
        return self.jwks_url

    def _refresh_keys(self) -> None:
        document = self.fetch(self._jwks_url())
        keys = {}
        for jwk in document.get("keys", []):
            if isinstance(jwk, dict) and jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig":
                keys[str(jwk.get("kid", ""))] = jwt.PyJWK(jwk, algorithm="RS256").key
        now = self._clock()
        self._cache = _KeyCache(keys, fetched_at=now, attempted_at=now)

    def key_for(self, kid: str) -> Any:
        """The provider's public key ``kid``, from the cache or a (rate-limited) refetch."""
        with self._lock:
            now = self._clock()
            stale = now - self._cache.fetched_at >= self.cache_seconds
            unknown = kid not in self._cache.keys
            # Neither a token with a made-up key id nor an unreachable provider may cause a fetch
            # per request: at most one attempt a minute, whatever its outcome.
            if (stale or unknown) and now - self._cache.attempted_at >= JWKS_MIN_REFETCH_SECONDS:
                try:
                    self._refresh_keys()
                except (OSError, ValueError, KeyError, jwt.PyJWTError, httpx2.HTTPError) as exc:
                    # Keep the old keys: the provider being briefly down must not sign everyone out.
                    logger.warning("could not fetch the identity provider's keys: %s", exc)
                    self._cache.attempted_at = now
            key = self._cache.keys.get(kid)
        if key is None:
            raise SignInRefused("The identity token is signed with a key the identity provider does not publish.")
        return key

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or SignInRefused saying what is wrong with it (never the token itself)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SignInRefused("The identity token is malformed.") from None
        if header.get("alg") not in ID_TOKEN_ALGORITHMS:
            raise SignInRefused("The identity token is not signed with an accepted algorithm.")
        key = self.key_for(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ID_TOKEN_ALGORITHMS,
                audience=self.audience,
                issuer=self.accepted_issuers,
                leeway=ID_TOKEN_LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "email"]},
            )
        except jwt.ExpiredSignatureError:
            raise SignInRefused("The identity token has expired.") from None
        except jwt.InvalidAudienceError:
            raise SignInRefused("The identity token was issued to another client.") from None
        except jwt.InvalidIssuerError:
            raise SignInRefused("The identity token was issued by another provider.") from None
        except jwt.PyJWTError:
            raise SignInRefused("The identity token is not valid.") from None
        if claims.get("email_verified") is not True:
            raise SignInRefused("The identity provider has not verified this email address.")
        hd = claims.get("hd")
        if not isinstance(hd, str) or hd.lower() not in self.domains:
            raise SignInRefused("This account is not managed by an organisation allowed here.")
        return claims


@cache
def id_token_verifier() -> IdTokenVerifier:
    """The verifier configured by MCPGATE_OIDC_* settings (one per process: its JWKS cache is shared)."""
    return IdTokenVerifier(
        issuer=settings.MCPGATE_OIDC_ISSUER,
        audience=settings.MCPGATE_OIDC_AUDIENCE,
        domains=settings.MCPGATE_EMAIL_DOMAINS,
        jwks_url=settings.MCPGATE_OIDC_JWKS_URL,
        cache_seconds=settings.MCPGATE_OIDC_JWKS_CACHE_SECONDS,
    )


def _forget_verifier(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("MCPGATE_"):
        id_token_verifier.cache_clear()


setting_changed.connect(_forget_verifier)


def identity_from_meta(meta: Mapping[str, object]) -> ProxyIdentity | None:
    """Who the (trusted) proxy says signed in, per MCPGATE_IDENTITY_MODE; None for nobody.

    ``headers``: X-Forwarded-Email/-User/-Groups as sent. ``id_token``: the ID token header must
    be present and verify; the person is its ``email`` and ``sub``. An email header without an ID
    token is ignored (logged): oauth2-proxy sends both on every signed-in request, so that is a
    forgery or a misconfiguration. An email header naming someone else than the token refuses.
    Groups still come from the groups header: Google's ID tokens carry none.
    """
    headed = ProxyIdentity.from_meta(meta)
    if settings.MCPGATE_IDENTITY_MODE != "id_token":
        return headed
    token = str(meta.get(meta_key(settings.MCPGATE_ID_TOKEN_HEADER), "")).strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        if headed is not None:
            logger.warning(
                "ignored %s without an ID token (MCPGATE_IDENTITY_MODE=id_token)", settings.MCPGATE_EMAIL_HEADER
            )
        return None
    claims = id_token_verifier().verify(token)
    claimed = claims["email"]
    # OIDC Core §5.1: ``email`` is a string, RFC 5322 addr-spec syntax; held to one plain address.
    email = email_address(claimed if isinstance(claimed, str) else repr(claimed))
    if headed is not None and headed.email != email:
        raise SignInRefused("The forwarded email address does not match the identity token.")
    return ProxyIdentity(email=email, subject=str(claims["sub"]), groups=headed.groups if headed else ())
