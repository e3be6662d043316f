"""The ASGI site driven in-process as uvicorn drives it: a request's scope, worker threads whose connections close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections


@asynccontextmanager
async def worker_threads_closed() -> AsyncIterator[None]:
    """For the block, the event loop's default executor (where ``in_worker_thread`` and ``asyncio.to_thread``
    run, as under uvicorn) is one thread of ours; afterwards its connections and those of the thread
    ``sync_to_async`` runs views and the tests' own reads in are closed. Left open, PostgreSQL refuses to
    drop the test database at the end ("being accessed by other users")."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgi-worker")
    loop.set_default_executor(executor)
    try:
        yield
    finally:
        await loop.run_in_executor(executor, connections.close_all)
        await sync_to_async(connections.close_all)()
        executor.shutdown(wait=True)


def http_scope(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    *,
    query: bytes = b"",
    client: tuple[str, int],
) -> dict[str, Any]:
    """The ASGI HTTP scope of a request to 127.0.0.1:8000, as the server hands it to the application."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
