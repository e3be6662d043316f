"""How the proxy tests get oauth2-proxy: the cached build is reused; without Go, CI fails, a laptop skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import oauth2proxy


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(oauth2proxy, "CACHE_DIR", tmp_path / "v")
    monkeypatch.setattr(oauth2proxy, "BINARY", tmp_path / "v" / "oauth2-proxy")
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    return tmp_path


@pytest.mark.parametrize("ci", ["true", "1"])
def test_without_go_ci_fails(empty_cache: Path, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"Go is not installed.*CI=true"):
        oauth2proxy.ensure_binary()


def test_without_go_elsewhere_skips(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Go is not installed"):
        oauth2proxy.ensure_binary()


def test_a_cached_binary_is_used_without_go(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    oauth2proxy.CACHE_DIR.mkdir()
    oauth2proxy.BINARY.write_text("#!/bin/sh\n")
    oauth2proxy.BINARY.chmod(0o755)
    assert oauth2proxy.ensure_binary() == oauth2proxy.BINARY


def test_the_pinned_version_is_a_v7_release() -> None:
    assert oauth2proxy.VERSION.startswith("v7.")
    assert oauth2proxy.CACHE_DIR.name == oauth2proxy.VERSION  # a new pin builds anew
