"""ASGI entry point (gunicorn with the uvicorn worker): /mcp goes to the MCP endpoint, the rest to Django.

/mcp is routed here, before Django's ASGI handler, because the SDK's Streamable HTTP transport is
an ASGI application and Django's handler would add a per-request thread hop and middleware pass
it does not need (admission runs the relevant middleware itself, see mcp_bridge.endpoint).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mcpgate.settings")

django_application = get_asgi_application()

from mcp_bridge.endpoint import MCP_PATH, MCPEndpoint  # noqa: E402  (needs Django set up)
from mcpgate.errors import broken_off  # noqa: E402

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class Application:
    """The site: Django for everything but /mcp; the MCP endpoint's task group lives in the lifespan."""

    def __init__(self, *, fast_path: bool = True) -> None:
        self.mcp_endpoint = MCPEndpoint(fast_path=fast_path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == MCP_PATH:
            await self.mcp_endpoint(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await django_application(scope, receive, self._unless_broken_off(scope, send))

    @staticmethod
    def _unless_broken_off(scope: dict[str, Any], send: Any) -> Any:
        """``send``, except the end of a body a view broke off (``mcpgate.errors.break_off``)."""

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body") and broken_off(scope):
                return
            await send(message)

        return sending

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            async with self.mcp_endpoint.lifespan():
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as exc:  # a failed start must stop the worker, visibly
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})


application = Application()
