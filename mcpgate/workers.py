"""The gunicorn worker mcpgate is served by: uvicorn's, on uvloop, parsing HTTP with h11.

``gunicorn -c deploy/gunicorn.conf.py mcpgate.asgi:application`` (its ``worker_class``).

uvicorn's own ``UvicornWorker`` picks the event loop and the HTTP parser by what happens to be
installed ("auto"). This one names them, so what serves the internet does not change with an
image's extra packages:

- **uvloop** (libuv) instead of asyncio's own loop: the same asyncio API, and about 6 % more
  /mcp tools/call per worker at 16 connections (BENCHMARKS.md, "uvloop").
- **h11** as the HTTP/1.1 parser, as "auto" picks without httptools. httptools would give about
  7 % more again, but uvicorn sets no limit on a request's headers with it: it read one header of
  200 MB and answered 200. h11 answers 400 and closes once it holds 16 KB of headers it cannot
  yet complete (``h11_max_incomplete_event_size``), so what one connection can make a worker
  buffer stays bounded (that, plus whatever arrives complete in one read of the socket).
  /mcp and the token endpoint take connections that need not pass through oauth2-proxy.
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    """``uvicorn_worker.UvicornWorker`` with its loop and HTTP parser named (see the module)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "uvloop", "http": "h11"}
