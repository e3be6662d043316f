"""The audit trail in the console: read-only, filterable, exportable as CSV."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

from audit.models import AuditEvent, AuditKind
from console.selectors import AuditRow, audit_events_page
from mcpgate.errors import TRANSIENT_DATABASE_ERRORS, break_off
from mcpgate.threads import in_worker_thread
from oauth_ext.models import Client, User

from .common import ReadOnlyAdmin

logger = logging.getLogger(__name__)

# Events per query of a CSV export: what a worker holds in memory at a time, whatever the trail's size.
EXPORT_PAGE_SIZE = 2000


class EventFilter(admin.SimpleListFilter):
    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(AuditKind.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        return queryset.filter(event=self.value()) if self.value() else queryset


class RecentFilter(admin.SimpleListFilter):
    """A filter on a related row offering only the most recent few, as the audit table is large.

    Django's RelatedOnlyFieldListFilter would scan the whole audit trail for distinct values on
    every page; any row can still be chosen by its id (links from the client and people pages).
    """

    limit = 25

    def choices_queryset(self) -> QuerySet[Any]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(row.pk), str(row)) for row in self.choices_queryset()[: self.limit]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        value = self.value()
        if value is None:
            return queryset
        field = str(self.parameter_name).split("__")[0]
        return queryset.filter(**{f"{field}_id": int(value)}) if str(value).isdigit() else queryset.none()


class PersonFilter(RecentFilter):
    title = "person (latest signed in)"
    parameter_name = "user__id__exact"

    def choices_queryset(self) -> QuerySet[Any]:
        return User.objects.order_by(F("last_login").desc(nulls_last=True), "username")


class ClientFilter(RecentFilter):
    title = "client (latest used)"
    parameter_name = "client__id__exact"

    def choices_queryset(self) -> QuerySet[Any]:
        return Client.objects.order_by(F("last_used_at").desc(nulls_last=True), "-created")


CSV_COLUMNS = ("created", "event", "email", "client_label", "client_id", "host", "ip", "detail")


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_row(writer: Any, event: AuditRow) -> str:
    values = (event.event, event.email, event.client_label, event.client_id or "", event.host, event.ip or "")
    return str(writer.writerow([event.created.isoformat(), *map(_cell, values), _cell(event.detail)]))


async def _csv_lines(request: HttpRequest, events: QuerySet[AuditEvent], first: list[AuditRow]) -> AsyncIterator[str]:
    """The CSV, a page of ``EXPORT_PAGE_SIZE`` events at a time, each page read in a worker thread when
    the one before has been handed to the server.

    An asynchronous iterator, because that is what Django's ASGI handler streams; a synchronous one it
    reads whole into memory first (``StreamingHttpResponse.__aiter__``), however large the trail. A
    database that fails part way breaks the download off (``mcpgate.errors.break_off``): the client
    sees it fail rather than keep a file that looks whole.
    """
    writer = csv.writer(_Echo())
    yield str(writer.writerow(CSV_COLUMNS))
    page, sent = first, 0
    while page:
        yield "".join(_csv_row(writer, event) for event in page)
        sent += len(page)
        if len(page) < EXPORT_PAGE_SIZE:
            return
        try:
            page = await in_worker_thread(audit_events_page)(events=events, after=page[-1], size=EXPORT_PAGE_SIZE)
        except TRANSIENT_DATABASE_ERRORS as exc:
            logger.warning(
                "database unavailable (%s) during an audit export: broken off after %d events",
                type(exc).__name__,
                sent,
            )
            break_off(request)
            return


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "event_name", "email", "client_label", "host", "ip", "detail_summary")
    list_filter = (
        EventFilter,
        "host",
        ("created", admin.DateFieldListFilter),
        PersonFilter,
        ClientFilter,
    )
    search_fields = ("email", "client_label")
    date_hierarchy = "created"
    show_full_result_count = False
    list_per_page = 100

    @admin.display(description="event", ordering="event")
    def event_name(self, obj: AuditEvent) -> str:
        return obj.get_event_display()

    @admin.display(description="detail")
    def detail_summary(self, obj: AuditEvent) -> str:
        return ", ".join(f"{k}={v}" for k, v in (obj.detail or {}).items())[:200]

    def get_urls(self) -> list[Any]:
        export = path("export.csv", self.admin_site.admin_view(self.export_csv), name="audit_auditevent_export")
        return [export, *super().get_urls()]

    def export_csv(self, request: HttpRequest) -> StreamingHttpResponse:
        """The changelist's rows, with its filters and search applied, newest first, streamed as CSV.

        The first page is read here, before anything is sent, so that a database away at the start is
        the site's 503 page (``mcpgate.errors.server_error``), not a broken download.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        events = self.get_changelist_instance(request).get_queryset(request)
        first = audit_events_page(events=events, after=None, size=EXPORT_PAGE_SIZE)
        response = StreamingHttpResponse(_csv_lines(request, events, first), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="mcpgate-audit.csv"'
        return response


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would take for a formula gets a leading quote (CSV injection)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
