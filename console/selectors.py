"""Reads for the operators' console: the overview, a client's timeline. Writes live in services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q
from django.db.models.functions import TruncHour
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, User

# Events that belong to a client's flight, in the order a working client goes through them.
TIMELINE_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Registered", ("register", "client_created")),
    ("Registration refused", ("register_refused",)),
    ("Consent page shown", ("consent_shown",)),
    ("Approved", ("consent_given", "consent_remembered")),
    ("Refused by the person", ("consent_refused",)),
    ("Authorization errors", ("authorize_error",)),
    ("Token issued", ("token_issued",)),
    ("Token refreshed", ("token_refreshed",)),
    ("Token requests refused", ("token_error", "refresh_reuse", "code_reuse")),
    ("/mcp tool calls", ("tool_call",)),
)
# The steps a client must reach to work; the first one missing is where it stalled.
HAPPY_PATH = ("Registered", "Consent page shown", "Approved", "Token issued", "/mcp tool calls")


@dataclass(frozen=True)
class Stage:
    label: str
    count: int
    first: datetime | None
    last: datetime | None
    problem: bool


def client_timeline(*, client: Client) -> tuple[list[Stage], str | None]:
    """The client's stages from AuditEvent (one query) and the first happy-path step never reached."""
    rows = {
        row["event"]: row
        for row in AuditEvent.objects.filter(client=client)
        .values("event")
        .annotate(n=Count("id"), first=Min("created"), last=Max("created"))
        .order_by()
    }
    stages = []
    for label, events in TIMELINE_STAGES:
        found = [rows[e] for e in events if e in rows]
        stages.append(
            Stage(
                label=label,
                count=sum(r["n"] for r in found),
                first=min((r["first"] for r in found), default=None),
                last=max((r["last"] for r in found), default=None),
                problem=label.endswith(("refused", "errors", "person")),
            )
        )
    reached = {s.label for s in stages if s.count}
    if client.registration_source != Client.RegistrationSource.DCR:
        reached.add("Registered")  # operator-made and metadata-document clients may predate the audit
    stalled = next((step for step in HAPPY_PATH if step not in reached), None)
    return stages, stalled


PROBLEM_EVENTS = (
    "register_refused",
    "consent_refused",
    "authorize_error",
    "token_error",
    "refresh_reuse",
    "code_reuse",
)


def client_recent_problems(*, client: Client, limit: int = 10) -> list[AuditEvent]:
    """The client's latest refusals and errors, newest first, for "why does it not connect"."""
    return list(AuditEvent.objects.filter(client=client, event__in=PROBLEM_EVENTS).order_by("-created")[:limit])


def tool_calls_per_hour(*, hours: int = 24) -> list[tuple[datetime, int]]:
    """Tool calls in each of the last ``hours`` hours (oldest first), zeros included."""
    now = timezone.now()
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    counts = {
        row["hour"]: row["n"]
        for row in AuditEvent.objects.filter(event=AuditKind.TOOL_CALL, created__gte=start)
        .annotate(hour=TruncHour("created"))
        .values("hour")
        .annotate(n=Count("id"))
        .order_by()
    }
    return [(start + timedelta(hours=i), counts.get(start + timedelta(hours=i), 0)) for i in range(hours)]


def overview() -> dict[str, Any]:
    """The counts on the console's front page."""
    now = timezone.now()
    day_ago = now - timedelta(hours=24)
    live_access = get_access_token_model().objects.filter(user__isnull=False, expires__gt=now)
    kinds = dict(Client.objects.values_list("registration_source").annotate(n=Count("id")).order_by())
    per_hour = tool_calls_per_hour()
    return {
        "people": User.objects.filter(is_active=True).count(),
        "people_active_24h": AuditEvent.objects.filter(created__gte=day_ago, user__isnull=False)
        .values("user")
        .distinct()
        .count(),
        "people_with_tokens": live_access.values("user").distinct().count(),
        "clients_by_kind": [(label, kinds.get(value, 0)) for value, label in CLIENT_KINDS.items()],
        "clients_disabled": Client.objects.filter(disabled=True).count(),
        "live_access_tokens": live_access.count(),
        "live_refresh_tokens": get_refresh_token_model()
        .objects.filter(revoked__isnull=True, user__isnull=False)
        .count(),
        "tool_calls_24h": sum(n for _, n in per_hour),
        "tool_call_errors_24h": AuditEvent.objects.filter(event=AuditKind.TOOL_CALL, created__gte=day_ago)
        .filter(~Q(detail__outcome="ok"))
        .count(),
        "per_hour": per_hour,
    }


# How each registration source is shown to operators.
CLIENT_KINDS = {
    Client.RegistrationSource.DCR: "dynamic registration",
    Client.RegistrationSource.CIMD: "metadata document",
    Client.RegistrationSource.MANUAL: "operator",
}
