"""Third-party tools the end-to-end tests drive, and what happens when one is missing.

The Node tools (mcp-remote, the conformance suite, and Node 22 to run them) are pinned in
tests/e2e/node/package.json and package-lock.json and installed there by ``make e2e-tools``.
On a developer's machine a missing tool skips the tests that need it, saying how to get it;
in CI (``CI=true``) it fails them: a CI run must never pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from .server import REPO

NODE_DIR = REPO / "tests" / "e2e" / "node"
NODE_MODULES = NODE_DIR / "node_modules"
# Written by `make e2e-tools` once `npm ci` has finished.
INSTALLED_STAMP = NODE_MODULES / ".installed"
NODE_MAJOR = 22


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: nothing may be skipped)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class NodeTools:
    node: Path
    mcp_remote: Path
    conformance: Path


def node_tools() -> NodeTools:
    """The pinned Node tools, installed and current; otherwise skip (fail in CI)."""
    tools = NodeTools(
        node=NODE_MODULES / "node" / "bin" / "node",
        mcp_remote=NODE_MODULES / "mcp-remote" / "dist" / "proxy.js",
        conformance=NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js",
    )
    hint = "run `make e2e-tools` (npm ci in tests/e2e/node)"
    if not INSTALLED_STAMP.exists():
        unavailable(f"the Node tools for the end-to-end tests are not installed: {hint}")
    lock = NODE_DIR / "package-lock.json"
    if INSTALLED_STAMP.stat().st_mtime < lock.stat().st_mtime:
        unavailable(f"tests/e2e/node/node_modules is older than its package-lock.json: {hint}")
    missing = [str(path.relative_to(NODE_DIR)) for path in vars(tools).values() if not path.exists()]
    if missing:
        unavailable(f"missing from tests/e2e/node: {', '.join(missing)}: {hint}")
    version = subprocess.run(
        [str(tools.node), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    if not version.startswith(f"v{NODE_MAJOR}."):
        unavailable(f"tests/e2e/node's node is {version or 'not runnable'}, not Node {NODE_MAJOR}: {hint}")
    return tools
