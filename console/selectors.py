"""Reads for the operators' console: the overview, a client's timeline. Writes live in services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from gateway.models import Upstream
from gateway.selectors import failing_upstreams
from oauth_ext.models import Client, User

# How each registration source is shown to operators.
CLIENT_KINDS = {
    Client.RegistrationSource.DCR: "dynamic registration",
    Client.RegistrationSource.CIMD: "metadata document",
    Client.RegistrationSource.MANUAL: "operator",
}


@dataclass(frozen=True)
class TimelineStage:
    """One stage of a client's flight: the audit kinds it counts, and whether they are a problem."""

    label: str
    events: tuple[AuditKind, ...]
    problem: bool = False


# The stages of a client's flight, in the order a working client goes through them.
TIMELINE_STAGES = (
    TimelineStage("Registered", (AuditKind.REGISTER, AuditKind.CLIENT_CREATED)),
    TimelineStage("Registration refused", (AuditKind.REGISTER_REFUSED,), problem=True),
    TimelineStage("Consent page shown", (AuditKind.CONSENT_SHOWN,)),
    TimelineStage("Approved", (AuditKind.CONSENT_GIVEN, AuditKind.CONSENT_REMEMBERED)),
    TimelineStage("Refused by the person", (AuditKind.CONSENT_REFUSED,), problem=True),
    TimelineStage("Authorization errors", (AuditKind.AUTHORIZE_ERROR,), problem=True),
    TimelineStage("Token issued", (AuditKind.TOKEN_ISSUED,)),
    TimelineStage("Token refreshed", (AuditKind.TOKEN_REFRESHED,)),
    TimelineStage(
        "Token requests refused", (AuditKind.TOKEN_ERROR, AuditKind.REFRESH_REUSE, AuditKind.CODE_REUSE), problem=True
    ),
    TimelineStage("/mcp tool calls", (AuditKind.TOOL_CALL,)),
)
# The stages a client must reach to work; the first one missing is where it stalled.
HAPPY_PATH = ("Registered", "Consent page shown", "Approved", "Token issued", "/mcp tool calls")
# The refusals and errors listed under the timeline ("why does it not connect").
PROBLEM_EVENTS = tuple(kind for stage in TIMELINE_STAGES if stage.problem for kind in stage.events)


@dataclass(frozen=True)
class StageCount:
    """How often a client went through one stage, and when first and last."""

    label: str
    count: int
    first: datetime | None
    last: datetime | None
    problem: bool


@dataclass(frozen=True)
class ClientTimeline:
    stages: list[StageCount]
    stalled_before: str | None  # the first happy-path stage never reached; None once /mcp was called
    recent_problems: list[AuditEvent]  # newest first


def client_timeline(*, client: Client, problems: int = 10) -> ClientTimeline:
    """The client's stages from its audit trail (one query), where it stalled, and its latest problems (one more)."""
    rows = {
        row["event"]: row
        for row in AuditEvent.objects.filter(client=client)
        .values("event")
        .annotate(n=Count("id"), first=Min("created"), last=Max("created"))
        .order_by()
    }
    stages = []
    for stage in TIMELINE_STAGES:
        found = [rows[e] for e in stage.events if e in rows]
        stages.append(
            StageCount(
                label=stage.label,
                count=sum(r["n"] for r in found),
                first=min((r["first"] for r in found), default=None),
                last=max((r["last"] for r in found), default=None),
                problem=stage.problem,
            )
        )
    reached = {s.label for s in stages if s.count}
    if client.registration_source != Client.RegistrationSource.DCR:
        reached.add("Registered")  # operator-made and metadata-document clients may predate the audit
    recent_problems = AuditEvent.objects.filter(client=client, event__in=PROBLEM_EVENTS).order_by("-created")
    return ClientTimeline(
        stages=stages,
        stalled_before=next((step for step in HAPPY_PATH if step not in reached), None),
        recent_problems=list(recent_problems[:problems]),
    )


def tool_call_counts_per_hour(*, hours: int = 24) -> list[tuple[datetime, int]]:
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


def console_overview() -> dict[str, Any]:
    """The counts on the console's front page."""
    now = timezone.now()
    day_ago = now - timedelta(hours=24)
    live_access = get_access_token_model().objects.filter(user__isnull=False, expires__gt=now)
    kinds = dict(Client.objects.values_list("registration_source").annotate(n=Count("id")).order_by())
    per_hour = tool_call_counts_per_hour()
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


def upstreams_overview() -> dict[str, Any]:
    """The upstreams on the console's front page: how many serve, and those failing (with their status)."""
    return {
        "enabled": Upstream.objects.filter(enabled=True).count(),
        "disabled": Upstream.objects.filter(enabled=False).count(),
        "failing": failing_upstreams(),
    }


class AuditRow(NamedTuple):
    """One event of the audit trail as the CSV export writes it: its own columns, and its client's id."""

    pk: int
    created: datetime
    event: str
    email: str
    client_label: str
    client_id: str | None
    host: str
    ip: str | None
    detail: Any


def audit_events_page(*, events: QuerySet[AuditEvent], after: AuditRow | None, size: int) -> list[AuditRow]:
    """The next ``size`` events of ``events``, newest first, after the event ``after`` (from the newest when
    None).

    Keyset pagination on (created, id): every page is one short query however deep into the trail it
    is, and no cursor or transaction stays open between pages. Events written while an export runs are
    newer than its first page, so they are not in it; none is repeated or skipped. Rows, not model
    instances: building 2,000 ``AuditEvent``s and their ``Client``s a page cost more than the query.
    """
    if after is not None:
        # "created <= t" on its own, as well: the range an index scan on created starts from. The OR
        # alone is only a filter, and each page would skip every row of the pages before it.
        events = events.filter(created__lte=after.created).filter(Q(created__lt=after.created) | Q(pk__lt=after.pk))
    rows = events.order_by("-created", "-pk").values_list(
        "pk", "created", "event", "email", "client_label", "client__client_id", "host", "ip", "detail"
    )
    return [AuditRow(*row) for row in rows[:size]]
