"""Verify the OpenID Connect ID token oauth2-proxy forwards (MCPGATE_IDENTITY_MODE=id_token)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx2
import jwt
from django.conf import settings
from django.core.signals import setting_changed

from .proxy import SignInRefused

logger = logging.getLogger(__name__)


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
