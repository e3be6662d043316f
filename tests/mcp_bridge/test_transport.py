"""Streamable HTTP on /mcp through real HTTP (checklist H1-H7, L1-L2), for every protocol version served.

Alice holds a valid token in every test here: what is checked is the transport, not admission
(tests/mcp_bridge/test_auth.py). Versions 2025-03-26, 2025-06-18 and 2025-11-25 start with the
initialize handshake; 2026-07-28 is stateless, every request carrying its envelope in ``_meta``
and mirroring its method (and tool name) in the Mcp-Method / Mcp-Name headers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings

from tests.mcp_bridge.conftest import (
    HANDSHAKE_VERSIONS,
    MODERN_VERSION,
    bearer,
    call,
    envelope,
    modern,
    notification,
    rpc,
)
from tests.personas import ALICE

pytestmark = pytest.mark.anyio

ALL_VERSIONS = (*HANDSHAKE_VERSIONS, MODERN_VERSION)
LATEST_HANDSHAKE = "2025-11-25"
MAX_BODY = 4 * 1024 * 1024
INSTRUCTIONS = "Tools of your organisation, called as you."


def initialize(version: str) -> dict[str, Any]:
    return rpc(
        "initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    )


def error(code: int, message: str, id: int | None = 1, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, **extra}}


def headers_for(version: str, token: str, method: str = "ping") -> dict[str, str]:
    return modern(token, method) if version == MODERN_VERSION else bearer(token, version)


def body_for(version: str, method: str = "ping") -> dict[str, Any]:
    return rpc(method, envelope()) if version == MODERN_VERSION else rpc(method)


# Tools (local and the upstreams'), and the upstreams' prompts, resources and completions (gateway).
CAPABILITIES = {
    "tools": {"listChanged": False},
    "prompts": {"listChanged": False},
    "resources": {"subscribe": False, "listChanged": False},
    "completions": {},
}


# -- L1, L2: the handshake (2025 versions) -----------------------------------------------------


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_initialize_answers_the_requested_version(mcp, alice_token, version) -> None:
    r = await mcp.post("/mcp", json=initialize(version), headers=bearer(alice_token, version))

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": {"name": "mcpgate", "version": settings.MCPGATE_VERSION},
            "instructions": INSTRUCTIONS,
        },
    }


async def test_initialize_with_an_unknown_version_gets_the_latest(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=initialize("2099-01-01"), headers=bearer(alice_token))

    assert r.status_code == 200
    assert r.json()["result"]["protocolVersion"] == LATEST_HANDSHAKE


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_initialized_notification_is_202_without_body(mcp, alice_token, version) -> None:
    r = await mcp.post("/mcp", json=notification("notifications/initialized"), headers=bearer(alice_token, version))

    assert r.status_code == 202
    assert r.content == b""


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_a_posted_response_is_202_without_body(mcp, alice_token, version) -> None:
    """A client's answer to a server request is accepted like a notification."""
    r = await mcp.post("/mcp", json={"jsonrpc": "2.0", "id": 7, "result": {}}, headers=bearer(alice_token, version))

    assert r.status_code == 202
    assert r.content == b""


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_ping_answers_an_empty_result(mcp, alice_token, version) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, version))

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_stateless_without_initialize_or_session(mcp, alice_token, version) -> None:
    """No Mcp-Session-Id is handed out, none is required: any worker or replica serves any request."""
    r = await mcp.post("/mcp", json=initialize(version), headers=bearer(alice_token, version))
    assert "mcp-session-id" not in r.headers

    # Straight to tools/call, no handshake, and with a session id nobody issued: still served.
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token, version, **{"Mcp-Session-Id": "x1"}))
    assert r.status_code == 200
    assert r.json()["result"]["isError"] is False
    assert "mcp-session-id" not in r.headers


# -- H1: GET and DELETE --------------------------------------------------------------------------

METHOD_NOT_ALLOWED = error(-32600, "Method not allowed: POST one JSON-RPC message", id=None)


@pytest.mark.parametrize("version", [*ALL_VERSIONS, None])
async def test_get_is_405_without_standalone_stream(mcp, alice_token, version) -> None:
    """Stateless: no stream to open. (The SDK alone would open an SSE stream that never carries anything.)"""
    r = await mcp.get("/mcp", headers=bearer(alice_token, version))

    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json() == METHOD_NOT_ALLOWED


@pytest.mark.parametrize("version", [*ALL_VERSIONS, None])
async def test_delete_is_405_without_sessions(mcp, alice_token, version) -> None:
    r = await mcp.delete("/mcp", headers=bearer(alice_token, version))

    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json() == METHOD_NOT_ALLOWED


async def test_other_methods_are_405(mcp, alice_token) -> None:
    r = await mcp.put("/mcp", json=rpc("ping"), headers=bearer(alice_token))

    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json() == METHOD_NOT_ALLOWED


# -- H5: MCP-Protocol-Version ---------------------------------------------------------------------


@pytest.fixture
def seen_versions(site) -> Any:
    """The protocol version the SDK serves each request at, through its own middleware hook."""
    seen: list[str] = []

    async def record(ctx: Any, call_next: Any) -> Any:
        seen.append(ctx.protocol_version)
        return await call_next(ctx)

    site.mcp_endpoint.server.middleware.append(record)
    yield seen
    site.mcp_endpoint.server.middleware.remove(record)


async def test_missing_version_header_is_served_as_2025_03_26(mcp, alice_token, seen_versions) -> None:
    r = await mcp.post("/mcp", json=call("whoami"), headers=bearer(alice_token, version=None))

    assert r.status_code == 200
    assert r.json()["result"]["isError"] is False
    assert seen_versions == ["2025-03-26"]


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_version_header_is_the_version_served(mcp, alice_token, seen_versions, version) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, version))

    assert r.status_code == 200
    assert seen_versions == [version]


async def test_unsupported_version_header_is_400(mcp, alice_token) -> None:
    """The SDK takes any version it does not know for a newer stateless one, so a 2025-shaped
    request is refused for lacking the 2026 envelope: 400 as H5 asks, with -32602 (not -32022)."""
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, "2024-01-01"))

    assert r.status_code == 400
    assert r.json() == error(
        -32602,
        "params._meta must be an object carrying the required 'io.modelcontextprotocol/protocolVersion'"
        " and 'io.modelcontextprotocol/clientCapabilities' envelope keys",
    )


async def test_unsupported_version_in_envelope_is_400_naming_the_supported(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp",
        json=rpc("tools/list", envelope(version="2030-01-01")),
        headers={**modern(alice_token, "tools/list"), "MCP-Protocol-Version": "2030-01-01"},
    )

    assert r.status_code == 400
    assert r.json() == error(
        -32022,
        "Unsupported protocol version",
        data={"supported": [MODERN_VERSION], "requested": "2030-01-01"},
    )


# -- H3: one message per POST --------------------------------------------------------------------

BATCH_REFUSED = error(-32600, "Batches are not supported: POST one JSON-RPC message", id=None)


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", MODERN_VERSION])
async def test_batch_is_refused(mcp, alice_token, version) -> None:
    batch = [body_for(version), {**body_for(version), "id": 2}]
    r = await mcp.post("/mcp", json=batch, headers=headers_for(version, alice_token))

    assert r.status_code == 400
    assert r.json() == BATCH_REFUSED


@pytest.mark.parametrize("version", ["2025-03-26", None])
async def test_batch_is_refused_at_2025_03_26_too(mcp, alice_token, version) -> None:
    """2025-03-26 allowed batches, but the SDK serves none at any version; no known client sends them."""
    r = await mcp.post("/mcp", json=[rpc("ping"), rpc("ping", id=2)], headers=bearer(alice_token, version))

    assert r.status_code == 400
    assert r.json() == BATCH_REFUSED


# -- Protocol errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_malformed_json_is_parse_error(mcp, alice_token, version) -> None:
    r = await mcp.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1,', headers=bearer(alice_token, version))

    assert r.status_code == 400
    assert r.json()["id"] is None
    assert r.json()["error"]["code"] == -32700
    assert r.json()["error"]["message"].startswith("Parse error")


async def test_malformed_json_is_parse_error_at_2026(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1,', headers=modern(alice_token, "ping"))

    assert r.status_code == 400
    assert r.json() == error(-32700, "Parse error", id=None)


NOT_JSON_RPC = [
    ({"jsonrpc": "2.0", "id": 1}, 1, "method is required"),
    ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 1, "jsonrpc must be '2.0'"),
    ({"id": "a", "method": "ping"}, "a", "jsonrpc is required"),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}, 1, "params must be an object"),
    ({"jsonrpc": "2.0", "method": "notifications/initialized", "params": [1]}, None, "params must be an object"),
    ({"jsonrpc": "2.0", "id": 1, "method": 5}, 1, "method must be a string"),
    ({"jsonrpc": "2.0", "id": 1, "result": 5}, 1, "result must be an object"),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": "x"}}, 1, "error.code must be an integer"),
    ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, None, "id must be a string or an integer"),
    ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None, "id must be a string or an integer"),
    ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None, "id must be a string or an integer"),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None, "id must be a string or an integer"),
    ("ping", None, "the body must be a JSON-RPC object"),
    (None, None, "the body must be a JSON-RPC object"),
]


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(("message", "id", "problem"), NOT_JSON_RPC)
async def test_a_body_that_is_not_json_rpc_is_named_without_the_validators_text(
    mcp, alice_token, version, message, id, problem
) -> None:
    """JSON-RPC 2.0 §5.1 Invalid Request, naming the member at fault. The SDK answered these with
    -32602 and pydantic's report ("Validation error: 4 validation errors for union[...]", input
    values, links to pydantic's site); an object id it took for a notification and never answered."""
    r = await mcp.post("/mcp", content=json.dumps(message), headers=headers_for(version, alice_token))

    assert r.status_code == 400
    assert r.json() == error(-32600, f"Invalid request: {problem}", id=id)


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_bad_params_of_a_known_method_are_the_sdks_invalid_params_without_detail(
    mcp, alice_token, version
) -> None:
    r = await mcp.post("/mcp", json=rpc("tools/call", {"arguments": {}}), headers=bearer(alice_token, version))

    assert r.status_code == 200
    assert r.json() == error(-32602, "Invalid request parameters", data="")


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_unknown_method_is_method_not_found(mcp, alice_token, version) -> None:
    """Handshake-era HTTP status stays 200: the error is in the JSON-RPC response."""
    r = await mcp.post("/mcp", json=rpc("nope/never"), headers=bearer(alice_token, version))

    assert r.status_code == 200
    assert r.json() == error(-32601, "Method not found", data="nope/never")


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_server_discover_is_unknown_before_2026(mcp, alice_token, version) -> None:
    r = await mcp.post("/mcp", json=rpc("server/discover"), headers=bearer(alice_token, version))

    assert r.json() == error(-32601, "Method not found", data="server/discover")


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_wrong_accept_is_406(mcp, alice_token, version) -> None:
    r = await mcp.post("/mcp", json=rpc("ping"), headers=bearer(alice_token, version, Accept="text/html"))

    assert r.status_code == 406
    assert r.json() == error(-32600, "Not Acceptable: Client must accept application/json", id=None)


async def test_wrong_accept_is_406_at_2026(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=body_for(MODERN_VERSION), headers=modern(alice_token, "ping", Accept="text/html"))

    assert r.status_code == 406
    assert r.content == b""


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_wrong_content_type_is_400(mcp, alice_token, version) -> None:
    """The SDK's answer (its transport security check, before its own 415): 400, plain text."""
    headers = {**headers_for(version, alice_token), "Content-Type": "text/plain"}
    r = await mcp.post("/mcp", content=json.dumps(body_for(version)), headers=headers)

    assert r.status_code == 400
    assert r.text == "Invalid Content-Type header"


# -- Body size -----------------------------------------------------------------------------------


def ping_of_size(size: int) -> bytes:
    """A valid ping exactly ``size`` bytes long (padded in its _meta)."""
    empty = json.dumps(rpc("ping", {"_meta": {"pad": ""}})).encode()
    return json.dumps(rpc("ping", {"_meta": {"pad": "x" * (size - len(empty))}})).encode()


async def test_body_of_4_mib_is_served(mcp, alice_token) -> None:
    body = ping_of_size(MAX_BODY)
    assert len(body) == MAX_BODY

    r = await mcp.post("/mcp", content=body, headers=bearer(alice_token))

    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_body_over_4_mib_is_413(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", content=ping_of_size(MAX_BODY + 1), headers=bearer(alice_token))

    assert r.status_code == 413
    assert r.json() == error(-32600, "Request body too large", id=None)


# -- H7: 2026-07-28 ------------------------------------------------------------------------------


async def test_server_discover(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("server/discover", envelope()), headers=modern(alice_token, "server/discover"))

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "supportedVersions": [MODERN_VERSION],
            "capabilities": CAPABILITIES,
            "instructions": INSTRUCTIONS,
            "cacheScope": "private",
            "ttlMs": 0,
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "mcpgate", "version": settings.MCPGATE_VERSION}},
        },
    }


async def test_tools_call_without_handshake(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp",
        json=rpc("tools/call", envelope({"name": "whoami", "arguments": {}})),
        headers=modern(alice_token, "tools/call", name="whoami"),
    )

    assert r.status_code == 200
    result = r.json()["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["email"] == ALICE
    assert "mcp-session-id" not in r.headers


async def test_method_header_mismatch_is_400(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("tools/list", envelope()), headers=modern(alice_token, "server/discover"))

    assert r.status_code == 400
    assert r.json() == error(-32020, "mcp-method header does not match the request body's method")


async def test_name_header_mismatch_is_400(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp",
        json=rpc("tools/call", envelope({"name": "whoami", "arguments": {}})),
        headers=modern(alice_token, "tools/call", name="list_notes"),
    )

    assert r.status_code == 400
    assert r.json() == error(-32020, "mcp-name header does not match the request body's 'name' parameter")


async def test_missing_method_header_is_400(mcp, alice_token) -> None:
    headers = modern(alice_token, "tools/list")
    del headers["Mcp-Method"]
    r = await mcp.post("/mcp", json=rpc("tools/list", envelope()), headers=headers)

    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32020


async def test_missing_envelope_is_400(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("tools/list"), headers=modern(alice_token, "tools/list"))

    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32602


async def test_unknown_method_is_404(mcp, alice_token) -> None:
    r = await mcp.post("/mcp", json=rpc("nope/never", envelope()), headers=modern(alice_token, "nope/never"))

    assert r.status_code == 404
    assert r.json() == error(-32601, "Method not found", data="nope/never")


@pytest.mark.parametrize("method", ["initialize", "ping"])
async def test_handshake_era_methods_are_unknown(mcp, alice_token, method) -> None:
    """2026-07-28 has no initialize (and no ping): both are unknown methods there."""
    r = await mcp.post("/mcp", json=rpc(method, envelope()), headers=modern(alice_token, method))

    assert r.status_code == 404
    assert r.json() == error(-32601, "Method not found", data=method)


async def test_notification_is_202_without_body(mcp, alice_token) -> None:
    r = await mcp.post(
        "/mcp", json=notification("notifications/initialized"), headers=modern(alice_token, "notifications/initialized")
    )

    assert r.status_code == 202
    assert r.content == b""
