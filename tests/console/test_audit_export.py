"""The audit trail's CSV export as the site serves it (ASGI): streamed a page at a time, broken off on an outage."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from console import selectors
from console.admin import audit as export
from mcpgate.asgi import application
from tests.asgi import http_scope, worker_threads_closed
from tests.conftest import INTERNAL, PROXY_ADDR
from tests.personas import OLIVIA

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

EXPORT = reverse("admin:audit_auditevent_export")
PAGE = 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def operators(settings: Any) -> None:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]


@pytest.fixture(autouse=True)
async def threads() -> AsyncIterator[None]:
    async with worker_threads_closed():
        yield


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "EXPORT_PAGE_SIZE", PAGE)


class Exchange:
    """One request to the site's ASGI application (``mcpgate.asgi``), as uvicorn drives it: what it sent, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.order: list[str] = []  # "page" (a query of the export) and "send" (a body message), interleaved

    async def run(self, path: str, query: str = "") -> None:
        headers = [(b"host", INTERNAL.encode()), (b"x-forwarded-email", OLIVIA.encode())]
        scope = http_scope("GET", path, headers, query=query.encode(), client=(PROXY_ADDR, 50000))
        received = False
        connected = asyncio.Event()  # never set: the client stays until the response is done

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await connected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            self.messages.append(message)
            if message["type"] == "http.response.body":
                self.order.append("send")

        await application(scope, receive, send)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def complete(self) -> bool:
        """The last body message said there is no more (what a server turns into the chunked body's end)."""
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)

    def rows(self) -> list[list[str]]:
        return list(csv.reader(io.StringIO(self.body.decode())))


@pytest.fixture
def pages(monkeypatch: pytest.MonkeyPatch) -> Exchange:
    """An exchange that notes each page the export reads, among the messages it sends."""
    exchange = Exchange()
    read = selectors.audit_events_page

    def noted(**kwargs: Any) -> list[selectors.AuditRow]:
        exchange.order.append("page")
        return read(**kwargs)

    monkeypatch.setattr(export, "audit_events_page", noted)
    return exchange


def trail(count: int) -> list[AuditEvent]:
    """``count`` events, two by two at the same instant (the order must not rest on the time alone), oldest first."""
    start = timezone.now() - timedelta(hours=1)
    return [
        AuditEvent.objects.create(
            event=AuditKind.TOOL_CALL, email=f"person{i}@example.com", created=start + timedelta(seconds=i // 2)
        )
        for i in range(count)
    ]


async def test_export_sends_every_event_once_newest_first_across_pages(pages: Exchange) -> None:
    events = await asyncio.to_thread(trail, 8)
    await pages.run(EXPORT, "event=tool_call")
    assert pages.status == 200
    assert pages.headers["content-type"] == "text/csv; charset=utf-8"
    assert pages.complete
    rows = pages.rows()
    assert rows[0][:3] == ["created", "event", "email"]
    newest_first = sorted(events, key=lambda e: (e.created, e.pk), reverse=True)
    assert [row[2] for row in rows[1:]] == [e.email for e in newest_first]


async def test_export_reads_each_page_after_the_one_before_is_sent(pages: Exchange) -> None:
    """Streamed: a page is read only once the page before it is out, so a worker holds one page at a time.
    (A synchronous iterator would have been read whole before the first byte: Django's ASGI handler
    consumes one into a list.)"""
    await asyncio.to_thread(trail, 7)
    await pages.run(EXPORT, "event=tool_call")
    # The first page is read by the view, before the response starts; a short third page ends it.
    assert pages.order == ["page", "send", "send", "page", "send", "page", "send", "send"]
    assert len(pages.rows()) == 1 + 7


async def test_export_of_a_filtered_list_pages_within_the_filter(pages: Exchange) -> None:
    await asyncio.to_thread(trail, 5)
    await asyncio.to_thread(lambda: AuditEvent.objects.create(event=AuditKind.SIGN_IN, email=OLIVIA))
    await pages.run(EXPORT, "event=sign_in")
    assert [row[1] for row in pages.rows()[1:]] == ["sign_in"] * 2  # Olivia's own sign-in, and the one above


async def test_export_broken_off_when_the_database_fails_part_way(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The status and the first rows are out: the response is left incomplete (the server closes the
    connection without the last chunk: a failed download, not a short file that looks whole), with one
    warning line and no traceback."""
    await asyncio.to_thread(trail, 8)
    read = selectors.audit_events_page
    calls = 0

    def failing(**kwargs: Any) -> list[selectors.AuditRow]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OperationalError("terminating connection due to administrator command")
        return read(**kwargs)

    monkeypatch.setattr(export, "audit_events_page", failing)
    exchange = Exchange()
    with caplog.at_level(logging.INFO):
        await exchange.run(EXPORT, "event=tool_call")
    assert exchange.status == 200
    assert not exchange.complete
    assert len(exchange.rows()) == 1 + PAGE
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "database unavailable (OperationalError) during an audit export: broken off after 3 events"
    ]
    assert warnings[0].exc_info is None


async def test_export_when_the_database_is_away_at_the_start_is_the_503_page(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(**kwargs: Any) -> list[selectors.AuditRow]:
        raise OperationalError("connection refused")

    monkeypatch.setattr(export, "audit_events_page", failing)
    exchange = Exchange()
    await exchange.run(EXPORT)
    assert exchange.status == 503
    assert exchange.headers["retry-after"] == "5"
    assert exchange.headers["content-type"].startswith("text/html")
    assert exchange.complete
