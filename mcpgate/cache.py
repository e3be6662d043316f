"""Cache backends that keep their files and connections per process, not per request.

Django makes a new cache object for every request context (``caches`` is an asgiref ``Local``):
under ASGI every request, and every /mcp admission in its worker thread, starts with an empty
one. For the rate limits (mcpgate.ratelimit), which touch the cache on every limited request,
what that object opens must therefore be shared by the process:

- ``DiskCache``: diskcache's ``DjangoCache`` opens a ``FanoutCache`` (one SQLite file per shard,
  each set up with its pragmas and tables) in its constructor: about 28 ms for the default eight
  shards on a 2-core machine, on every request. Here the ``FanoutCache`` is made once per process
  and directory. diskcache documents ``Cache`` and ``FanoutCache`` objects as thread-safe (each
  thread gets its own SQLite connection) and re-opens connections after a fork.
  Its counters' writes are taken in turn by the process's threads (``DiskCache``, below).
- ``SharedConnectionPool``: Django's ``RedisCache`` makes a connection pool per cache object,
  i.e. a new TCP (and TLS) connection per request. Its documented ``pool_class`` option is given
  this class, whose ``from_url`` hands back one pool per process and URL. redis-py's pools are
  thread-safe and re-create their connections in a forked child.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from diskcache import FanoutCache
from diskcache.djangocache import DjangoCache
from django.core.cache.backends.base import BaseCache

_lock = threading.Lock()
_fanout_caches: dict[tuple[Any, ...], FanoutCache] = {}
_write_locks: dict[tuple[Any, ...], threading.Lock] = {}
_pools: dict[tuple[Any, ...], redis.ConnectionPool] = {}


def _shared_fanout_cache(
    directory: str, shards: int, timeout: float, options: dict[str, Any]
) -> tuple[FanoutCache, threading.Lock]:
    key = (os.getpid(), directory, shards, timeout, repr(sorted(options.items())))
    with _lock:
        cache = _fanout_caches.get(key)
        if cache is None:
            cache = _fanout_caches[key] = FanoutCache(directory, shards, timeout, **options)
            _write_locks[key] = threading.Lock()
        return cache, _write_locks[key]


class DiskCache(DjangoCache):
    """diskcache's Django backend over one ``FanoutCache`` per process and directory.

    ``DjangoCache`` has no option to share it: its constructor builds ``self._cache``, which every
    one of its methods uses. So this constructor sets that attribute to the shared cache instead of
    calling ``DjangoCache.__init__`` (whose only other work is ``BaseCache.__init__``). That is a
    private attribute of diskcache's; tests/mcpgate/test_cache.py fails if it stops being the one
    the methods use. ``close()`` (called by Django when a request finishes) closes only the
    calling thread's SQLite connections, as before; the next use in that thread reconnects.

    The two writes a rate limit makes on every request (``add`` and ``incr``, django-ratelimit's
    count) are made by one thread of the process at a time, behind a Python lock. Left to SQLite,
    the threads of a worker that count at once (a busy /mcp: each admission counts in a worker
    thread of its own) meet at ``BEGIN IMMEDIATE``, and all but one wait in SQLite's busy handler,
    which sleeps (1, 2, 5, 10 ms) between tries instead of waking when the lock is free: py-spy
    found a worker's admission threads spending about 45 % of their time there at 16 connections.
    A Python lock hands over to its next waiter at once. Processes still meet at SQLite's lock.
    """

    def __init__(self, directory: str, params: dict[str, Any]) -> None:
        BaseCache.__init__(self, params)
        self._cache, self._writes = _shared_fanout_cache(
            directory,
            params.get("SHARDS", 8),
            params.get("DATABASE_TIMEOUT", 0.010),
            params.get("OPTIONS", {}),
        )

    def add(self, *args: Any, **kwargs: Any) -> Any:
        with self._writes:
            return super().add(*args, **kwargs)

    def incr(self, *args: Any, **kwargs: Any) -> Any:
        with self._writes:
            return super().incr(*args, **kwargs)


class SharedConnectionPool(redis.ConnectionPool):
    """A redis-py connection pool that ``from_url`` shares per process, URL and options."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Any:
        key = (os.getpid(), url, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = super().from_url(url, **kwargs)
            return pool
