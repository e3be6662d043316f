"""Shared by the adversarial tests: the public client Claude Code, and hypothesis profiles for the fuzz tests.

Profiles (choose with ``HYPOTHESIS_PROFILE``; the default is ``ci`` when ``CI`` is set, else ``dev``):

- ``ci``: reproducible (``derandomize``: the same examples on every run, so a red build can be
  re-run and bisected) and bounded (each fuzz test sends ``max_examples`` requests); no example
  database, nothing written anywhere.
- ``dev``: the same budget, random seeds, and failing examples remembered in the system's temporary
  directory (never in the checkout) so the next local run replays them first.
- ``long``: ``dev`` with 20 times the examples, for a hunt: ``HYPOTHESIS_PROFILE=long pytest tests/security``.

Every profile has ``deadline=None``: a request's time depends on the database and the machine,
not on the input, and a deadline would report slowness as a flaky failure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from oauth_ext.models import Client
from tests.conftest import LOOPBACK_REDIRECT

# Hypothesis keeps its caches (the Unicode tables) and example database under ./.hypothesis unless
# told otherwise: keep both out of the checkout. Read at first use, so setting it here is in time.
STORAGE = Path(
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "mcpgate-hypothesis"))
)

EXAMPLES = 40
# No "explain" phase: it replays each failure hundreds of times to annotate it, minutes per test here.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

settings.register_profile(
    "ci", max_examples=EXAMPLES, phases=PHASES, deadline=None, derandomize=True, database=None, print_blob=True
)
settings.register_profile(
    "dev",
    max_examples=EXAMPLES,
    phases=PHASES,
    deadline=None,
    database=DirectoryBasedExampleDatabase(STORAGE / "examples"),
    print_blob=True,
)
settings.register_profile("long", parent=settings.get_profile("dev"), max_examples=EXAMPLES * 20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def claude_code(transactional_db: Any) -> Client:
    """A self-registered public client with a loopback redirect, for tests whose requests run on other threads."""
    return Client.objects.create(
        name="Claude Code",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=LOOPBACK_REDIRECT,
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.DCR,
        client_secret="",
    )
