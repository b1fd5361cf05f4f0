"""A throwaway PostgreSQL server for the tests that store a study in one (`--storage postgresql://`).

initdb refuses to run as root: as root the server runs as the `postgres` user (else `nobody`)
in a temporary directory it owns. It listens on a Unix socket in that directory only (no TCP),
with trust authentication for the socket's owner-only directory, and is stopped (immediate
mode) and removed after, whatever happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class ServerUnavailable(Exception):
    """Why no server could be started here (the tests skip with this reason)."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise ServerUnavailable(f"no PostgreSQL `{name}` on PATH or under /usr/lib/postgresql/*/bin")
    return found


def _run_as(user: str | None, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the SQLAlchemy URL of a fresh database `autotune` on a private server."""
    try:
        import psycopg2
    except ImportError:
        raise ServerUnavailable("the PostgreSQL driver psycopg2 is not installed (pip install -e '.[dev]')") from None
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or shutil.which("runuser") is None:
            raise ServerUnavailable("running as root without a `postgres`/`nobody` user and runuser to run initdb as")
    root = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
    data, socket_dir = root / "data", root / "sock"
    socket_dir.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    started = False
    try:
        init = _run_as(user, [initdb, "-D", str(data), "-U", "autotune", "--auth=trust", "-E", "UTF8", "--no-sync"])
        if init.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
        options = f"-k {socket_dir} -c listen_addresses='' -p 5432 -c fsync=off"
        start = _run_as(user, [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"])
        if start.returncode != 0:
            log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
            raise ServerUnavailable(f"pg_ctl start failed: {(log or start.stderr).strip().splitlines()[-1:]}")
        started = True
        import psycopg2

        connection = psycopg2.connect(host=str(socket_dir), port=5432, user="autotune", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE autotune")
        connection.close()
        yield f"postgresql+psycopg2://autotune@/autotune?host={socket_dir}&port=5432"
    finally:
        if started:
            _run_as(user, [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
