"""Verified identity (MCPGATE_IDENTITY_MODE=id_token): the provider's ID token, checked, not believed.

The provider is played in the test: an RSA key generated here signs Google-shaped ID tokens, and
its JWKS (and discovery document) are served through the verifier's one outbound HTTP seam,
``identity.id_token.fetch_json``, which counts the fetches.

Personas: Alice (alice@example.com, a Workspace account of example.com, so ``hd=example.com``);
Gina (gina@example.com, a consumer Google account that merely uses that address: no ``hd``);
Mallory (mallory@evil.test, Workspace account of evil.test).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client as HttpClient
from django.test import override_settings
from jwt.algorithms import RSAAlgorithm

from identity import id_token as id_token_module
from identity.id_token import IdTokenVerifier
from identity.proxy import SignInRefused
from oauth_ext.models import Client, User
from tests.conftest import PKCE, PROXY_ADDR, PUBLIC, authorize_params
from tests.personas import ALICE, BOB, MALLORY

ISSUER = "https://accounts.google.com"
AUDIENCE = "123-proxy.apps.googleusercontent.com"
JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY = new_key()
OTHER_KEY = new_key()


@dataclass
class Provider:
    """The identity provider's public side: discovery and JWKS, and every URL fetched."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {"k1": KEY})
    fetched: list[str] = field(default_factory=list)
    down: bool = False
    issuer: str = ISSUER

    def fetch(self, url: str) -> dict[str, Any]:
        self.fetched.append(url)
        if self.down:
            raise OSError("connection refused")
        if url == ISSUER + "/.well-known/openid-configuration":
            return {"issuer": self.issuer, "jwks_uri": JWKS_URL}
        assert url == JWKS_URL, url
        return {
            "keys": [
                {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig", "alg": "RS256"}
                for kid, key in self.keys.items()
            ]
        }


def id_token(
    email: str = ALICE, *, key: rsa.RSAPrivateKey = KEY, kid: str = "k1", alg: str = "RS256", **claims: Any
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "azp": AUDIENCE,
        "sub": "1100" + str(abs(hash(email)) % 10**8),
        "email": email,
        "email_verified": True,
        "hd": email.rpartition("@")[2],
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Provider:
    provider = Provider()
    monkeypatch.setattr(id_token_module, "fetch_json", provider.fetch)
    return provider


def verifier(jwks_url: str = JWKS_URL, clock: Any = time.time) -> IdTokenVerifier:
    return IdTokenVerifier(issuer=ISSUER, audience=AUDIENCE, domains=["example.com"], jwks_url=jwks_url, clock=clock)


def refused(v: IdTokenVerifier, token: str) -> str:
    with pytest.raises(SignInRefused) as excinfo:
        v.verify(token)
    return str(excinfo.value)


# -- the verifier ---------------------------------------------------------------------


def test_a_valid_token_gives_its_claims_and_the_keys_are_cached(provider: Provider) -> None:
    v = verifier()
    claims = v.verify(id_token())
    assert (claims["email"], claims["hd"], claims["aud"]) == (ALICE, "example.com", AUDIENCE)
    v.verify(id_token())
    v.verify(id_token())
    assert provider.fetched == [JWKS_URL]  # once, for three tokens


def test_the_jwks_url_comes_from_discovery_when_not_configured(provider: Provider) -> None:
    v = verifier(jwks_url="")
    assert v.verify(id_token())["email"] == ALICE
    assert provider.fetched == [ISSUER + "/.well-known/openid-configuration", JWKS_URL]


def test_a_discovery_document_for_another_issuer_is_not_followed(provider: Provider) -> None:
    provider.issuer = "https://evil.test"
    assert refused(verifier(jwks_url=""), id_token()) == (
        "The identity token is signed with a key the identity provider does not publish."
    )
    assert provider.fetched == [ISSUER + "/.well-known/openid-configuration"]


def test_a_signature_by_another_key_is_refused(provider: Provider) -> None:
    assert refused(verifier(), id_token(key=OTHER_KEY)) == "The identity token is not valid."


def test_a_rotated_key_is_fetched_once_and_an_unknown_one_not_again_at_once(provider: Provider) -> None:
    now = [1000.0]
    v = verifier(clock=lambda: now[0])
    v.verify(id_token())
    now[0] += 120  # past the refetch floor, well inside the cache lifetime
    provider.keys["k2"] = OTHER_KEY
    assert v.verify(id_token(key=OTHER_KEY, kid="k2"))["email"] == ALICE
    assert provider.fetched == [JWKS_URL, JWKS_URL]
    # A token naming a key nobody published: refused, and no refetch storm.
    for _ in range(3):
        assert "key" in refused(v, id_token(kid="k9"))
    assert provider.fetched == [JWKS_URL, JWKS_URL]


def test_the_keys_are_refetched_when_the_cache_expires_and_kept_when_the_provider_is_down(
    provider: Provider,
) -> None:
    now = [1000.0]
    v = verifier(clock=lambda: now[0])
    v.verify(id_token())
    now[0] += 3600
    provider.down = True
    assert v.verify(id_token())["email"] == ALICE  # the old keys still serve
    assert provider.fetched == [JWKS_URL, JWKS_URL]
    v.verify(id_token())
    assert "key" in refused(v, id_token(kid="k9"))
    assert len(provider.fetched) == 2  # not retried on every request, not even for an unknown key
    now[0] += 60
    provider.down = False
    assert v.verify(id_token())["email"] == ALICE
    assert len(provider.fetched) == 3  # retried a minute later, and the keys are fresh again
    v.verify(id_token())
    assert len(provider.fetched) == 3


def test_googles_bare_issuer_is_accepted_for_google_only(provider: Provider) -> None:
    assert verifier().verify(id_token(iss="accounts.google.com"))["email"] == ALICE
    other = IdTokenVerifier(
        issuer="https://login.example.net", audience=AUDIENCE, domains=["example.com"], jwks_url=JWKS_URL
    )
    bare = id_token(iss="login.example.net")
    assert refused(other, bare) == "The identity token was issued by another provider."


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 120}, "The identity token has expired."),
        ({"aud": "someone-else.apps.googleusercontent.com"}, "The identity token was issued to another client."),
        ({"iss": "https://evil.test"}, "The identity token was issued by another provider."),
        ({"iat": None}, "The identity token is not valid."),
        ({"exp": None}, "The identity token is not valid."),
        ({"email_verified": False}, "The identity provider has not verified this email address."),
        ({"email_verified": "true"}, "The identity provider has not verified this email address."),
    ],
    ids=["expired", "audience", "issuer", "no-iat", "no-exp", "unverified", "verified-as-string"],
)
def test_claims_that_do_not_hold_are_refused(provider: Provider, claims: dict[str, Any], reason: str) -> None:
    assert refused(verifier(), id_token(**claims)) == reason


def test_the_hosted_domain_decides_not_the_email_suffix(provider: Provider) -> None:
    """Gina's consumer account uses an example.com address but has no hd: refused. Mallory's
    Workspace is evil.test: refused, even if her token claimed an example.com address."""
    v = verifier()
    reason = "This account is not managed by an organisation allowed here."
    assert refused(v, id_token("gina@example.com", hd=None)) == reason
    assert refused(v, id_token(MALLORY)) == reason
    assert refused(v, id_token("mallory@example.com", hd="evil.test")) == reason
    assert v.verify(id_token(ALICE, hd="EXAMPLE.COM"))["email"] == ALICE


def test_unsigned_and_hmac_tokens_are_refused(provider: Provider) -> None:
    v = verifier()
    unsigned = jwt.encode({"email": ALICE}, None, algorithm="none", headers={"kid": "k1"})
    assert refused(v, unsigned) == "The identity token is not signed with an accepted algorithm."
    hmac = id_token(key=b"a-shared-secret-of-at-least-32-bytes!!", alg="HS256")
    assert refused(v, hmac) == "The identity token is not signed with an accepted algorithm."
    assert refused(v, "not-a-jwt") == "The identity token is malformed."
    assert provider.fetched == []  # nothing fetched for tokens that cannot be valid


# -- the middleware in id_token mode ------------------------------------------------------


@pytest.fixture
def id_token_mode(provider: Provider) -> Iterator[None]:
    with override_settings(
        MCPGATE_IDENTITY_MODE="id_token",
        MCPGATE_OIDC_ISSUER=ISSUER,
        MCPGATE_OIDC_AUDIENCE=AUDIENCE,
        MCPGATE_OIDC_JWKS_URL=JWKS_URL,
    ):
        yield


def authorize(http: HttpClient, client: Client, remote_addr: str = PROXY_ADDR, **headers: str) -> Any:
    query = urlencode(authorize_params(client.client_id, PKCE.make()))
    return http.get("/oauth/authorize?" + query, HTTP_HOST=PUBLIC, REMOTE_ADDR=remote_addr, **headers)


@pytest.mark.django_db
def test_a_verified_token_signs_the_person_in(id_token_mode: None, http: HttpClient, public_client: Client) -> None:
    page = authorize(
        http,
        public_client,
        HTTP_X_FORWARDED_EMAIL=ALICE,
        HTTP_X_FORWARDED_GROUPS="eng",
        HTTP_X_FORWARDED_ID_TOKEN=id_token(),
    )
    assert page.status_code == 200, page.content  # the consent page, for Alice
    alice = User.objects.get(email=ALICE)
    assert alice.proxy_groups == ["eng"]
    assert alice.proxy_subject.startswith("1100")  # the token's sub, not the header's


@pytest.mark.django_db
def test_a_forged_email_header_from_the_trusted_proxy_signs_nobody_in(
    id_token_mode: None, http: HttpClient, public_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    page = authorize(http, public_client, HTTP_X_FORWARDED_EMAIL=ALICE)
    assert page.status_code == 302
    assert page["Location"].startswith("/accounts/login/")
    assert not User.objects.exists()
    assert "ignored X-Forwarded-Email without an ID token" in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"HTTP_X_FORWARDED_ID_TOKEN": "forged.token.value"}, "The identity token is malformed."),
        ({"HTTP_X_FORWARDED_ID_TOKEN": id_token(key=OTHER_KEY)}, "The identity token is not valid."),
        (
            {"HTTP_X_FORWARDED_EMAIL": BOB, "HTTP_X_FORWARDED_ID_TOKEN": id_token()},
            "The forwarded email address does not match the identity token.",
        ),
        ({"HTTP_X_FORWARDED_ID_TOKEN": id_token("gina@example.com", hd=None)}, "not managed by an organisation"),
    ],
    ids=["garbage", "wrong-key", "email-mismatch", "no-hd"],
)
def test_a_bad_token_from_the_trusted_proxy_is_refused(
    id_token_mode: None, http: HttpClient, public_client: Client, headers: dict[str, str], reason: str
) -> None:
    page = authorize(http, public_client, **headers)
    assert page.status_code == 403
    assert reason in page.content.decode()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_an_id_token_from_an_untrusted_peer_is_dropped_unread(
    id_token_mode: None, http: HttpClient, public_client: Client, provider: Provider
) -> None:
    page = authorize(http, public_client, remote_addr="203.0.113.7", HTTP_X_FORWARDED_ID_TOKEN=id_token())
    assert page.status_code == 302
    assert page["Location"].startswith("/accounts/login/")
    assert provider.fetched == []


@pytest.mark.django_db
def test_headers_mode_ignores_the_id_token_header(http: HttpClient, public_client: Client, provider: Provider) -> None:
    """The default mode believes the email header from the trusted proxy and fetches nothing."""
    page = authorize(http, public_client, HTTP_X_FORWARDED_EMAIL=ALICE, HTTP_X_FORWARDED_ID_TOKEN="whatever")
    assert page.status_code == 200
    assert provider.fetched == []
