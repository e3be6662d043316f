"""Rate limits: fixed-window counters in Django's cache, counted by django-ratelimit's core.

Each limit counts requests per key (a client address, a client_id, a person, an access token) in
fixed windows of its rate's period (django-ratelimit gives each key its own offset within the
period, so windows do not all end together). A count is one ``cache.add`` and one ``cache.incr``
(``django_ratelimit.core.get_usage``); with an atomic incr shared by every worker (diskcache's
SQLite files on one host, Redis across replicas: see ``mcpgate.settings.envcache``) no more than
the limit is ever admitted per window, however many requests arrive at once. Refusals are 429
with ``Retry-After`` (RFC 6585 §4, RFC 9110 §10.2.3): what is refused is shaped by the route,
see ``mcpgate.ratelimit_middleware`` and ``mcp_bridge.endpoint``.

When the cache cannot be reached the request is admitted and the failure logged: a cache outage
must not become an outage of the authorization server. The secrets, codes and tokens the limits
protect are high-entropy and stay checked; what is lost for that time is only the ceiling.

The same counters bound what anonymous callers can make the audit trail write
(``audit_allowance``, used by ``audit.services.audit_record``).

One count is kept elsewhere: on PostgreSQL, /mcp's per access token, by the token lookup's own
statement (``mcp_bridge.tokens``, ``mcp_bridge.models.TokenCalls``), in the window ``window`` places
as django-ratelimit would. It is the one limit counted on every request of the hot path: in the cache
it cost a worker about a quarter of its /mcp throughput (BENCHMARKS.md), in the lookup next to nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django_ratelimit.core import _get_window, _split_rate, get_usage

logger = logging.getLogger(__name__)

# An IPv6 client is counted by its /64: one subscriber's allocation (RFC 6177 §2, RFC 7934 §6),
# which its owner can spread requests over at will.
IPV6_PREFIX = 64
# How long a count of suppressed audit rows waits for the next row of its kind and address.
SUPPRESSED_AUDIT_TTL = 24 * 3600


class KeyKind(StrEnum):
    """What a limit counts by (in logs, audit details and messages)."""

    ADDRESS = "address"
    CLIENT = "client"
    PERSON = "person"
    ACCESS_TOKEN = "access_token"  # noqa: S105 - the name of a key kind, not a credential


@dataclass(frozen=True)
class Limit:
    """One rate limit: the route it guards, what it counts by, and the setting holding its rate."""

    route: str
    key: KeyKind
    setting: str
    noun: str  # what is counted, for messages: "too many <noun> from this address"

    @property
    def rate(self) -> str:
        """The rate as django-ratelimit reads it (validated at start-up by ``envrate``)."""
        value = getattr(settings, self.setting)
        # MCPGATE_REGISTRATION_RATE_PER_MINUTE predates the others and is a bare number per minute.
        return f"{value}/m" if isinstance(value, int) else str(value)

    @property
    def group(self) -> str:
        return f"mcpgate.{self.route}.{self.key}"


REGISTER = Limit("register", KeyKind.ADDRESS, "MCPGATE_REGISTRATION_RATE_PER_MINUTE", "registrations")
TOKEN_BY_ADDRESS = Limit("token", KeyKind.ADDRESS, "MCPGATE_RATE_LIMIT_TOKEN", "token requests")
TOKEN_BY_CLIENT = Limit("token", KeyKind.CLIENT, "MCPGATE_RATE_LIMIT_TOKEN_CLIENT", "token requests")
REVOKE = Limit("revoke", KeyKind.ADDRESS, "MCPGATE_RATE_LIMIT_REVOKE", "revocation requests")
AUTHORIZE_BY_PERSON = Limit("authorize", KeyKind.PERSON, "MCPGATE_RATE_LIMIT_AUTHORIZE", "authorization requests")
AUTHORIZE_BY_ADDRESS = Limit("authorize", KeyKind.ADDRESS, "MCPGATE_RATE_LIMIT_AUTHORIZE", "authorization requests")
LOGIN = Limit("login", KeyKind.ADDRESS, "MCPGATE_RATE_LIMIT_LOGIN", "sign-in attempts")
MCP = Limit("mcp", KeyKind.ACCESS_TOKEN, "MCPGATE_RATE_LIMIT_MCP", "requests")
AUDIT = Limit("audit", KeyKind.ADDRESS, "MCPGATE_AUDIT_ANONYMOUS_RATE", "audit events")


@dataclass(frozen=True)
class Verdict:
    """A key's count in the current window, after this request."""

    count: int
    limit: int
    retry_after: int  # whole seconds until the window ends (at least 1)

    @property
    def refused(self) -> bool:
        return self.count > self.limit

    @property
    def first_refusal(self) -> bool:
        """The one refused request of the window (incr is atomic): the one that is audited."""
        return self.count == self.limit + 1


def address_key(ip: str | None) -> str | None:
    """A client address as it is counted: IPv4 as is, IPv6 by its /64; None when unknown.

    An address that does not parse (a misconfigured proxy's X-Forwarded-For) is counted as written.
    """
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


def _usage(limit: Limit, value: str, request: HttpRequest | None, *, increment: bool) -> Verdict | None:
    try:
        # The request is only handed back to key callables (ours ignores it): the audit writer
        # counts without one.
        usage: dict[str, Any] | None = get_usage(
            request, group=limit.group, key=lambda _group, _request: value, rate=limit.rate, increment=increment
        )
    except Exception as exc:  # the cache is unreachable or broken: admit, say so
        logger.error("rate limit %s not counted (%s: %s); request admitted", limit.group, type(exc).__name__, exc)
        return None
    if usage is None:  # a counter that vanished mid-count (RATELIMIT_FAIL_OPEN)
        return None
    return Verdict(count=int(usage["count"]), limit=int(usage["limit"]), retry_after=max(1, int(usage["time_left"])))


@dataclass(frozen=True)
class Window:
    """The fixed window a key is counted in at this moment."""

    limit: int  # requests admitted in it
    end: int  # when it ends, seconds since the epoch
    left: int  # whole seconds until then (at least 1)


def window(limit: Limit, value: str) -> Window:
    """The window ``value`` is counted in now under ``limit``, for counts kept outside the cache
    (``mcp_bridge.tokens``): django-ratelimit's own, placed by its ``_split_rate`` and ``_get_window`` (the
    period's edges from the epoch, shifted per key by the key's CRC-32 so that windows do not all end
    together). Both are private to django-ratelimit, which ``requirements.txt`` pins;
    tests/mcp_bridge/test_token_calls.py holds the window to the one the library counts in."""
    count, period = _split_rate(limit.rate)
    end = _get_window(value, period)
    return Window(limit=count, end=end, left=max(1, end - int(time.time())))


def counted(window: Window, count: int) -> Verdict:
    """The verdict on a request that made ``count`` in ``window`` (counted elsewhere than the cache)."""
    return Verdict(count=count, limit=window.limit, retry_after=window.left)


def hit(limit: Limit, value: str, request: HttpRequest | None = None) -> Verdict | None:
    """Count one request against ``limit`` for the key ``value``; None when it could not be counted."""
    return _usage(limit, value, request, increment=True)


def peek(limit: Limit, value: str) -> Verdict | None:
    """The current window's count for ``value`` without counting (tests, diagnostics)."""
    return _usage(limit, value, None, increment=False)


def _seconds(n: int) -> str:
    return "1 second" if n == 1 else f"{n} seconds"


_WHOSE = {
    KeyKind.ADDRESS: "from this address",
    KeyKind.CLIENT: "for this client",
    KeyKind.PERSON: "from you",
    KeyKind.ACCESS_TOKEN: "with this access token",
}


def refusal_message(limit: Limit, verdict: Verdict) -> str:
    """What a refused caller is told: which limit, and when to try again (as Retry-After says)."""
    return f"Too many {limit.noun} {_WHOSE[limit.key]}; try again in {_seconds(verdict.retry_after)}."


def note_refusal(limit: Limit) -> dict[str, str]:
    """Log a refusal for metrics (route and key kind, never the key) and return its audit detail."""
    logger.warning("rate limited: route=%s key=%s rate=%s", limit.route, limit.key, limit.rate)
    return {"route": limit.route, "key": str(limit.key), "rate": limit.rate}


# ---------------------------------------------------------------------------
# What anonymous callers can make the audit trail write.
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditAllowance:
    write: bool
    suppressed_before: int  # rows of this kind from this address counted but not written before this one


def audit_allowance(*, event: str, ip: str) -> AuditAllowance:
    """May an audit row of ``event`` caused by nobody signed in, from ``ip``, be written now?

    At most MCPGATE_AUDIT_ANONYMOUS_RATE rows per event kind and address per window. Beyond
    that the rows are counted instead, and the count goes on the next row written for the same
    kind and address, so the trail still says how many there were. Unknown to the cache: written.
    """
    value = f"{event}|{address_key(ip)}"
    verdict = hit(AUDIT, value)
    pending = "mcpgate:audit-suppressed:" + hashlib.sha256(value.encode()).hexdigest()
    try:
        cache = caches[settings.RATELIMIT_USE_CACHE]
        if verdict is not None and verdict.refused:
            if verdict.first_refusal:
                logger.warning("audit: further %s events from one address are counted, not written, this window", event)
            cache.add(pending, 0, timeout=SUPPRESSED_AUDIT_TTL)
            cache.incr(pending)
            return AuditAllowance(write=False, suppressed_before=0)
        suppressed = int(cache.get(pending) or 0)
        if suppressed:
            # Subtract what was read rather than deleting: rows suppressed meanwhile stay counted.
            cache.decr(pending, suppressed)
        return AuditAllowance(write=True, suppressed_before=suppressed)
    except Exception as exc:  # the cache is unreachable or broken: write the row
        logger.error("audit rate for %s not counted (%s: %s); row written", event, type(exc).__name__, exc)
        return AuditAllowance(write=True, suppressed_before=0)
