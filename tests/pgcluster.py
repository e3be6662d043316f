"""Run a command against a throw-away PostgreSQL cluster: ``python -m tests.pgcluster CMD...``.

The cluster is made with the machine's PostgreSQL binaries (initdb, pg_ctl) in a temporary
directory, listens on 127.0.0.1 on a free port, and is removed afterwards. The command gets its URL
as MCPGATE_TEST_DATABASE_URL, the one database variable the test suite takes from its environment
(tests/testenv.py drops the developer's DATABASE_URL), and as DATABASE_URL for any other command
(a benchmark, manage.py). As root, the server runs as the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port


def pg_bindir() -> Path:
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise SystemExit("PostgreSQL binaries not found (install postgresql, or set PG_BINDIR)")


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Yield a DATABASE_URL for a fresh cluster; stop and delete it on exit."""
    bindir = pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="mcpgate-pg-"))
    data = root / "data"
    port = free_port()
    preexec = None
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)

        def preexec() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def run(*args: str) -> None:
        subprocess.run(args, check=True, preexec_fn=preexec, cwd=root, stdout=subprocess.DEVNULL)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "mcpgate", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mcpgate", "mcpgate")
        yield f"postgresql://mcpgate@127.0.0.1:{port}/mcpgate"
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with cluster() as url:
        env = {**os.environ, "DATABASE_URL": url, "MCPGATE_TEST_DATABASE_URL": url}
        print(f"pgcluster: {url}", file=sys.stderr, flush=True)
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
