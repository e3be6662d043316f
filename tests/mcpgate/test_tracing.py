"""Traces: off unless configured; on, a /mcp request is a span tree under the caller's trace context.

Spans are caught with the OpenTelemetry SDK's in-memory exporter on the process's provider. The
``mcp`` SDK adds its own SERVER span per JSON-RPC message (``tools/call whoami``); mcpgate's
spans are the HTTP request, its admission, the tool's run and each database query.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client as HttpClient
from mcp.server import _otel as mcp_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mcpgate.observability import tracing
from tests.conftest import INTERNAL
from tests.mcp_bridge.conftest import bearer, call, envelope, modern, rpc

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
META_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
META_PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, every finished span in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    tracing.install(TracerProvider(), SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.state.enabled = False
        exporter.shutdown()  # what the SDK's own spans do later in the run is not kept


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# ---------------------------------------------------------------------------
# /mcp
# ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_an_mcp_request_is_a_server_span_under_the_traceparent_header(spans, mcp, alice_token) -> None:
    response = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token, traceparent=TRACEPARENT))

    assert response.status_code == 200
    request = by_name(spans)["POST /mcp"]
    assert request.kind == SpanKind.SERVER
    assert hex_trace(request) == TRACE_ID
    assert parent_of(request) == int(PARENT_ID, 16)
    assert request.parent is not None and request.parent.is_remote
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200


@pytest.mark.anyio
async def test_admission_is_a_child_of_the_request_with_the_token_lookup_under_it(spans, mcp, alice_token) -> None:
    await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token, traceparent=TRACEPARENT))

    found = by_name(spans)
    # On PostgreSQL the lookup is the statement that also counts the call (WITH … INSERT … SELECT: mcp_bridge.tokens).
    request, admission = found["POST /mcp"], found["mcp admission"]
    lookup = found["db WITH" if connection.vendor == "postgresql" else "db SELECT"]
    assert parent_of(admission) == request.context.span_id
    assert parent_of(lookup) == admission.context.span_id
    assert lookup.kind == SpanKind.CLIENT
    assert lookup.attributes is not None and "oauth2_provider_accesstoken" in str(lookup.attributes["db.query.text"])
    assert alice_token not in json.dumps(dict(lookup.attributes))
    assert {hex_trace(admission), hex_trace(lookup)} == {TRACE_ID}


@pytest.mark.anyio
@pytest.mark.parametrize("modern_era", [False, True], ids=["2025", "2026-07-28"])
async def test_the_sdks_message_span_nests_under_the_request_and_the_tool_run_under_it(
    spans, mcp, alice_token, modern_era
) -> None:
    if modern_era:
        body = rpc("tools/call", envelope({"name": "whoami", "arguments": {}}))
        headers = modern(alice_token, "tools/call", "whoami", traceparent=TRACEPARENT)
    else:
        body, headers = call("whoami"), bearer(alice_token, traceparent=TRACEPARENT)

    response = await mcp.post("/mcp", json=body, headers=headers)

    assert response.status_code == 200
    found = by_name(spans)
    request, message, run, audit = (
        found["POST /mcp"],
        found["tools/call whoami"],
        found["mcp tool whoami"],
        found["db INSERT"],
    )
    assert parent_of(message) == request.context.span_id  # the SDK's, not duplicated by mcpgate
    assert parent_of(run) == message.context.span_id
    assert parent_of(audit) == run.context.span_id
    assert run.attributes is not None and run.attributes["gen_ai.tool.name"] == "whoami"
    assert {hex_trace(message), hex_trace(run), hex_trace(audit)} == {TRACE_ID}


@pytest.mark.anyio
async def test_a_traceparent_in_meta_parents_the_message_and_the_tool_run(spans, mcp, alice_token) -> None:
    """2026-07-28 carries the trace context in ``params._meta``: the SDK's span follows it, the tool run with it."""
    params = envelope({"name": "whoami", "arguments": {}})
    params["_meta"]["traceparent"] = f"00-{META_TRACE_ID}-{META_PARENT_ID}-01"

    response = await mcp.post(
        "/mcp", json=rpc("tools/call", params), headers=modern(alice_token, "tools/call", "whoami")
    )

    assert response.status_code == 200
    found = by_name(spans)
    message, run = found["tools/call whoami"], found["mcp tool whoami"]
    assert (hex_trace(message), parent_of(message)) == (META_TRACE_ID, int(META_PARENT_ID, 16))
    assert parent_of(run) == message.context.span_id
    assert hex_trace(run) == META_TRACE_ID


@pytest.mark.anyio
async def test_a_refused_request_is_one_span_with_its_status(spans, mcp, transactional_db) -> None:
    response = await mcp.post("/mcp", json=call("whoami"), headers=bearer("not-a-token"))

    assert response.status_code == 401
    found = by_name(spans)
    assert found["POST /mcp"].attributes["http.response.status_code"] == 401  # type: ignore[index]
    assert "tools/call whoami" not in found


@pytest.mark.anyio
async def test_with_tracing_off_mcpgate_adds_no_span(spans, mcp, alice_token) -> None:
    tracing.state.enabled = False

    response = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token, traceparent=TRACEPARENT))

    assert response.status_code == 200
    # Only the SDK's own span (it uses the global provider, set by this test) is left.
    assert sorted(by_name(spans)) == ["tools/call whoami"]
    assert tracing.span("a") is tracing.span("b") is tracing.tool_span("c") is tracing.database_spans()


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["none installed", "installed"])
async def test_the_sdks_span_per_message_is_built_only_when_a_tracer_provider_is_installed(
    provider: str, mcp: Any, alice_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mcp_bridge.server.SpansWhileTracing: with no provider the SDK's span could only be a no-op."""
    built: list[str] = []
    real = mcp_otel.otel_span

    def counted(**kwargs: Any) -> Any:
        built.append(kwargs["name"])
        return real(**kwargs)

    monkeypatch.setattr(mcp_otel, "otel_span", counted)
    installed = trace.ProxyTracerProvider() if provider == "none installed" else TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: installed)

    response = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token))

    assert response.status_code == 200 and "alice@example.com" in response.text
    assert built == ([] if provider == "none installed" else ["tools/call whoami"])


# ---------------------------------------------------------------------------
# Django routes
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_django_request_is_a_server_span_named_by_its_route(spans) -> None:
    response = HttpClient().get(
        "/.well-known/oauth-authorization-server", HTTP_HOST=INTERNAL, HTTP_TRACEPARENT=TRACEPARENT
    )

    assert response.status_code == 200
    span = by_name(spans)["GET /.well-known/oauth-authorization-server"]
    assert span.kind == SpanKind.SERVER
    assert (hex_trace(span), parent_of(span)) == (TRACE_ID, int(PARENT_ID, 16))
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/.well-known/oauth-authorization-server"
    assert span.attributes["http.response.status_code"] == 200


# ---------------------------------------------------------------------------
# Configuration, in a fresh process each (the provider is set once per process)
# ---------------------------------------------------------------------------
PROBE = textwrap.dedent(
    """
    import json
    import django
    django.setup()
    from opentelemetry import trace
    from mcpgate.observability import tracing
    provider = trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)
    print(json.dumps({
        "provider": type(provider).__name__,
        "enabled": tracing.enabled(),
        "exporter": type(tracing.state.exporter).__name__ if tracing.state.exporter else None,
        "service": resource.attributes.get("service.name") if resource else None,
    }))
    """
)


def probe(**env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "mcpgate.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_tracing_is_off_by_default() -> None:
    assert probe() == {"provider": "ProxyTracerProvider", "enabled": False, "exporter": None, "service": None}


def test_an_otlp_endpoint_turns_tracing_on_as_mcpgate() -> None:
    assert probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318") == {
        "provider": "TracerProvider",
        "enabled": True,
        "exporter": "OTLPSpanExporter",
        "service": "mcpgate",
    }


def test_a_traces_endpoint_and_a_service_name_are_honoured() -> None:
    found = probe(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:4318/v1/traces", OTEL_SERVICE_NAME="gw-eu")

    assert (found["exporter"], found["service"]) == ("OTLPSpanExporter", "gw-eu")


def test_traces_exporter_none_keeps_tracing_off_despite_an_endpoint() -> None:
    found = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", OTEL_TRACES_EXPORTER="none")

    assert (found["provider"], found["enabled"]) == ("ProxyTracerProvider", False)
