"""Log formatting: MCPGATE_LOG_FORMAT=json writes one JSON object per line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest
from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger's formatter with mcpgate's fields.

    Each line: ``timestamp`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, the exception
    if any, whatever ``extra`` the call passed, and ``trace_id``/``span_id`` (W3C Trace Context
    hex) while a recording span is current, so a line can be found from its trace and back.
    Django's ``request`` extra is written as method and path, never the query string.
    What is logged is the callers' business: none of them puts a token, code or secret in a
    message (tests/mcpgate/test_logs.py watches a real exchange for it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(message)s")
        super().__init__(*args, **kwargs)

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_record["timestamp"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        super().add_fields(log_record, record, message_dict)
        request = log_record.get("request")
        if isinstance(request, HttpRequest):
            # django.request passes the request as an extra; its repr is the full path, query
            # string included (a code or token a client wrongly put in a URL): method and path only.
            log_record["request"] = f"{request.method} {request.path}"
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            log_record["trace_id"] = trace.format_trace_id(context.trace_id)
            log_record["span_id"] = trace.format_span_id(context.span_id)
