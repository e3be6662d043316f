"""A mock OpenID Connect provider standing in for Google, for oauth2-proxy to sign people in with.

Python rather than ``github.com/oauth2-proxy/mockoidc``: it runs in the test process (no second Go
build, no program to drive over a control channel), the test decides per browser who signs in,
and its ID tokens carry exactly the claims Google's do (``email``, ``email_verified``, ``hd``).

Who signs in: the browser sends ``X-Mock-Person: <email>`` (and optionally ``X-Mock-Hd``) on its
requests, as if that person had typed their account into Google's page; the authorization
endpoint answers at once with a code for them. Without the header, ``default_person`` signs in.

Endpoints: discovery (``/.well-known/openid-configuration``), ``/authorize``, ``/token``
(client_secret_basic or client_secret_post), ``/jwks``, ``/userinfo``. ID tokens are RS256 with
``iss``, ``aud`` (the client id), ``sub``, ``exp``, ``iat``, ``nonce``, ``email``,
``email_verified`` and, for a Workspace domain, ``hd``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

PERSON_HEADER = "X-Mock-Person"
HD_HEADER = "X-Mock-Hd"
GROUPS_HEADER = "X-Mock-Groups"
ID_TOKEN_SECONDS = 3600


@dataclass
class Signer:
    """An RSA key pair with a key id: signs ID tokens, publishes its JWKS."""

    kid: str = field(default_factory=lambda: "k-" + secrets.token_hex(4))
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


@dataclass
class Person:
    email: str
    hd: str | None
    groups: tuple[str, ...] = ()

    @property
    def sub(self) -> str:
        # Google's sub is a stable number; any stable opaque string will do here.
        return str(int.from_bytes(self.email.encode()[:12].ljust(12, b"\0"), "big"))


@dataclass
class MockOIDC:
    """The provider's state: registered client, codes in flight, who signed in and what was issued."""

    client_id: str
    client_secret: str
    default_person: str = "alice@example.com"
    signer: Signer = field(default_factory=Signer)
    issuer: str = ""
    codes: dict[str, tuple[Person, str, str]] = field(default_factory=dict)
    sign_ins: list[str] = field(default_factory=list)
    id_tokens: list[str] = field(default_factory=list)
    access_tokens: dict[str, Person] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def person_for(self, headers: Any) -> Person:
        email = (headers.get(PERSON_HEADER) or self.default_person).lower()
        domain = email.rpartition("@")[2]
        # Google sets hd for Workspace accounts only; a consumer gmail.com address has none.
        hd = headers.get(HD_HEADER, domain)
        groups = tuple(g for g in (headers.get(GROUPS_HEADER) or "").split(",") if g)
        return Person(email, hd or None, groups)

    def id_token(self, person: Person, nonce: str, *, audience: str | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience or self.client_id,
            "azp": audience or self.client_id,
            "sub": person.sub,
            "email": person.email,
            "email_verified": True,
            "iat": now,
            "exp": now + ID_TOKEN_SECONDS,
        }
        if person.hd:
            claims["hd"] = person.hd
        if nonce:
            claims["nonce"] = nonce
        claims.update(overrides)
        return self.signer.sign({k: v for k, v in claims.items() if v is not None})


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        mock = self.server.mock
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        if parts.path == "/.well-known/openid-configuration":
            self._json(
                200,
                {
                    "issuer": mock.issuer,
                    "authorization_endpoint": mock.issuer + "/authorize",
                    "token_endpoint": mock.issuer + "/token",
                    "userinfo_endpoint": mock.issuer + "/userinfo",
                    "jwks_uri": mock.issuer + "/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "scopes_supported": ["openid", "email", "profile"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "code_challenge_methods_supported": ["S256"],
                    "claims_supported": ["aud", "email", "email_verified", "exp", "hd", "iat", "iss", "sub"],
                },
            )
        elif parts.path == "/jwks":
            self._json(200, mock.signer.jwks())
        elif parts.path == "/authorize":
            if query.get("client_id") != mock.client_id or query.get("response_type") != "code":
                self._json(400, {"error": "invalid_request"})
                return
            person = mock.person_for(self.headers)
            code = secrets.token_urlsafe(24)
            with mock.lock:
                mock.codes[code] = (person, query.get("nonce", ""), query["redirect_uri"])
                mock.sign_ins.append(person.email)
            target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/userinfo":
            # oauth2-proxy's oidc provider asks here for what the ID token lacks (groups).
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            person = mock.access_tokens.get(token) if scheme.lower() == "bearer" else None
            if person is None:
                self._json(401, {"error": "invalid_token"})
                return
            info = {"sub": person.sub, "email": person.email, "email_verified": True, "groups": list(person.groups)}
            self._json(200, {**info, **({"hd": person.hd} if person.hd else {})})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        mock = self.server.mock
        if urlsplit(self.path).path != "/token":
            self._json(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            raw_id, _, raw_secret = base64.b64decode(credentials).decode().partition(":")
            client_id, client_secret = unquote(raw_id), unquote(raw_secret)
        if (client_id, client_secret) != (mock.client_id, mock.client_secret):
            self._json(401, {"error": "invalid_client"})
            return
        with mock.lock:
            entry = mock.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or entry is None or entry[2] != form.get("redirect_uri"):
            self._json(400, {"error": "invalid_grant"})
            return
        person, nonce, _ = entry
        id_token = mock.id_token(person, nonce)
        access_token = "ya29." + secrets.token_urlsafe(24)  # opaque, as Google's are
        with mock.lock:
            mock.id_tokens.append(id_token)
            mock.access_tokens[access_token] = person
        self._json(
            200,
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": ID_TOKEN_SECONDS,
                "scope": "openid email profile",
                "id_token": id_token,
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mock: MockOIDC


@contextlib.contextmanager
def serve(client_id: str, client_secret: str, host: str = "127.0.0.1") -> Iterator[MockOIDC]:
    """Run the provider on a free port of ``host``; its ``issuer`` is set once it listens."""
    server = _Server((host, 0), _Handler)
    mock = MockOIDC(client_id=client_id, client_secret=client_secret)
    mock.issuer = f"http://{host}:{server.server_address[1]}"
    server.mock = mock
    thread = threading.Thread(target=server.serve_forever, name="mock-oidc", daemon=True)
    thread.start()
    try:
        yield mock
    finally:
        server.shutdown()
        server.server_close()
