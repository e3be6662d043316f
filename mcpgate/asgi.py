"""ASGI entry point (gunicorn with the uvicorn worker): /mcp goes to the MCP endpoint, the rest to Django.

/mcp is routed here, before Django's ASGI handler, because the SDK's Streamable HTTP transport is
an ASGI application and Django's handler would add a per-request thread hop and middleware pass
it does not need (admission runs the relevant middleware itself, see mcp_bridge.endpoint).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mcpgate.settings")

django_application = get_asgi_application()

from mcp_bridge.endpoint import MCPEndpoint  # noqa: E402  (needs Django set up)

MCP_PATH = "/mcp"

mcp_endpoint = MCPEndpoint()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == MCP_PATH:
        await mcp_endpoint(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def _lifespan(receive: Any, send: Any) -> None:
    """Keep the MCP session manager running for the worker's lifetime."""
    message = await receive()
    if message["type"] != "lifespan.startup":
        return
    try:
        async with mcp_endpoint.lifespan():
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
    except Exception as exc:  # a failed start must stop the worker, visibly
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        raise
    await send({"type": "lifespan.shutdown.complete"})
