"""deploy/gunicorn.conf.py's hooks: where the workers listen, and Prometheus' multiprocess directory across restarts."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from prometheus_client import multiprocess

CONF = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"


def arbiter(*binds: str, reuse_port: bool = False) -> SimpleNamespace:
    """What gunicorn hands ``on_starting``: its configuration (its defaults unless given) and a log."""
    config = Config()
    if binds:
        config.set("bind", list(binds))
    config.set("reuse_port", reuse_port)
    return SimpleNamespace(cfg=config, log=logging.getLogger("tests.gunicorn"))


def test_on_starting_decides_where_the_workers_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    """mcpgate.workers.listen_per_worker runs first (tests/mcpgate/test_workers.py has its cases)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    server = arbiter("unix:/run/mcpgate/gunicorn.sock", reuse_port=True)
    runpy.run_path(str(CONF))["on_starting"](server)
    assert server.cfg.reuse_port is False


def test_the_directory_is_emptied_at_start_and_a_dead_workers_values_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_4242.db").write_bytes(b"old run")
    (tmp_path / "keep.txt").write_text("not ours")
    dead: list[Any] = []
    monkeypatch.setattr(multiprocess, "mark_process_dead", dead.append)
    conf = runpy.run_path(str(CONF))

    conf["when_ready"](arbiter())
    conf["child_exit"](None, SimpleNamespace(pid=4343))

    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert dead == [4343]


def test_a_missing_directory_is_created_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    runpy.run_path(str(CONF))["when_ready"](arbiter())
    assert directory.is_dir()


def test_without_the_directory_the_hooks_do_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    dead: list[Any] = []
    monkeypatch.setattr(multiprocess, "mark_process_dead", dead.append)
    conf = runpy.run_path(str(CONF))
    conf["when_ready"](arbiter())
    conf["child_exit"](None, SimpleNamespace(pid=4343))
    assert dead == []
