"""The email address oauth2-proxy forwards (or the ID token's ``email`` claim) must be exactly one address.

Checking only what follows the last ``@`` let ``mallory@evil.test,alice@example.com``,
``a@b@example.com``, display names, quoted local parts, comments and control characters
through as new people. Each is refused with the 403 page, audited as ``sign_in_refused``,
and leaves no person and no session behind (RFC 5322 §3.4.1 addr-spec, parsed by the standard
library, nothing else).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from django.core.cache import cache
from django.test import Client as HttpClient

from audit.models import AuditEvent, AuditKind
from identity.proxy import SignInRefused, email_address, email_domain_allowed
from oauth_ext.models import Client, User
from tests.conftest import ALICE, PKCE, PROXY_ADDR, PUBLIC, authorize_params, proxy_headers
from tests.identity.test_id_token import (  # noqa: F401 - fixtures
    AUDIENCE,
    ISSUER,
    KEY,
    Provider,
    id_token,
    id_token_mode,
    provider,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Rate limits and audit allowances are counted in the cache: no test may see another's."""
    cache.clear()
    yield
    cache.clear()


REFUSAL = "The email address the sign-in proxy sent is not exactly one valid address."

NOT_ONE_ADDRESS = [
    "a@b@example.com",
    "mallory@evil.test@example.com",
    "alice@example.com,mallory@evil.test",
    "mallory@evil.test,alice@example.com",
    "alice@example.com, bob@example.com",
    "mallory@evil.test;alice@example.com",
    "Alice <alice@example.com>",
    "<mallory@evil.test> alice@example.com",
    '"mallory@evil.test"@example.com',
    '"alice"@example.com',
    '"a b"@example.com',
    "alice(mallory@evil.test)@example.com",
    "alice @example.com",
    "alice@ example.com",
    "al ice@example.com",
    "alice\x00@example.com",
    "mallory@evil.test\x00@example.com",
    "alice\r\n@example.com",
    "alice\t@example.com",
    "=?utf-8?q?mallory?=@example.com",
    "al\u0456ce@example.com",  # a Cyrillic i (U+0456)
    "alice@[127.0.0.1]",
    "alice..bob@example.com",
    ".alice@example.com",
    "alice@",
    "alice",
    pytest.param("a" * 140 + "@example.com", id="longer-than-a-username-can-be"),
]


def authorize(http: HttpClient, client: Client, **headers: str) -> Any:
    query = urlencode(authorize_params(client.client_id, PKCE.make()))
    return http.get("/oauth/authorize?" + query, HTTP_HOST=PUBLIC, **headers)


def assert_refused(response: Any, http: HttpClient) -> None:
    """The 403 page, one audited refusal, and nobody signed in or created."""
    assert response.status_code == 403, response.content
    assert response["Content-Type"].startswith("text/html")
    assert response["Cache-Control"] == "no-store"
    html = response.content.decode()
    assert "You cannot sign in here" in html
    assert REFUSAL in html
    assert not User.objects.exists()
    assert "_auth_user_id" not in http.session
    event = AuditEvent.objects.get()
    assert event.event == AuditKind.SIGN_IN_REFUSED
    assert event.user is None
    assert event.detail["reason"] == "not_one_address"


@pytest.mark.parametrize("email", NOT_ONE_ADDRESS)
def test_a_forwarded_email_that_is_not_one_address_is_refused(
    http: HttpClient, public_client: Client, email: str
) -> None:
    response = authorize(http, public_client, **proxy_headers(email))

    assert_refused(response, http)


def test_the_refusal_records_what_was_sent_without_control_characters(http: HttpClient, public_client: Client) -> None:
    """The audit keeps the sent value for the operator, escaped (PostgreSQL's JSON refuses NUL)."""
    authorize(http, public_client, **proxy_headers("mallory@evil.test\x00@example.com"))

    assert AuditEvent.objects.get().detail == {
        "email": "mallory@evil.test\\x00@example.com",
        "reason": "not_one_address",
    }


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("user", "alice\x00"),
        ("user", "alice\r\nX-Injected: 1"),
        ("groups", "eng,ops\x00admins"),
        ("groups", "mcp-admins\n"),
        ("user", "x" * 256),
    ],
)
def test_control_characters_or_overlong_values_in_the_other_identity_headers_are_refused(
    http: HttpClient, public_client: Client, header: str, value: str
) -> None:
    response = authorize(http, public_client, **proxy_headers(ALICE, **{header: value}))

    assert response.status_code == 403
    assert (
        "The sign-in proxy sent a user or groups header with control characters, or too long."
        in response.content.decode()
    )
    assert not User.objects.exists()
    assert AuditEvent.objects.get().detail == {"reason": "malformed_header"}


@pytest.mark.parametrize("email", [ALICE, "Alice@Example.COM", "alice+mcp@example.com", "o'brien@example.com"])
def test_a_plain_address_still_signs_in(http: HttpClient, public_client: Client, email: str) -> None:
    response = authorize(http, public_client, **proxy_headers(email, groups="eng"))

    assert response.status_code == 200, response.content
    assert User.objects.get().username == email.lower()


def test_surrounding_whitespace_is_not_part_of_the_header_value(http: HttpClient, public_client: Client) -> None:
    """RFC 9110 §5.5: whitespace around a field value is not part of it."""
    response = authorize(http, public_client, **proxy_headers(" alice@example.com "))

    assert response.status_code == 200
    assert User.objects.get().username == ALICE


# ---------------------------------------------------------------------------
# The same rule for the ID token's email claim (MCPGATE_IDENTITY_MODE=id_token)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "email",
    [
        "a@b@example.com",
        "mallory@evil.test,alice@example.com",
        "Alice <alice@example.com>",
        '"x@evil.test"@example.com',
    ],
)
def test_an_id_token_email_claim_that_is_not_one_address_is_refused(
    id_token_mode: None,  # noqa: F811
    http: HttpClient,
    public_client: Client,
    email: str,
) -> None:
    token = id_token(email, hd="example.com")

    response = authorize(http, public_client, REMOTE_ADDR=PROXY_ADDR, HTTP_X_FORWARDED_ID_TOKEN=token)

    assert_refused(response, http)


def test_an_id_token_email_claim_that_is_not_a_string_is_refused(
    id_token_mode: None,  # noqa: F811
    http: HttpClient,
    public_client: Client,
) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "1100", "email": [ALICE], "email_verified": True}
    token = jwt.encode({**claims, "hd": "example.com", "iat": now, "exp": now + 600}, KEY, "RS256", {"kid": "k1"})

    response = authorize(http, public_client, REMOTE_ADDR=PROXY_ADDR, HTTP_X_FORWARDED_ID_TOKEN=token)

    assert_refused(response, http)


# ---------------------------------------------------------------------------
# The parser itself, as the rest of the code calls it
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("email", NOT_ONE_ADDRESS)
def test_the_parser_refuses_anything_but_one_address(email: str) -> None:
    with pytest.raises(SignInRefused):
        email_address(email)
    assert not email_domain_allowed(email)


def test_the_parser_gives_the_address_in_lower_case() -> None:
    assert email_address(" Alice@Example.COM ") == ALICE
    assert email_domain_allowed("Alice@Example.COM")
