"""The console's revocations take effect on /mcp at once (issue 4), through the real ASGI site.

Alice and Bob hold tokens for Claude Code (fixtures of tests/mcp_bridge); Olivia is the operator
who acts. Each service is called as the admin action calls it, then /mcp is asked again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from oauth_ext import services
from oauth_ext.models import Client, Consent, User
from tests.mcp_bridge import conftest as mcp_fixtures
from tests.mcp_bridge.conftest import bearer, rpc
from tests.personas import OLIVIA

# tests/mcp_bridge's fixtures, used here as they are there: the ASGI site, Alice's and Bob's tokens.
site = mcp_fixtures.site
mcp = mcp_fixtures.mcp
anyio_backend = mcp_fixtures.anyio_backend
alice = mcp_fixtures.alice
bob = mcp_fixtures.bob
app_client = mcp_fixtures.app_client
make_token = mcp_fixtures.make_token
alice_token = mcp_fixtures.alice_token
bob_token = mcp_fixtures.bob_token

pytestmark = pytest.mark.anyio


async def status(mcp: Any, token: str) -> int:
    response = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(token))
    return int(response.status_code)


@pytest.fixture
def olivia(transactional_db: Any) -> User:
    return User.objects.create(username=OLIVIA, email=OLIVIA, is_staff=True)


def revoke_consent(alice: User, olivia: User, client: Client) -> None:
    consent = Consent.objects.create(user=alice, client=client, scopes=["mcp"])
    services.consent_revoke(consent=consent, operator=olivia)


def offboard(alice: User, olivia: User, client: Client) -> None:
    services.user_revoke_all_tokens(user=alice, operator=olivia)


def revoke_one(alice: User, olivia: User, client: Client) -> None:
    from oauth2_provider.models import get_access_token_model

    services.token_revoke(token=get_access_token_model().objects.get(user=alice), operator=olivia)


@pytest.mark.parametrize("revoke", [revoke_consent, offboard, revoke_one])
async def test_a_persons_revocation_is_immediate_and_spares_others(
    mcp: Any, alice: User, bob: User, olivia: User, app_client: Client, alice_token: str, bob_token: str, revoke: Any
) -> None:
    assert await status(mcp, alice_token) == 200
    await sync_to_async(revoke)(alice, olivia, app_client)
    assert await status(mcp, alice_token) == 401
    assert await status(mcp, bob_token) == 200


async def test_client_revocation_ends_everyones_tokens(
    mcp: Any, olivia: User, app_client: Client, alice_token: str, bob_token: str
) -> None:
    await sync_to_async(services.client_revoke_all_tokens)(client=app_client, operator=olivia)
    assert await status(mcp, alice_token) == 401
    assert await status(mcp, bob_token) == 401


async def test_disabling_a_client_refuses_its_tokens_and_enabling_restores_them(
    mcp: Any, olivia: User, app_client: Client, alice_token: str
) -> None:
    set_disabled: Callable[..., Awaitable[bool]] = sync_to_async(services.client_set_disabled)
    assert await set_disabled(client=app_client, disabled=True, operator=olivia)
    assert await status(mcp, alice_token) == 401
    assert not await set_disabled(client=app_client, disabled=True, operator=olivia)  # no change, no event
    assert await set_disabled(client=app_client, disabled=False, operator=olivia)
    assert await status(mcp, alice_token) == 200
