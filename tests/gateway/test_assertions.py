"""Identity assertions (issue 12, mode 4): a 60-second JWT naming the person, checked against /.well-known/jwks.json."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import jwt
import pytest
from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client as HttpClient
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from gateway import assertions
from gateway.models import AssertionKey, Upstream
from gateway.services import target_from, upstream_create
from tests.conftest import INTERNAL, INTERNAL_BASE, PUBLIC
from tests.gateway.fixtures import add_upstream, headers_server_fixture, upstream_keys_fixture  # noqa: F401
from tests.mcp_bridge.conftest import bearer, call
from tests.personas import ALICE, BOB

HEADER = "X-Mcpgate-Identity"
UPSTREAM_URL = "https://tickets.internal.example/mcp"
TICKETS = target_from(url=UPSTREAM_URL, command=None)


def key_set(host: str = INTERNAL) -> dict[str, Any]:
    response = HttpClient().get("/.well-known/jwks.json", HTTP_HOST=host)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jwk-set+json"
    assert "max-age=300" in response["Cache-Control"] and "public" in response["Cache-Control"]
    document: dict[str, Any] = json.loads(response.content)
    return document


def verified(token: str, *, audience: str = UPSTREAM_URL, keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """``token`` verified as an upstream verifies it: signature by a published key, ``aud``, ``iss``, ``exp``."""
    header = jwt.get_unverified_header(token)
    published = jwt.PyJWKSet.from_dict(keys if keys is not None else key_set())
    key = next(k for k in published.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=INTERNAL_BASE,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    return claims


async def sign(**overrides: Any) -> str:
    fields: dict[str, Any] = {
        "issuer": INTERNAL_BASE,
        "audience": UPSTREAM_URL,
        "subject": "7",
        "email": ALICE,
        "groups": {"eng", "admins"},
        "client_id": "claude-code",
    }
    return await assertions.identity_assertion(**(fields | overrides))


@pytest.fixture
def fresh_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    """No signing key cached from an earlier test (the cache is per process)."""
    monkeypatch.setattr(assertions, "_current", None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_an_assertion_verifies_against_the_published_key_set_and_names_the_person(
    upstream_keys, fresh_signer
) -> None:
    token = await sign()

    keys = await sync_to_async(key_set)()
    claims = verified(token, keys=keys)

    assert {k: claims[k] for k in ("iss", "aud", "sub", "email", "groups", "client_id")} == {
        "iss": INTERNAL_BASE,
        "aud": UPSTREAM_URL,
        "sub": "7",
        "email": ALICE,
        "groups": ["admins", "eng"],
        "client_id": "claude-code",
    }
    assert claims["exp"] - claims["iat"] == 60
    assert len(claims["jti"]) >= 16
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    (published,) = keys["keys"]
    assert {published["kty"], published["crv"], published["alg"], published["use"]} == {"EC", "P-256", "ES256", "sig"}
    assert published["kid"] == jwt.get_unverified_header(token)["kid"]
    assert "d" not in published  # the public half only


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_an_assertion_for_another_upstream_is_refused_by_this_one(upstream_keys, fresh_signer) -> None:
    token = await sign(audience="https://other.internal.example/mcp")
    keys = await sync_to_async(key_set)()

    with pytest.raises(jwt.InvalidAudienceError):
        verified(token, keys=keys)


def rotate(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("rotate_assertion_key", *args, stdout=out)
    printed: dict[str, Any] = json.loads(out.getvalue())
    return printed


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def ten_minutes_on() -> None:
    """What the clock does to a rotation's keys in the 10 minutes (``PUBLISH_AHEAD``) after it."""
    shift = assertions.PUBLISH_AHEAD + timedelta(seconds=1)
    for key in AssertionKey.objects.all():
        AssertionKey.objects.filter(pk=key.pk).update(
            activates_at=key.activates_at - shift, retired_at=key.retired_at - shift if key.retired_at else None
        )
    assertions._current = None  # the workers' 10 s cache, gone by then too


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_rotated_key_is_published_first_signs_ten_minutes_later_and_the_old_one_stays_published_an_hour(
    upstream_keys, fresh_signer
) -> None:
    before = await sign()
    old = kid_of(before)

    printed = await sync_to_async(rotate)()
    new = printed["kid"]
    keys = await sync_to_async(key_set)()
    # Published at once, both of them; the old key still signs.
    assert sorted(printed["published"]) == sorted(k["kid"] for k in keys["keys"]) == sorted([old, new])
    assert kid_of(await sign()) == old
    rotated = await sync_to_async(AuditEvent.objects.get)(event=AuditKind.ASSERTION_KEY_ROTATED)
    assert rotated.detail == {"kid": new, "activates_at": printed["activates_at"], "replaced": [old], "now": False}

    await sync_to_async(ten_minutes_on)()
    after = await sign()
    keys = await sync_to_async(key_set)()
    assert kid_of(after) == new
    assert verified(before, keys=keys)["email"] == verified(after, keys=keys)["email"] == ALICE

    # An hour after it stopped signing, the old key leaves the key set.
    await sync_to_async(AssertionKey.objects.filter(kid=old).update)(
        retired_at=timezone.now() - assertions.RETIRED_KEPT - timedelta(seconds=1)
    )
    keys = await sync_to_async(key_set)()
    assert [k["kid"] for k in keys["keys"]] == [new]


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_rotating_now_signs_with_the_new_key_at_once_and_unpublishes_the_compromised_one(
    upstream_keys, fresh_signer
) -> None:
    old = kid_of(await sign())

    printed = await sync_to_async(rotate)("--now")

    keys = await sync_to_async(key_set)()
    assert [k["kid"] for k in keys["keys"]] == printed["published"] == [printed["kid"]]
    assert kid_of(await sign()) == printed["kid"] != old


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["-1", "604801"])
def test_an_activation_delay_out_of_range_is_refused(upstream_keys, value: str) -> None:
    with pytest.raises(CommandError, match=f"--activate-in must be 0 to 604800 seconds, not {value}"):
        rotate("--activate-in", value)
    assert not AssertionKey.objects.exists()


@pytest.mark.django_db
def test_the_key_set_is_empty_until_an_upstream_needs_one_and_is_served_on_both_hosts(upstream_keys) -> None:
    assert key_set() == {"keys": []}

    upstream_create(
        name="tickets", target=target_from(url=UPSTREAM_URL, command=None), identity_assertion_header=HEADER
    )

    assert len(key_set()["keys"]) == 1
    assert key_set(PUBLIC) == key_set(INTERNAL)


@pytest.mark.django_db
def test_the_signing_key_is_sealed_at_rest(upstream_keys) -> None:
    upstream_create(
        name="tickets", target=target_from(url=UPSTREAM_URL, command=None), identity_assertion_header=HEADER
    )

    key = AssertionKey.objects.get()
    assert "PRIVATE KEY" not in key.sealed_private_key
    assert Fernet(upstream_keys.encode()).decrypt(key.sealed_private_key.encode()).startswith(b'{"pem": "-----BEGIN')


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_an_unopenable_signing_key_is_a_tool_error_naming_no_secret_and_audited(
    upstream_keys, headers_server, fresh_signer, site, mcp, alice_token, settings, caplog
) -> None:
    await add_upstream("hdr", url=headers_server, identity_assertion_header=HEADER)
    settings.MCPGATE_UPSTREAM_KEYS = [Fernet.generate_key().decode()]  # the sealing key was dropped

    r = await mcp.post("/mcp", json=call("hdr__headers"), headers=bearer(alice_token))

    result = r.json()["result"]
    assert r.status_code == 200 and result["isError"] is True
    assert result["content"][0]["text"] == (
        "mcpgate cannot sign the identity assertion this upstream needs; its operator has been told"
    )
    assert "identity assertions cannot be signed" in caplog.text and "Traceback" not in caplog.text
    row = await sync_to_async(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).last)()
    assert row is not None and row.detail["outcome"] == "assertion_unavailable"


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_each_person_s_call_carries_an_assertion_of_that_person_and_never_their_token(
    upstream_keys, headers_server, fresh_signer, site, mcp, alice, bob, make_token
) -> None:
    """What the upstream (headers_server.py: it returns the headers it got) receives, verified as it would."""
    await add_upstream("hdr", url=headers_server, identity_assertion_header=HEADER)
    tokens = {ALICE: await sync_to_async(make_token)(alice), BOB: await sync_to_async(make_token)(bob)}

    seen: dict[str, dict[str, str]] = {}
    for email, token in tokens.items():
        r = await mcp.post("/mcp", json=call("hdr__headers"), headers=bearer(token))
        assert r.json()["result"]["isError"] is False, r.text
        seen[email] = json.loads(r.json()["result"]["content"][0]["text"])

    keys = await sync_to_async(key_set)()
    for email, person in ((ALICE, alice), (BOB, bob)):
        claims = verified(seen[email][HEADER.lower()], audience=headers_server, keys=keys)
        assert (claims["sub"], claims["email"], claims["groups"]) == (
            str(person.pk),
            email,
            sorted(person.proxy_groups),
        )
        assert claims["client_id"] and tokens[email] not in json.dumps(seen[email])
    upstream = await sync_to_async(Upstream.objects.get)(name="hdr")
    assert upstream.identity_assertion_header == HEADER
