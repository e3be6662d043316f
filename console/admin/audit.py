"""The audit trail in the console: read-only, filterable, exportable as CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, User

from .common import ReadOnlyAdmin


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
        """The changelist's rows, with its filters and search applied, streamed as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        rows = changelist.get_queryset(request).select_related("client").order_by("-created")
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            yield writer.writerow(CSV_COLUMNS)
            for event in rows.iterator(chunk_size=2000):
                client_id = event.client.client_id if event.client else ""
                values = (event.event, event.email, event.client_label, client_id, event.host, event.ip or "")
                yield writer.writerow([event.created.isoformat(), *map(_cell, values), _cell(event.detail)])

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="mcpgate-audit.csv"'
        return response


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would take for a formula gets a leading quote (CSV injection)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
