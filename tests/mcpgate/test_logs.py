"""MCPGATE_LOG_FORMAT=json: one JSON object per line, with the trace it belongs to, and never a credential."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client as HttpClient

from mcp_bridge.context import ToolContext
from mcp_bridge.registry import registry, tool
from mcpgate.observability import tracing
from mcpgate.observability.logs import JsonFormatter
from oauth_ext.models import Client
from tests.conftest import INTERNAL, LOOPBACK_REDIRECT, Flow
from tests.mcp_bridge.conftest import HANDSHAKE_VERSION, bearer, call, envelope, modern, rpc
from tests.mcp_bridge.test_transport import initialize
from tests.mcpgate import test_tracing as tracing_tests
from tests.mcpgate.test_tracing import TRACE_ID, TRACEPARENT
from tests.oauth_ext.test_audit import Secrets

spans = tracing_tests.spans  # tracing on, finished spans in memory


class JsonLines:
    """What the root logger writes through the JSON formatter, as the parsed lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_lines() -> Iterator[JsonLines]:
    """A JSON handler on the root logger, as if MCPGATE_LOG_LEVEL=DEBUG (the settings' per-library levels stay).

    Asked for after the ASGI site: importing mcpgate.asgi sets Django up, and LOGGING then replaces the root's handlers.
    """
    captured = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured.handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(captured.handler)
        root.setLevel(level)


def test_a_json_line_is_one_object_with_the_fields_operators_search_by(json_lines: JsonLines) -> None:
    logging.getLogger("mcpgate.example").warning("refused %s from %s", "a registration", "203.0.113.7")

    [line] = json_lines.lines()
    assert set(line) == {"timestamp", "level", "logger", "message"}
    assert (line["level"], line["logger"]) == ("WARNING", "mcpgate.example")
    assert line["message"] == "refused a registration from 203.0.113.7"
    assert line["timestamp"].endswith("+00:00")


def test_an_exception_stays_on_its_one_line(json_lines: JsonLines) -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("mcpgate.example").exception("tool failed")

    [line] = json_lines.lines()
    assert line["message"] == "tool failed"
    assert "ValueError: broken" in line["exc_info"]
    assert len(json_lines.text.splitlines()) == 1


@pytest.mark.django_db
def test_djangos_request_extra_is_method_and_path_without_the_query(json_lines: JsonLines) -> None:
    """django.request logs every 4xx with the request; its repr would carry a code put in the URL."""
    response = HttpClient().get("/oauth/token?code=SplxlOBeZQQYbYS6WxSbIA&code_verifier=v", HTTP_HOST=INTERNAL)

    assert response.status_code == 405
    [line] = [line for line in json_lines.lines() if line["logger"] == "django.request"]
    assert line["request"] == "GET /oauth/token"
    assert line["status_code"] == 405
    assert "SplxlOBeZQQYbYS6WxSbIA" not in json_lines.text


def test_a_line_logged_inside_a_span_carries_its_trace_and_span_ids(spans, json_lines: JsonLines) -> None:
    with tracing.span("work") as current:
        logging.getLogger("mcpgate.example").info("inside")
    logging.getLogger("mcpgate.example").info("outside")

    inside, outside = json_lines.lines()
    context = current.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside and "span_id" not in outside


@pytest.fixture
def broken_tool() -> Iterator[str]:
    """A tool that fails: mcp_bridge.server logs the failure, with its traceback, while serving the call."""

    @tool(name="broken_for_logs")
    def broken(ctx: ToolContext) -> str:
        raise RuntimeError("the tool's own bug")

    try:
        yield "broken_for_logs"
    finally:
        registry.remove("broken_for_logs")


@pytest.mark.anyio
async def test_a_line_logged_while_serving_mcp_carries_the_callers_trace(
    spans, mcp, alice_token, broken_tool, json_lines
) -> None:
    response = await mcp.post("/mcp", json=call(broken_tool), headers=bearer(alice_token, traceparent=TRACEPARENT))

    assert response.json()["result"]["isError"] is True
    [failure] = [line for line in json_lines.lines() if line["logger"] == "mcp_bridge.server"]
    assert failure["message"] == "tool broken_for_logs failed"
    assert "RuntimeError: the tool's own bug" in failure["exc_info"]
    assert failure["trace_id"] == TRACE_ID
    run = next(s for s in spans.get_finished_spans() if s.name == "mcp tool broken_for_logs")
    assert failure["span_id"] == format(run.context.span_id, "016x")


@pytest.mark.anyio
async def test_no_token_code_or_secret_in_json_lines_of_an_exchange_and_an_mcp_call(
    spans, mcp, transactional_db, json_lines
) -> None:
    secrets = Secrets()

    @sync_to_async
    def sign_in_and_exchange() -> str:
        client = Client.objects.create(
            name="Claude Code",
            client_type=Client.CLIENT_PUBLIC,
            authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
            redirect_uris=LOOPBACK_REDIRECT,
            token_endpoint_auth_method="none",
            client_secret="",
        )
        flow = Flow(HttpClient(), INTERNAL)
        query, pkce, _ = flow.authorize_code(client.client_id)
        secrets.add(query["code"], pkce.verifier, pkce.challenge)
        tokens = flow.exchange(client.client_id, query["code"], pkce).json()
        secrets.add(tokens["access_token"], tokens["refresh_token"])
        refreshed = flow.refresh(client.client_id, tokens["refresh_token"]).json()
        secrets.add(refreshed["access_token"], refreshed["refresh_token"])
        replay.append(lambda: flow.exchange(client.client_id, query["code"], pkce))
        return str(refreshed["access_token"])

    replay: list[Any] = []
    access_token = await sign_in_and_exchange()
    served = await mcp.post("/mcp", json=call("whoami"), headers=bearer(access_token, traceparent=TRACEPARENT))
    # The 2026-07-28 call and initialize, which the SDK's own transport serves (mcp_bridge.fastpath takes
    # the other 2025-era requests, and logs nothing): the SDK's log lines, at DEBUG, are checked too.
    modern_call = rpc("tools/call", envelope({"name": "whoami", "arguments": {}}))
    served_modern = await mcp.post("/mcp", json=modern_call, headers=modern(access_token, "tools/call", "whoami"))
    await mcp.post("/mcp", json=initialize(HANDSHAKE_VERSION), headers=bearer(access_token))
    await mcp.post("/mcp", json=call("whoami"), headers=bearer(access_token[:-2] + "xx"))
    # The code again: refused, logged, and the tokens it led to revoked (RFC 6749 §4.1.2).
    replayed = await sync_to_async(replay[0])()

    assert (served.status_code, served_modern.status_code, replayed.status_code) == (200, 200, 400)
    assert len(secrets.values) == 7
    lines = json_lines.lines()  # every line parses
    assert {"identity.services", "mcp.server.streamable_http_manager", "oauth_ext.validators"} <= {
        line["logger"] for line in lines
    }  # the sign-in, the /mcp call and the replayed code were all logged
    assert secrets.found_in(json_lines.text) == []
    # Nor in what the traces carry (span names and attributes, the queries' text included).
    recorded = [(span.name, dict(span.attributes or {})) for span in spans.get_finished_spans()]
    assert any(name == "POST /mcp" for name, _ in recorded)
    assert secrets.found_in(json.dumps(recorded, default=str)) == []
