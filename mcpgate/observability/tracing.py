"""OpenTelemetry traces: off unless an OTLP endpoint or exporter is configured (OTel SDK environment variables).

Switched on by ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER`` (``otlp``, the default, or ``console``; ``none`` keeps it off, as does
``OTEL_SDK_DISABLED=true``). Then one ``TracerProvider`` per process, named by
``OTEL_SERVICE_NAME`` (default "mcpgate"), exporting over OTLP/HTTP through a
``BatchSpanProcessor``; the exporter reads the rest of the ``OTEL_EXPORTER_OTLP_*`` variables
itself (headers, timeout, certificates).

The provider is the global one, so the ``mcp`` SDK's own spans (``mcp.server._otel``: one SERVER
span per JSON-RPC message, parented by ``params._meta.traceparent`` when the client sent one) go
to the same place. mcpgate adds what the SDK cannot see: the HTTP request to /mcp (parented by
the ``traceparent`` header, W3C Trace Context §3.2), its admission, the tool's run and the
database queries, and one span per Django request.

With tracing off nothing here allocates: ``span()`` hands back one shared ``nullcontext``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

TRACER_NAME = "mcpgate"
DEFAULT_SERVICE_NAME = "mcpgate"
# The variables that switch tracing on (OpenTelemetry SDK environment variable specification).
SWITCHES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")


class _State:
    """Per process: whether mcpgate records spans, and the provider it set up (None while off)."""

    enabled: bool = False
    provider: TracerProvider | None = None
    exporter: SpanExporter | None = None
    tracer: trace.Tracer = trace.NoOpTracer()


state = _State()
_NOTHING: AbstractContextManager[Any] = nullcontext()


def enabled() -> bool:
    return state.enabled


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in SWITCHES)


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    kind = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if kind == "otlp":
        protocol = environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        )
        if protocol.strip() != "http/protobuf":
            raise ImproperlyConfigured(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is installed, not {protocol.strip()!r}"
            )
        return OTLPSpanExporter()
    if kind == "console":
        return ConsoleSpanExporter()
    raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER must be otlp, console or none, not {kind!r}")


def configure_from_environment(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Set up tracing once per process if the environment asks for it; the provider, or None (off)."""
    environ = os.environ if environ is None else environ
    if state.provider is not None or not wanted(environ):
        return state.provider
    exporter = _exporter(environ)
    service = environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the service name set here wins over it.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    install(provider, BatchSpanProcessor(exporter))
    state.exporter = exporter
    return provider


def install(provider: TracerProvider, processor: SpanProcessor) -> None:
    """Make ``provider`` (with ``processor``) the process's tracer provider and start recording.

    The global provider can be set once per process (the OpenTelemetry API refuses a second), so
    a later call with another provider only adds its processor to the first.
    """
    if state.provider is None:
        trace.set_tracer_provider(provider)
        state.provider = provider
    state.provider.add_span_processor(processor)
    state.tracer = state.provider.get_tracer(TRACER_NAME)
    state.enabled = True


# ---------------------------------------------------------------------------
# Spans
# ---------------------------------------------------------------------------
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None) -> Any:
    """A child span of the current one, as a context manager; a shared no-op while tracing is off."""
    if not state.enabled:
        return _NOTHING
    return state.tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def tool_span(tool: str) -> Any:
    """The span of one tool's run (validation, the tool, its audit row), under the SDK's tools/call span."""
    if not state.enabled:
        return _NOTHING
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
    return state.tracer.start_as_current_span(f"mcp tool {tool}", attributes=attributes)


class _HeaderListGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads W3C Trace Context headers from an ASGI scope's header list."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted_key = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == wanted_key]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


class _MetaGetter(Getter[Mapping[str, Any]]):
    """Reads W3C Trace Context headers from a WSGI/ASGI ``request.META`` (``HTTP_TRACEPARENT``)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_HEADER_LIST = _HeaderListGetter()
_META = _MetaGetter()


def context_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> Context:
    """The remote parent a request's ``traceparent``/``tracestate`` headers name (W3C Trace Context §3)."""
    return extract(list(headers), getter=_HEADER_LIST)


def context_from_meta(meta: Mapping[str, Any]) -> Context:
    return extract(meta, getter=_META)


@contextmanager
def server_span(name: str, parent: Context, attributes: dict[str, Any]) -> Iterator[trace.Span]:
    """The SERVER span of one HTTP request, under the remote parent its headers named."""
    with state.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes) as s:
        yield s


def set_http_status(current: trace.Span, status: int) -> None:
    """The response status on a SERVER span; 5xx marks it failed (OTel HTTP semantic conventions)."""
    current.set_attribute("http.response.status_code", status)
    if status >= 500:
        current.set_status(Status(StatusCode.ERROR))


# ---------------------------------------------------------------------------
# Database work: one CLIENT span per query, through Django's execute_wrapper hook.
# ---------------------------------------------------------------------------
def query_span(vendor: str, sql: str) -> Any:
    """One query as a CLIENT span (the statement with its placeholders, never the values); no-op while off."""
    if not state.enabled:
        return _NOTHING
    operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    attributes = {
        "db.system.name": vendor,
        "db.operation.name": operation,
        # The statement with its placeholders; the values (a token's checksum) are never recorded.
        "db.query.text": sql[:2000],
    }
    return state.tracer.start_as_current_span(f"db {operation}", kind=SpanKind.CLIENT, attributes=attributes)


def _query_span(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    with query_span(context["connection"].vendor, sql):
        return execute(sql, params, many, context)


def database_spans(alias: str = "default") -> Any:
    """Within this block, each query on this thread's ``alias`` connection is a span; no-op while off."""
    if not state.enabled:
        return _NOTHING
    return connections[alias].execute_wrapper(_query_span)
