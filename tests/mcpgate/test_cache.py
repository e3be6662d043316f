"""mcpgate.cache: the cache objects Django makes per request share one set of files or connections per process."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from diskcache import FanoutCache
from django.core.cache.backends.redis import RedisCache

from mcpgate.cache import DiskCache, SharedConnectionPool


def test_disk_cache_objects_share_one_fanout_cache_per_directory(tmp_path: Path) -> None:
    first, second = DiskCache(str(tmp_path / "a"), {}), DiskCache(str(tmp_path / "a"), {})
    other = DiskCache(str(tmp_path / "b"), {})

    # diskcache's DjangoCache keeps its FanoutCache in ``_cache`` and every method goes through it;
    # if that changes, DiskCache no longer shares anything and this fails.
    assert isinstance(first._cache, FanoutCache)
    assert first._cache is second._cache
    assert other._cache is not first._cache
    assert first.add("k", 0, timeout=60)
    assert second.incr("k") == 1
    assert first.get("k") == 1
    assert other.get("k") is None
    first.close()  # what Django does when a request finishes: this thread's connections only
    assert second.incr("k") == 2


def _count(directory: str, key: str, times: int) -> None:
    cache = DiskCache(directory, {})
    for _ in range(times):
        cache.incr(key)


def test_disk_cache_counts_atomically_across_processes(tmp_path: Path) -> None:
    """The property the rate limits rest on: every worker process increments one counter."""
    cache = DiskCache(str(tmp_path), {})
    cache.add("n", 0, timeout=600)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_count, args=(str(tmp_path), "n", 100)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    assert cache.get("n") == 400


def test_a_process_s_threads_count_one_at_a_time_and_every_count_lands(tmp_path: Path) -> None:
    """The counters' writes wait for a Python lock, not in SQLite's sleeping busy handler (DiskCache)."""
    cache = DiskCache(str(tmp_path), {})
    assert cache.add("n", 0, timeout=600)
    started = threading.Event()

    def count() -> None:
        started.set()
        cache.incr("n")

    with cache._writes:  # another thread of the process is writing
        waiting = threading.Thread(target=count)
        waiting.start()
        started.wait(5)
        waiting.join(timeout=0.2)
        assert waiting.is_alive() and cache.get("n") == 0
    waiting.join(timeout=5)
    assert cache.get("n") == 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: DiskCache(str(tmp_path), {}).incr("n"), range(200)))
    assert cache.get("n") == 201
    assert DiskCache(str(tmp_path), {})._writes is cache._writes


def test_redis_cache_objects_share_one_connection_pool() -> None:
    params = {"OPTIONS": {"pool_class": "mcpgate.cache.SharedConnectionPool"}}
    first = RedisCache("redis://127.0.0.1:1/0", params)
    second = RedisCache("redis://127.0.0.1:1/0", params)

    # Django's documented ``pool_class`` option: its client calls ``from_url`` for each cache object.
    pool = first._cache._get_connection_pool(write=True)
    assert isinstance(pool, SharedConnectionPool)
    assert second._cache._get_connection_pool(write=True) is pool
    assert RedisCache("redis://127.0.0.1:2/0", params)._cache._get_connection_pool(write=True) is not pool


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_shared_pools_are_redis_pools_for_every_scheme(scheme: str) -> None:
    url = {"unix": "unix:///run/redis.sock"}.get(scheme, f"{scheme}://127.0.0.1:1/0")
    pool = SharedConnectionPool.from_url(url)
    assert SharedConnectionPool.from_url(url) is pool
