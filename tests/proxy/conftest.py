"""Fixtures: the whole deployment (oauth2-proxy, the mock provider, two gunicorn replicas) on the test database.

Tests that use it mark ``@pytest.mark.django_db(transaction=True)``, so that what the servers and
the test write is committed where the other sees it. Not ``serialized_rollback``: after a plain
transactional test elsewhere (flush, content types recreated with new ids) its reload fails; the
one seeded table mcpgate needs, the redirect allowlist, is put back before each test instead
(tests/conftest.py, for every transactional test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from . import credentials
from .deployment import Deployment, deployment
from .oauth2proxy import ensure_binary


@pytest.fixture(scope="session")
def oauth2_proxy_binary() -> None:
    ensure_binary()


def _deploy(
    mode: str,
    mcpgate_env: dict[str, str],
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    replicas: tuple[str, ...] = ("a", "b"),
) -> Iterator[Deployment]:
    from django.db import connection

    with django_db_blocker.unblock():
        settings_dict = dict(connection.settings_dict)
    workdir = tmp_path_factory.mktemp(f"deployment-{mode}")
    with deployment(
        mode=mode, db_settings=settings_dict, workdir=workdir, mcpgate_env=mcpgate_env, replicas=replicas
    ) as deployed:
        yield deployed
        log = deployed.logs()
    assert "Traceback" not in log, log
    # The provider's ID tokens are credentials too (oauth2-proxy forwards them in id_token mode).
    credentials.remember(*deployed.mock.id_tokens)
    leaked = credentials.leaked(log)
    assert not leaked, f"the logs in {workdir} contain credentials the tests saw: {leaked}"


@pytest.fixture(scope="module")
def deployed(
    oauth2_proxy_binary: None, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """mcpgate in the default identity mode (oauth2-proxy's X-Forwarded-* headers).

    No refresh grace window: a rotated-out refresh token presented again is reuse, at once.
    """
    yield from _deploy("headers", {"MCPGATE_REFRESH_GRACE_SECONDS": "0"}, django_db_blocker, tmp_path_factory)


@pytest.fixture(scope="module")
def deployed_id_token(
    oauth2_proxy_binary: None, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """mcpgate in MCPGATE_IDENTITY_MODE=id_token behind the same oauth2-proxy configuration (one replica)."""
    yield from _deploy("id_token", {}, django_db_blocker, tmp_path_factory, replicas=("a",))
