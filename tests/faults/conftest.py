"""The deployment the fault tests break: its own PostgreSQL cluster and gunicorn with two workers.

The outage tests stop PostgreSQL, so they cannot use the suite's database: they make a cluster of
their own (tests.faults.deployment), whatever DATABASE_URL says. They run once, in the PostgreSQL
pass of ``make test`` (``make test-postgres``, where DATABASE_URL names a PostgreSQL database), and
are deselected (not skipped: with CI=true nothing may skip) in the SQLite pass, which would only
repeat them. Without PostgreSQL binaries they are
skipped on a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.server import ServerFailed
from tests.e2e.tools import unavailable
from tests.personas import OLIVIA

from .deployment import Deployment, deployment, postgres_available


def in_postgres_pass() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the SQLite pass, leave out the tests that need the deployment (they run in the PostgreSQL pass)."""
    if in_postgres_pass():
        return
    needs_cluster = [item for item in items if "faults_deployment" in getattr(item, "fixturenames", ())]
    if needs_cluster:
        config.hook.pytest_deselected(items=needs_cluster)
        items[:] = [item for item in items if item not in needs_cluster]


@pytest.fixture(scope="package")
def faults_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """gunicorn (two uvicorn workers, deploy/gunicorn.conf.py) on a PostgreSQL cluster the tests may stop."""
    if not postgres_available():
        unavailable("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql, or set PG_BINDIR")
    try:
        # Olivia an operator, for the console's CSV export (test_audit_export_outage).
        overrides = {"MCPGATE_OPERATOR_EMAILS": OLIVIA}
        with deployment(log_dir=tmp_path_factory.mktemp("faults"), overrides=overrides) as deployed:
            yield deployed
    except ServerFailed as failure:
        pytest.fail(str(failure))
