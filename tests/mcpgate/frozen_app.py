"""A bare ASGI app answering how many objects its worker's garbage collector froze (tests/mcpgate/test_workers.py)."""

from __future__ import annotations

import gc
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]


async def app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"frozen": gc.get_freeze_count(), "collecting": gc.isenabled()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
