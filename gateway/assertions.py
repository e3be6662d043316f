"""Signed identity assertions: a 60-second JWT that tells an internal upstream which person a call is made for.

An upstream configured with ``--identity-assertion HEADER`` gets, on every request mcpgate makes for a
person (tools/call, prompts/get, resources/read, completion/complete), that header holding a JWT
(RFC 7519) signed ES256 (RFC 7518 §3.4) with a key of mcpgate's, whose public half is published as a
JWK Set (RFC 7517 §5) at ``/.well-known/jwks.json``. The upstream verifies the signature, ``aud`` (its
own URL), ``iss`` and ``exp``, and can then authorize per person without OAuth of its own. The
caller's own access token is never sent upstream (MCP authorization, "Access Token Privilege
Restriction"); the assertion is made for that one upstream and lives 60 s.

Claims: ``iss`` the mcpgate host the call came through (its OAuth issuer), ``aud`` the upstream's URL,
``sub`` the person's id at mcpgate (never reassigned), ``email``, ``groups`` (oauth2-proxy's),
``client_id`` of the MCP client (RFC 8693 §4.3), ``iat``, ``exp`` (``iat`` + 60), ``jti``; the header
names the key (``kid``: its RFC 7638 thumbprint).

Keys (``AssertionKey``): the first is made when an upstream first asks for assertions. ``manage.py
rotate_assertion_key`` makes a new one that is published at once but signs only ``PUBLISH_AHEAD`` later
(10 minutes), when the ones it replaces stop signing; those stay published ``RETIRED_KEPT`` (an hour)
more. So a verifier that caches the key set (ours says 5 minutes; PyJWT's client refetches an unknown
``kid`` at most every 30 s) has the new key before the first assertion it signs, and can still check
what the old one signed. ``--now`` is for a key believed compromised: the new key signs at once and
the others leave the key set at once. The private halves are sealed like upstream credentials
(gateway.crypto, MCPGATE_UPSTREAM_KEYS). A worker re-reads the signing key at most every
``KEY_CACHE_SECONDS``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import transaction
from django.utils import timezone
from jwt.algorithms import ECAlgorithm

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate.threads import in_worker_thread
from oauth_ext.models import User

from .crypto import KeyMissing, SealBroken, seal, unseal
from .models import AssertionKey

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
LIFETIME_SECONDS = 60  # issue 12: "60 s at most"
PUBLISH_AHEAD = timedelta(minutes=10)
RETIRED_KEPT = timedelta(hours=1)
KEY_CACHE_SECONDS = 10.0


class AssertionUnavailable(Exception):
    """No assertion can be signed: MCPGATE_UPSTREAM_KEYS is unset, or no key of it opens the signing key."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    loaded_at: float


_lock = threading.Lock()
_current: SigningKey | None = None


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, no whitespace; base64url without padding."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(required, sort_keys=True, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _new_key(*, activates_at: datetime) -> AssertionKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    kid = _thumbprint(jwk)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_jwk = {**jwk, "kid": kid, "use": "sig", "alg": ALGORITHM}
    return AssertionKey.objects.create(
        kid=kid, sealed_private_key=seal({"pem": pem}), public_jwk=public_jwk, activates_at=activates_at
    )


def assertion_key_current() -> AssertionKey:
    """The key that signs now: the latest one active and not retired, made now if there is none."""
    now = timezone.now()
    key = AssertionKey.objects.filter(activates_at__lte=now).exclude(retired_at__lte=now).first()
    return key if key is not None else _new_key(activates_at=now)


def assertion_key_rotate(
    *, now: bool = False, activate_in: timedelta = PUBLISH_AHEAD, actor: User | None = None
) -> AssertionKey:
    """A new key, published at once, signing from ``activate_in`` on, when the keys it replaces stop
    signing (they stay published ``RETIRED_KEPT`` more). ``now``: it signs at once and the others are
    deleted (unpublished) at once, for a key believed compromised. Keys retired long ago are deleted."""
    global _current
    started = timezone.now()
    activates_at = started if now else started + activate_in
    with transaction.atomic():
        key = _new_key(activates_at=activates_at)
        others = AssertionKey.objects.exclude(pk=key.pk)
        if now:
            replaced = sorted(others.values_list("kid", flat=True))
            others.delete()
        else:
            pending = others.filter(retired_at__isnull=True)
            replaced = sorted(pending.values_list("kid", flat=True))
            pending.update(retired_at=activates_at)
            others.filter(retired_at__lt=started - RETIRED_KEPT).delete()
        audit_record(
            event=AuditKind.ASSERTION_KEY_ROTATED,
            user=actor,
            detail={"kid": key.kid, "activates_at": activates_at.isoformat(), "replaced": replaced, "now": now},
        )
    with _lock:
        _current = None  # this process reads the signing key again at once
    return key


def published_key_set() -> dict[str, list[dict[str, Any]]]:
    """The JWK Set of /.well-known/jwks.json: the keys to come, the signing one, and those retired less than
    ``RETIRED_KEPT`` ago."""
    keys = AssertionKey.objects.exclude(retired_at__lt=timezone.now() - RETIRED_KEPT)
    return {"keys": [key.public_jwk for key in keys]}


def _load_current() -> SigningKey:
    try:
        key = assertion_key_current()
        pem = unseal(key.sealed_private_key)["pem"].encode("ascii")
    except (KeyMissing, SealBroken) as exc:
        logger.error("identity assertions cannot be signed: %s", exc)
        raise AssertionUnavailable(
            "mcpgate cannot sign the identity assertion this upstream needs; its operator has been told"
        ) from None
    private_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    return SigningKey(kid=key.kid, private_key=private_key, loaded_at=time.monotonic())


async def _signing_key() -> SigningKey:
    global _current
    current = _current
    if current is None or time.monotonic() - current.loaded_at > KEY_CACHE_SECONDS:
        current = await in_worker_thread(_load_current)()
        with _lock:
            _current = current
    return current


async def identity_assertion(
    *, issuer: str, audience: str, subject: str, email: str, groups: Iterable[str], client_id: str
) -> str:
    """A signed assertion that the call to ``audience`` is made for this person through this client."""
    key = await _signing_key()
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "email": email,
        "groups": sorted(groups),
        "client_id": client_id,
        "iat": now,
        "exp": now + LIFETIME_SECONDS,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})
