"""The benchmark's database: people, clients, tokens and one-time inputs minted before the runs, and the plan of the token lookup.

Run inside Django by bench/run.py (``manage.py shell -c "from bench.fixtures import seed; seed()"``),
configured through the environment:

- ``BENCH_BASE``: mcpgate's base URL (tokens and codes are bound to its /mcp, RFC 8707);
- ``BENCH_TOKEN``: the access token the /mcp cases present (Alice's, the ``bench`` public client's);
- ``BENCH_FEEDS``: a directory for the one-time inputs, and ``BENCH_FEED_SPEC``, JSON
  ``[[feed, connections, run, count], ...]``: for each, a file ``<feed>-<connections>-<run>.txt`` (run 0 is
  the warm-up) of ``count`` form-encoded /oauth/token bodies, a fresh authorization code or refresh token
  on every line (both are single use: RFC 6749 §4.1.2, RFC 9700 §4.14.2);
- ``BENCH_CLIENTS``, ``BENCH_TOKENS``, ``BENCH_PEOPLE``: how many more registered clients, live access
  tokens and people to add, the tokens spread over both (the scale case: the token lookup must stay one
  index hit however many there are).

Codes are stored as /oauth/authorize stores them (DOT's Grant: the code, a PKCE S256 challenge, the
redirect URI and the resource), refresh tokens as /oauth/token does (hashed, with their access token).
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.db import connection, transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model, set_token_value

from bench.clients import CODE_CHALLENGE, CODE_VERIFIER, CONFIDENTIAL_ID, CONFIDENTIAL_SECRET, PUBLIC_ID, REDIRECT_URI
from mcp_bridge import tokens
from mcpgate import ratelimit
from oauth_ext.models import Client, User

BATCH = 2000


def _public_client(client_id: str, name: str) -> Client:
    """A public client as a native app registers it (PKCE, no secret), not yet saved."""
    return Client(
        client_id=client_id,
        name=name,
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret="",
        hash_client_secret=False,
        token_endpoint_auth_method=Client.AuthMethod.NONE,
    )


AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()


def _resource() -> list[str]:
    return [os.environ["BENCH_BASE"] + "/mcp"]


def _access_token(user: Any, client: Any, raw: str, *, days: float = 1) -> Any:
    token = AccessToken(
        user=user, application=client, scope="mcp", expires=timezone.now() + timedelta(days=days), resource=_resource()
    )
    set_token_value(token, raw)
    return token


def _clients() -> tuple[Any, Any, Any]:
    public = _public_client(PUBLIC_ID, "bench")
    public.save()
    confidential = Client.objects.create(  # the secret is hashed on save (CLIENT_SECRET_HASHER)
        client_id=CONFIDENTIAL_ID,
        name="bench confidential",
        client_type=Client.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret=CONFIDENTIAL_SECRET,
        token_endpoint_auth_method=Client.AuthMethod.SECRET_BASIC,
    )
    user, _ = User.objects.get_or_create(
        username="alice@example.com", defaults={"email": "alice@example.com", "proxy_groups": ["eng"]}
    )
    return user, public, confidential


def _population(clients: int, live_tokens: int, people: int) -> None:
    """More people, registered clients and live tokens spread over them, as a busy deployment would hold."""
    users = User.objects.bulk_create(
        User(username=f"person{i}@example.com", email=f"person{i}@example.com") for i in range(people)
    )
    made = Client.objects.bulk_create(_public_client(f"bench-extra-{i}", f"extra {i}") for i in range(clients))
    if made and users:
        AccessToken.objects.bulk_create(
            (
                _access_token(users[i % len(users)], made[i % len(made)], secrets.token_urlsafe(32))
                for i in range(live_tokens)
            ),
            batch_size=BATCH,
        )


def _codes(user: Any, client: Any, count: int) -> list[str]:
    codes = [secrets.token_urlsafe(30) for _ in range(count)]
    Grant.objects.bulk_create(
        (
            Grant(
                user=user,
                application=client,
                code=code,
                expires=timezone.now() + timedelta(hours=2),  # not the 60 s of a real one: minted ahead of the run
                redirect_uri=REDIRECT_URI,
                scope="mcp",
                code_challenge=CODE_CHALLENGE,
                code_challenge_method="S256",
                resource=_resource(),
            )
            for code in codes
        ),
        batch_size=BATCH,
    )
    return codes


def _refresh_tokens(user: Any, client: Any, count: int) -> list[str]:
    raws = [secrets.token_urlsafe(32) for _ in range(count)]
    access = AccessToken.objects.bulk_create(
        (_access_token(user, client, secrets.token_urlsafe(32)) for _ in range(count)), batch_size=BATCH
    )
    refresh = []
    for raw, token in zip(raws, access, strict=True):
        rt = RefreshToken(
            user=user, application=client, access_token=token, token_family=uuid.uuid4(), resource=_resource()
        )
        set_token_value(rt, raw)
        refresh.append(rt)
    RefreshToken.objects.bulk_create(refresh, batch_size=BATCH)
    return raws


def _bodies(feed: str, user: Any, public: Any, confidential: Any, count: int) -> list[str]:
    if feed == "refresh":
        return [
            urlencode({"grant_type": "refresh_token", "refresh_token": raw, "client_id": PUBLIC_ID})
            for raw in _refresh_tokens(user, public, count)
        ]
    client = public if feed == "code-public" else confidential
    exchange = {"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI, "code_verifier": CODE_VERIFIER}
    if feed == "code-public":
        exchange["client_id"] = PUBLIC_ID  # a public client names itself; the confidential one authenticates
    return [urlencode({**exchange, "code": code}) for code in _codes(user, client, count)]


@transaction.atomic
def seed() -> None:
    user, public, confidential = _clients()
    bench_token = _access_token(user, public, os.environ["BENCH_TOKEN"], days=1)
    bench_token.save()
    _population(*(int(os.environ.get(name, "0")) for name in ("BENCH_CLIENTS", "BENCH_TOKENS", "BENCH_PEOPLE")))
    feeds = Path(os.environ["BENCH_FEEDS"])
    for feed, connections, run, count in json.loads(os.environ.get("BENCH_FEED_SPEC", "[]")):
        lines = _bodies(feed, user, public, confidential, count)
        (feeds / f"{feed}-{connections}-{run}.txt").write_text("\n".join(lines) + "\n")


def explain() -> None:
    """EXPLAIN ANALYZE of the token lookup /mcp runs on every call (mcp_bridge.tokens), for a live token: on
    PostgreSQL the statement that also counts the call (ANALYZE runs it: one more count for that token).

    Prints JSON: the statement, the token table's name, the plan, and how many live tokens, clients
    and people the tables hold.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    sample = AccessToken.objects.filter(expires__gt=timezone.now()).order_by("?").values_list("token_checksum")[0][0]
    sql = tokens.admission_sql(connection.alias)  # the very statement /mcp runs
    params = (
        [sample]
        if sql == tokens.lookup_sql(connection.alias)
        else [sample, ratelimit.window(ratelimit.MCP, sample).end]
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
    print(
        json.dumps(
            {
                "sql": sql,
                "table": AccessToken._meta.db_table,
                "plan": plan,
                "live_tokens": AccessToken.objects.filter(expires__gt=timezone.now()).count(),
                "clients": Client.objects.count(),
                "people": User.objects.count(),
            }
        )
    )
