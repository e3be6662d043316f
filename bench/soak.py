"""Soak: mcpgate under a bounded, mixed load on PostgreSQL with two workers, and a database outage in the middle.

    .venv/bin/python -m bench.soak [--seconds 60] [--clients 50] [--outage-seconds 3 | --no-outage]
                                   [--pg-max-connections 100] [--env MCPGATE_X=Y] [--markdown PATH]
    make soak SOAK_ARGS="..."

Loopback only: a throw-away PostgreSQL cluster (max_connections at PostgreSQL's default, 100) and
gunicorn (deploy/gunicorn.conf.py, two uvicorn workers, the production command line) on 127.0.0.1,
and ``--clients`` concurrent clients for ``--seconds`` seconds, after which everything stops by
itself. Each client is one of (in the proportions of ``MIX``):

  mcp        POST /mcp tools/call (whoami and list_notes in turn) with its access token
  refresh    POST /oauth/token grant_type=refresh_token, keeping the pair it gets back (rotation)
  register   POST /oauth/register (RFC 7591), a new public client each time
  authorize  GET /oauth/authorize as Alice signed in at oauth2-proxy (consent remembered), then
             POST /oauth/token with the code, PKCE verifier and resource ("token" below)

Halfway through, PostgreSQL is stopped (``pg_ctl stop -m fast``) for ``--outage-seconds`` and
started again. While it is down every answer must be a 503 with ``Retry-After`` and the route's
shape (JSON-RPC on /mcp, RFC 6749 JSON on the OAuth endpoints, an HTML page at /oauth/authorize);
the recovery time is how long after the database returned the last failed request was answered.
Any other failure (a 500, a refused token, a dropped connection, a 503 outside the outage) is
unexpected. Afterwards the database is checked against what the clients were given (nothing
lost, nothing duplicated: ``verify_ledgers``), and gunicorn's log must hold no credential and no
traceback.

Prints requests, errors by kind, p50/p99, the recovery time, each worker's memory (VmRSS after the
first quarter of the run, its peak, at the end) and the PostgreSQL sessions the workers hold;
``--markdown PATH`` writes the same as markdown. Exits 1 on any unexpected error, a recovery slower
than 5 s, memory growing by more than ``--max-growth-mib`` per worker, or a ledger or log problem.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import psycopg

from tests.e2e.oauthclient import (
    ALICE,
    PKCE,
    Discovery,
    authorization_query,
    authorize,
    discover,
    exchange,
    register,
)
from tests.faults.deployment import Deployment, deployment, rss_kib

PROTOCOL_VERSION = "2025-06-18"
REDIRECT_URI = "http://127.0.0.1:33418/callback"
RECOVERY_LIMIT = 5.0  # seconds after the database returns (issue 8, "Faults")
REQUEST_TIMEOUT = 20.0
TOOLS = ("whoami", "list_notes")


# Of every 25 clients: mostly tools/call, as in real use.
class Kind(StrEnum):
    """What a request was: one of the four clients', or the code redemption after an authorization."""

    MCP = "mcp"
    REFRESH = "refresh"
    REGISTER = "register"
    AUTHORIZE = "authorize"
    TOKEN = "token"


class Verdict(StrEnum):
    OK = "ok"  # the success the route promises
    UNAVAILABLE = "unavailable"  # a spec-shaped 503 with Retry-After while the database is away
    UNEXPECTED = "unexpected"  # anything else: a failure


MIX = ((Kind.MCP, 17), (Kind.REFRESH, 3), (Kind.REGISTER, 2), (Kind.AUTHORIZE, 3))

OK_STATUS = {Kind.MCP: 200, Kind.REFRESH: 200, Kind.REGISTER: 201, Kind.AUTHORIZE: 302, Kind.TOKEN: 200}


# ---------------------------------------------------------------------------
# What came back
# ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """One request: its kind, when it left and came back (seconds since the load started), the verdict."""

    kind: Kind
    started: float
    ended: float
    verdict: Verdict
    detail: str = ""


@dataclass
class Outage:
    stopping: float | None = None  # pg_ctl stop called
    stopped: float | None = None  # pg_ctl stop returned
    back: float | None = None  # pg_ctl start returned: accepting connections


@dataclass
class Ledger:
    """What one client was given, to check against the database afterwards."""

    kind: Kind
    client_id: str
    access_token: str = ""
    refresh_token: str = ""
    refresh_tokens: list[str] = field(default_factory=list)
    refresh_failed: int = 0  # refreshes without an answer or with a 5xx: each may have committed unseen
    issued_access_tokens: list[str] = field(default_factory=list)  # from codes redeemed under load


@dataclass
class Result:
    outcomes: list[Outcome] = field(default_factory=list)
    outage: Outage = field(default_factory=Outage)
    ledgers: list[Ledger] = field(default_factory=list)
    memory: dict[int, list[int]] = field(default_factory=dict)  # worker pid → VmRSS samples, KiB
    connections: list[int] = field(default_factory=list)  # the workers' PostgreSQL sessions, sampled
    pg_max_connections: int = 0
    seconds: float = 0.0
    clients: int = 0
    problems: list[str] = field(default_factory=list)  # from the ledger check

    def unexpected(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict == Verdict.UNEXPECTED]

    def recovery_seconds(self) -> float | None:
        """How long after the database returned the last failed request was answered (0: none after it)."""
        back = self.outage.back
        if back is None:
            return None
        return max((o.ended - back for o in self.outcomes if o.verdict != Verdict.OK and o.ended > back), default=0.0)


def _json(response: httpx2.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def unavailable_problem(kind: Kind, response: httpx2.Response, request_id: int | None = None) -> str | None:
    """Why a 503 is not the spec-shaped "try again later" for this route, or None when it is.

    RFC 9110 §15.6.4 and §10.2.3 (``Retry-After``), then the route's error shape: JSON-RPC 2.0 §5.1
    on /mcp, RFC 6749 §5.2 ``temporarily_unavailable`` with ``no-store`` on the OAuth endpoints,
    an HTML page for the person at /oauth/authorize.
    """
    retry_after = response.headers.get("retry-after", "")
    if not retry_after.isdigit():
        return f"503 without a Retry-After in seconds ({retry_after!r})"
    content_type = response.headers.get("content-type", "")
    body = _json(response)
    if kind == Kind.MCP:
        error = body.get("error") if isinstance(body, dict) else None
        if not (
            content_type.startswith("application/json")
            and body.get("jsonrpc") == "2.0"
            and body.get("id") in (request_id, None)
            and isinstance(error, dict)
            and isinstance(error.get("code"), int)
            and isinstance(error.get("message"), str)
        ):
            return f"503 not in JSON-RPC shape: {response.text[:200]!r}"
        return None
    if kind == Kind.AUTHORIZE:
        if not content_type.startswith("text/html") or "<html" not in response.text.lower():
            return f"503 at /oauth/authorize is not an HTML page: {content_type} {response.text[:200]!r}"
        return None
    if not (
        content_type.startswith("application/json")
        and isinstance(body, dict)
        and body.get("error") == "temporarily_unavailable"
        and isinstance(body.get("error_description"), str)
        and response.headers.get("cache-control") == "no-store"
    ):
        return f"503 not an RFC 6749 temporarily_unavailable error: {response.headers} {response.text[:200]!r}"
    return None


# ---------------------------------------------------------------------------
# The load
# ---------------------------------------------------------------------------
def client_kinds(count: int) -> list[Kind]:
    """``count`` kinds in MIX's proportions, interleaved (smooth weighted round robin), so any count has each kind."""
    total = sum(weight for _, weight in MIX)
    current = dict.fromkeys((kind for kind, _ in MIX), 0)
    kinds = []
    for _ in range(count):
        for kind, weight in MIX:
            current[kind] += weight
        chosen = max(current, key=lambda k: current[k])
        current[chosen] -= total
        kinds.append(chosen)
    return kinds


class Run:
    """One bounded run of the clients against a deployment."""

    def __init__(self, deployment: Deployment, *, seconds: float, think: float = 0.0) -> None:
        self.deployment = deployment
        self.server = deployment.server
        self.base = self.server.internal
        self.seconds = seconds
        self.think = think
        self.result = Result(seconds=seconds, pg_max_connections=deployment.cluster.max_connections)
        self.t0 = 0.0
        self.ids = itertools.count(1)
        self.discovery: Discovery | None = None
        self.stopped = False

    def now(self) -> float:
        return time.monotonic() - self.t0

    def done(self) -> bool:
        return self.stopped or self.now() >= self.seconds

    def stop(self) -> None:
        """End the load early (from any thread): each client finishes the request it is sending."""
        self.stopped = True

    def http(self, **kwargs: Any) -> httpx2.AsyncClient:
        """A client of its own per simulated client: its own connections (and cookies)."""
        return httpx2.AsyncClient(
            base_url=self.base,
            trust_env=False,
            timeout=REQUEST_TIMEOUT,
            # Idle connections are dropped after 1 s, before the server's keep-alive timeout (gunicorn's
            # ``keepalive``, 2 s, which uvicorn's worker uses) can close one as a request leaves on it.
            limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=1.0),
            **kwargs,
        )

    def record(self, kind: Kind, started: float, verdict: Verdict, detail: str = "") -> None:
        self.result.outcomes.append(Outcome(kind, started, self.now(), verdict, detail))

    async def send(
        self, kind: Kind, call: Callable[[], Awaitable[httpx2.Response]], *, request_id: int | None = None
    ) -> httpx2.Response | None:
        """Send one request and judge it; the response when it succeeded as it should, else None."""
        started = self.now()
        try:
            response = await call()
        except httpx2.HTTPError as exc:
            self.record(kind, started, Verdict.UNEXPECTED, f"transport: {type(exc).__name__}")
            return None
        if response.status_code == 503:
            problem = unavailable_problem(kind, response, request_id)
            self.record(kind, started, Verdict.UNEXPECTED if problem else Verdict.UNAVAILABLE, problem or "503")
            return None
        problem = self.success_problem(kind, response)
        if problem:
            self.record(kind, started, Verdict.UNEXPECTED, problem)
            return None
        self.record(kind, started, Verdict.OK)
        return response

    @staticmethod
    def success_problem(kind: Kind, response: httpx2.Response) -> str | None:
        expected = OK_STATUS[kind]
        body = _json(response)
        detail = body.get("error", "") if isinstance(body, dict) else ""
        if response.status_code != expected:
            return f"{response.status_code} {detail}".strip()
        if kind == Kind.MCP:
            result = body.get("result") if isinstance(body, dict) else None
            if not isinstance(result, dict) or result.get("isError"):
                return f"tools/call failed: {response.text[:200]}"
        return None

    # -- setup: every client gets what a real one would have, through the real flow ---------
    def prepare(self, count: int) -> list[Ledger]:
        """Register a client for each simulated client, have Alice consent, redeem the code."""
        ledgers = []
        with (
            httpx2.Client(base_url=self.base, trust_env=False, timeout=REQUEST_TIMEOUT) as http,
            httpx2.Client(base_url=self.base, trust_env=False, timeout=REQUEST_TIMEOUT, headers=ALICE) as browser,
        ):
            self.discovery = discover(http, self.base + "/mcp")
            for index, kind in enumerate(client_kinds(count)):
                client_id = str(
                    register(http, self.discovery, f"soak {kind} {index}", REDIRECT_URI, "none")["client_id"]
                )
                ledger = Ledger(kind=kind, client_id=client_id)
                if kind != Kind.REGISTER:
                    grant = authorize(browser, self.discovery, client_id=client_id, redirect_uri=REDIRECT_URI)
                    response = exchange(http, self.discovery, grant, client_id=client_id)
                    assert response.status_code == 200, response.text
                    tokens = response.json()
                    ledger.access_token = tokens["access_token"]
                    ledger.refresh_token = tokens["refresh_token"]
                    ledger.refresh_tokens.append(ledger.refresh_token)
                    self.server.remember(ledger.access_token, ledger.refresh_token)
                ledgers.append(ledger)
        self.result.ledgers = ledgers
        self.result.clients = count
        return ledgers

    # -- the clients ---------------------------------------------------------------------
    async def mcp_client(self, ledger: Ledger) -> None:
        async with self.http(headers={"Authorization": f"Bearer {ledger.access_token}"}) as http:
            for n in itertools.count():
                if self.done():
                    return
                request_id = next(self.ids)
                message = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "method": "tools/call",
                    "params": {"name": TOOLS[n % len(TOOLS)], "arguments": {}},
                }
                headers = {
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": PROTOCOL_VERSION,
                }
                await self.send(
                    Kind.MCP, partial(http.post, "/mcp", json=message, headers=headers), request_id=request_id
                )
                await self.pause()

    async def refresh_client(self, ledger: Ledger) -> None:
        assert self.discovery is not None
        token_path = urlsplit(self.discovery.endpoint("token")).path
        async with self.http() as http:
            while not self.done():
                data = {
                    "grant_type": "refresh_token",
                    "refresh_token": ledger.refresh_token,
                    "client_id": ledger.client_id,
                    "resource": self.discovery.resource,
                }
                response = await self.send(Kind.REFRESH, partial(http.post, token_path, data=data))
                if response is not None:
                    tokens = response.json()
                    ledger.access_token, ledger.refresh_token = tokens["access_token"], tokens["refresh_token"]
                    ledger.refresh_tokens.append(ledger.refresh_token)
                    self.server.remember(ledger.access_token, ledger.refresh_token)
                else:
                    ledger.refresh_failed += 1
                await self.pause()

    async def register_client(self, ledger: Ledger) -> None:
        assert self.discovery is not None
        register_path = urlsplit(self.discovery.endpoint("registration")).path
        async with self.http() as http:
            for n in itertools.count():
                if self.done():
                    return
                metadata = {
                    # A new name each time: identical metadata would be de-duplicated, not registered.
                    "client_name": f"soak registration {ledger.client_id[:8]} {n}",
                    "redirect_uris": [REDIRECT_URI],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                }
                response = await self.send(Kind.REGISTER, partial(http.post, register_path, json=metadata))
                if response is not None:
                    self.server.remember(response.json().get("registration_access_token"))
                await self.pause()

    async def authorize_client(self, ledger: Ledger) -> None:
        """Alice, signed in at oauth2-proxy, authorizes the client again (remembered consent), which redeems the code."""
        discovery = self.discovery
        assert discovery is not None
        authorize_path = urlsplit(discovery.endpoint("authorization")).path
        token_path = urlsplit(discovery.endpoint("token")).path
        async with self.http(headers=ALICE) as browser, self.http() as http:
            for n in itertools.count():
                if self.done():
                    return
                pkce = PKCE.make()
                state = f"soak-{n}"
                query = authorization_query(ledger.client_id, REDIRECT_URI, discovery.resource, state, pkce.challenge)
                response = await self.send(Kind.AUTHORIZE, partial(browser.get, f"{authorize_path}?{query}"))
                if response is None:
                    await self.pause()
                    continue
                params = dict(parse_qsl(urlsplit(response.headers["location"]).query))
                if params.get("state") != state or "code" not in params:
                    self.record(
                        Kind.AUTHORIZE, self.now(), Verdict.UNEXPECTED, f"redirect without code: {sorted(params)}"
                    )
                    continue
                self.server.remember(params["code"])
                data = {
                    "grant_type": "authorization_code",
                    "code": params["code"],
                    "redirect_uri": REDIRECT_URI,
                    "code_verifier": pkce.verifier,
                    "client_id": ledger.client_id,
                    "resource": discovery.resource,
                }
                # A code the token endpoint could not redeem is dropped, as clients do: start again.
                token = await self.send(Kind.TOKEN, partial(http.post, token_path, data=data))
                if token is not None:
                    tokens = token.json()
                    ledger.issued_access_tokens.append(tokens["access_token"])
                    self.server.remember(tokens["access_token"], tokens["refresh_token"])
                await self.pause()

    async def pause(self) -> None:
        await asyncio.sleep(self.think)

    # -- what happens around the load ------------------------------------------------------
    async def outage(self, at: float, duration: float) -> None:
        """Stop PostgreSQL at ``at`` seconds for ``duration`` seconds, then start it again."""
        await asyncio.sleep(max(0.0, at - self.now()))
        outage = self.result.outage
        outage.stopping = self.now()
        await asyncio.to_thread(self.deployment.cluster.stop)
        outage.stopped = self.now()
        await asyncio.sleep(duration)
        await asyncio.to_thread(self.deployment.cluster.start)
        outage.back = self.now()

    async def sample_memory(self) -> None:
        """Each second: every worker's VmRSS, and how many database sessions the workers hold."""
        while not self.done():
            for pid in self.deployment.workers():
                rss = rss_kib(pid)
                if rss is not None:
                    self.result.memory.setdefault(pid, []).append(rss)
            sessions = await asyncio.to_thread(self.database_sessions)
            if sessions is not None:
                self.result.connections.append(sessions)
            await asyncio.sleep(1.0)

    def database_sessions(self) -> int | None:
        try:
            with psycopg.connect(self.deployment.cluster.url, connect_timeout=2) as db:
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
        except psycopg.Error:
            return None  # the database is away
        return int(row[0]) if row else None

    async def load(self, ledgers: list[Ledger], *, outage_at: float | None, outage_seconds: float) -> Result:
        """Run every client until ``seconds`` have passed (and the outage, if any, is over)."""
        self.t0 = time.monotonic()
        runners = {
            Kind.MCP: self.mcp_client,
            Kind.REFRESH: self.refresh_client,
            Kind.REGISTER: self.register_client,
            Kind.AUTHORIZE: self.authorize_client,
        }
        tasks = [runners[ledger.kind](ledger) for ledger in ledgers]
        tasks.append(self.sample_memory())
        if outage_at is not None:
            tasks.append(self.outage(outage_at, outage_seconds))
        # httpx2 logs every request at INFO: tens of thousands of lines, and the driver's CPU.
        quiet = logging.getLogger("httpx2")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            # Bounded whatever happens: every request has a timeout, and so has the whole.
            await asyncio.wait_for(
                asyncio.gather(*tasks), timeout=self.seconds + outage_seconds + 2 * REQUEST_TIMEOUT + 30
            )
        finally:
            quiet.setLevel(level)
        self.judge_timing()
        return self.result

    def judge_timing(self) -> None:
        """A 503 is expected only while the database is away or coming back; at other times it is a failure."""
        outage = self.result.outage
        for outcome in self.result.outcomes:
            if outcome.verdict != Verdict.UNAVAILABLE:
                continue
            if outage.stopping is None or outage.back is None:
                outcome.verdict, outcome.detail = Verdict.UNEXPECTED, "503 with the database up"
            elif outcome.ended < outage.stopping or outcome.started > outage.back + RECOVERY_LIMIT:
                outcome.verdict, outcome.detail = Verdict.UNEXPECTED, "503 outside the outage"


# ---------------------------------------------------------------------------
# Afterwards: nothing lost, nothing duplicated
# ---------------------------------------------------------------------------
def checksum(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def verify_ledgers(deployment: Deployment, ledgers: list[Ledger]) -> list[str]:
    """Check the database and the endpoints against what the clients were given; a list of problems.

    - every access token issued for a code is stored, once;
    - every refresh token a client received is stored exactly once (none lost, none doubled);
    - each client's live refresh tokens are its current one plus at most one per refresh that
      failed (a rotation that committed as the database or the worker went away, its answer lost:
      the client's retry inside the grace window gets a sibling, RFC 9700 §4.14.2);
    - the last pair each client holds still works: the refresh token refreshes, the access token
      calls a tool.
    """
    problems: list[str] = []
    with psycopg.connect(deployment.cluster.url) as db:
        for ledger in ledgers:
            if ledger.issued_access_tokens:
                sums = [checksum(token) for token in ledger.issued_access_tokens]
                stored = db.execute(
                    "SELECT count(*) FROM oauth2_provider_accesstoken WHERE token_checksum = ANY(%s)", (sums,)
                ).fetchone()
                if stored is None or stored[0] != len(set(sums)) or len(set(sums)) != len(sums):
                    problems.append(f"authorize {ledger.client_id}: {len(sums)} access tokens issued, {stored} stored")
            if not ledger.refresh_tokens:
                continue
            sums = [checksum(token) for token in ledger.refresh_tokens]
            rows = db.execute(
                "SELECT token_checksum, count(*) FROM oauth2_provider_refreshtoken"
                " WHERE token_checksum = ANY(%s) GROUP BY token_checksum",
                (sums,),
            ).fetchall()
            counts: dict[str, int] = dict(rows)
            for index, value in enumerate(sums):
                if counts.get(value, 0) != 1:
                    problems.append(
                        f"{ledger.kind} {ledger.client_id}: refresh token #{index} stored {counts.get(value, 0)} times"
                    )
            live = [
                row[0]
                for row in db.execute(
                    "SELECT r.token_checksum FROM oauth2_provider_refreshtoken r"
                    " JOIN oauth_ext_client c ON c.id = r.application_id"
                    " WHERE c.client_id = %s AND r.revoked IS NULL",
                    (ledger.client_id,),
                )
            ]
            current = checksum(ledger.refresh_token)
            if current not in live:
                problems.append(f"{ledger.kind} {ledger.client_id}: the refresh token it holds is not live")
            unseen = [value for value in live if value not in sums]
            if ledger.kind == Kind.REFRESH and len(unseen) > ledger.refresh_failed:
                problems.append(
                    f"refresh {ledger.client_id}: {len(unseen)} live refresh tokens it never received,"
                    f" for {ledger.refresh_failed} refreshes that failed"
                )
            seen_live = [value for value in live if value in sums and value != current]
            if seen_live:
                problems.append(
                    f"{ledger.kind} {ledger.client_id}: {len(seen_live)} rotated-out refresh tokens still live"
                )
    problems.extend(_final_pairs_work(deployment, ledgers))
    return problems


def _final_pairs_work(deployment: Deployment, ledgers: list[Ledger]) -> list[str]:
    problems = []
    base = deployment.server.internal
    with httpx2.Client(base_url=base, trust_env=False, timeout=REQUEST_TIMEOUT) as http:
        for ledger in ledgers:
            if not ledger.refresh_token:
                continue
            call = http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}},
                headers={
                    "Authorization": f"Bearer {ledger.access_token}",
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": PROTOCOL_VERSION,
                },
            )
            if call.status_code != 200:
                problems.append(f"{ledger.kind} {ledger.client_id}: its access token got {call.status_code}")
            refreshed = http.post(
                "/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": ledger.refresh_token,
                    "client_id": ledger.client_id,
                    "resource": base + "/mcp",
                },
            )
            if refreshed.status_code != 200:
                problems.append(
                    f"{ledger.kind} {ledger.client_id}: its refresh token got {refreshed.status_code} {refreshed.text[:100]}"
                )
            else:
                tokens = refreshed.json()
                deployment.server.remember(tokens["access_token"], tokens["refresh_token"])
                ledger.access_token, ledger.refresh_token = tokens["access_token"], tokens["refresh_token"]
                ledger.refresh_tokens.append(ledger.refresh_token)
    return problems


def run(
    deployment: Deployment,
    *,
    seconds: float,
    clients: int,
    outage_at: float | None,
    outage_seconds: float,
    think: float = 0.0,
) -> Result:
    """Prepare ``clients`` clients, load the deployment for ``seconds`` (with the outage), check the ledgers."""
    runner = Run(deployment, seconds=seconds, think=think)
    ledgers = runner.prepare(clients)
    result = asyncio.run(runner.load(ledgers, outage_at=outage_at, outage_seconds=outage_seconds))
    result.problems = verify_ledgers(deployment, ledgers)
    return result


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(result: Result) -> dict[str, Any]:
    """The figures: per kind (requests, ok, 503, unexpected by reason, p50/p99), recovery, memory."""
    kinds: dict[str, Any] = {}
    for kind in Kind:
        mine = [o for o in result.outcomes if o.kind == kind]
        latencies = [(o.ended - o.started) * 1000 for o in mine if o.verdict == Verdict.OK]
        kinds[kind] = {
            "requests": len(mine),
            "ok": sum(o.verdict == Verdict.OK for o in mine),
            "unavailable": sum(o.verdict == Verdict.UNAVAILABLE for o in mine),
            "unexpected": dict(Counter(o.detail for o in mine if o.verdict == Verdict.UNEXPECTED)),
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
        }
    ok = [(o.ended - o.started) * 1000 for o in result.outcomes if o.verdict == Verdict.OK]
    memory = {}
    for pid, samples in result.memory.items():
        # The first quarter is warm-up (imports, caches, connections); growth is measured after it,
        # and over the second half alone, which shows whether it levels off.
        quarter, half = samples[len(samples) // 4], samples[len(samples) // 2]
        memory[pid] = {
            "first_mib": samples[0] / 1024,
            "quarter_mib": quarter / 1024,
            "half_mib": half / 1024,
            "end_mib": samples[-1] / 1024,
            "peak_mib": max(samples) / 1024,
            "growth_mib": (samples[-1] - quarter) / 1024,
            "second_half_mib": (samples[-1] - half) / 1024,
        }
    return {
        "seconds": result.seconds,
        "clients": result.clients,
        "requests": len(result.outcomes),
        "per_second": len(result.outcomes) / result.seconds if result.seconds else 0.0,
        "unexpected": len(result.unexpected()),
        "p50_ms": percentile(ok, 0.50),
        "p99_ms": percentile(ok, 0.99),
        "kinds": kinds,
        "outage": vars(result.outage),
        "recovery_seconds": result.recovery_seconds(),
        "memory": memory,
        "pg_max_connections": result.pg_max_connections,
        "connections_peak": max(result.connections, default=0),
        "connections_end": result.connections[-1] if result.connections else 0,
        "problems": result.problems,
    }


def markdown(figures: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"{figures['clients']} clients, {figures['seconds']:.0f} s, PostgreSQL max_connections"
        f" {figures['pg_max_connections']}: {figures['requests']} requests"
        f" ({figures['per_second']:.0f}/s), {figures['unexpected']} unexpected;"
        f" p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms (successful requests).",
        "",
        "| kind | requests | ok | 503 during the outage | unexpected | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for kind, k in figures["kinds"].items():
        unexpected = ", ".join(f"{count} {reason}" for reason, count in k["unexpected"].items()) or "0"
        lines.append(
            f"| {kind} | {k['requests']} | {k['ok']} | {k['unavailable']} | {unexpected} |"
            f" {k['p50_ms']:.1f} | {k['p99_ms']:.1f} |"
        )
    outage = figures["outage"]
    lines.append("")
    if outage.get("back") is not None:
        lines.append(
            f"Database outage: stopped at {outage['stopping']:.1f} s (down at {outage['stopped']:.1f} s),"
            f" back at {outage['back']:.1f} s; recovery (last failed request answered after it returned):"
            f" {figures['recovery_seconds']:.2f} s."
        )
    else:
        lines.append("No database outage in this run.")
    lines += [
        "",
        "VmRSS of each worker in MiB, sampled every second: at the start of the load, after a quarter and half"
        " of it, at the end; growth from the quarter mark (after warm-up) and over the second half.",
        "",
        "| worker | start | 1/4 | 1/2 | end | peak | growth from 1/4 | growth in 2nd half |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pid, m in figures["memory"].items():
        lines.append(
            f"| {pid} | {m['first_mib']:.1f} | {m['quarter_mib']:.1f} | {m['half_mib']:.1f} | {m['end_mib']:.1f}"
            f" | {m['peak_mib']:.1f} | {m['growth_mib']:+.1f} | {m['second_half_mib']:+.1f} |"
        )
    lines += [
        "",
        f"PostgreSQL sessions held by the workers: at most {figures['connections_peak']},"
        f" {figures['connections_end']} at the end.",
    ]
    lines += ["", f"Ledger check (tokens lost or duplicated): {'; '.join(figures['problems']) or 'none'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (default 60)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--outage-seconds", type=float, default=3.0, help="how long PostgreSQL stays down (default 3)")
    parser.add_argument("--no-outage", action="store_true", help="keep PostgreSQL up throughout")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between a client's requests (default 0)")
    parser.add_argument("--max-growth-mib", type=float, default=20.0, help="allowed VmRSS growth per worker")
    parser.add_argument("--markdown", type=Path, help="also write the figures as markdown to this file")
    parser.add_argument("--keep-log", type=Path, help="copy gunicorn's log here")
    parser.add_argument("--memory-json", type=Path, help="write every worker's VmRSS samples (KiB, 1/s) here")
    parser.add_argument(
        "--pg-max-connections",
        type=int,
        default=100,
        help="PostgreSQL's max_connections (default 100, PostgreSQL's own default)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server, e.g. MCPGATE_DB_CONN_MAX_AGE=0 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 600 or args.clients < 1 or args.clients > 200:
        parser.error("--seconds must be in (0, 600] and --clients in [1, 200]: this is a bounded run")
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    overrides = dict(item.partition("=")[::2] for item in args.env)
    if not all(name.startswith("MCPGATE_") for name in overrides):
        parser.error("--env sets MCPGATE_* settings only")
    # Production's level (the fault tests keep the test servers' DEBUG, where a leak would show first).
    overrides = {"MCPGATE_LOG_LEVEL": "INFO", **overrides}
    with (
        tempfile.TemporaryDirectory(prefix="mcpgate-soak-") as tmp,
        deployment(log_dir=Path(tmp), overrides=overrides, max_connections=args.pg_max_connections) as deployed,
    ):
        print(f"soak: {args.clients} clients for {args.seconds:.0f} s against {deployed.server.internal}", flush=True)
        result = run(
            deployed,
            seconds=args.seconds,
            clients=args.clients,
            outage_at=None if args.no_outage else args.seconds / 2,
            outage_seconds=args.outage_seconds,
            think=args.think_ms / 1000,
        )
        leaked = deployed.server.leaked()
        tracebacks = deployed.server.log().count("Traceback")
        if args.keep_log:
            args.keep_log.write_text(deployed.server.log())
    figures = summary(result)
    if args.memory_json:
        args.memory_json.write_text(json.dumps({str(pid): samples for pid, samples in result.memory.items()}))
    text = markdown(figures, command.strip())
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    failures = []
    if figures["unexpected"]:
        failures.append(f"{figures['unexpected']} unexpected responses")
    if figures["problems"]:
        failures.append("ledger: " + "; ".join(figures["problems"]))
    recovery = figures["recovery_seconds"]
    if recovery is not None and recovery > RECOVERY_LIMIT:
        failures.append(f"recovery took {recovery:.1f} s (limit {RECOVERY_LIMIT:.0f} s)")
    grown = [pid for pid, m in figures["memory"].items() if m["growth_mib"] > args.max_growth_mib]
    if grown:
        failures.append(f"workers {grown} grew by more than {args.max_growth_mib} MiB")
    if leaked:
        failures.append(f"gunicorn's log holds credentials: {leaked}")
    if tracebacks:
        failures.append(f"gunicorn's log holds {tracebacks} tracebacks")
    if failures:
        print("soak FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
