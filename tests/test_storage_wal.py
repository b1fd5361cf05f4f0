"""The study database's write-ahead log survives every process that checks or reads the study
(issue 25): a daemon that checks its own database keeps its SQLite locks, so another process
closing its connection never checkpoints and unlinks the WAL the daemon still writes into.

The "daemon" here is a child process driven step by step over a pipe (each step waits for the
child's answer, never for time): it opens the study with autotune's storage, tells trials, runs
`check_database` on its own database, lets a second process open and close a connection, tells
more trials and is killed with SIGKILL. A fresh process then counts the trials on disk.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna

from autotune.layout import STUDY_DB
from autotune.study._storage import check_database, make_storage, storage_url

DAEMON = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import optuna
    from autotune.study._storage import check_database, make_storage, storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir = Path(sys.argv[1])
    study = optuna.create_study(storage=make_storage(storage_url(study_dir)), study_name="wal")

    def tell(count):
        for _ in range(count):
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, 1.0)

    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "tell":
            tell(int(argument))
        elif command == "check":
            check_database(study_dir)
        elif command == "wal":
            targets = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    targets.append(os.readlink(f"/proc/self/fd/{fd}"))
                except FileNotFoundError:  # the descriptor listdir itself used
                    pass
            print("deleted-wal" if any(p.endswith("-wal (deleted)") for p in targets) else "wal-ok")
        print("ok", flush=True)
    """
)


def told_on_disk(study_dir: Path) -> int:
    """Complete trials a fresh process reads from the database (what survived)."""
    code = (
        "import sys, optuna; optuna.logging.set_verbosity(optuna.logging.WARNING);"
        "s = optuna.load_study(study_name='wal', storage=sys.argv[1]);"
        "print(sum(t.state.name == 'COMPLETE' for t in s.trials))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, storage_url(study_dir)], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip())


def another_process_opens_and_closes(study_dir: Path) -> None:
    """What an exiting `start --resume` or `status` does: connect, read, close (its last connection)."""
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('select count(*) from trials').fetchone(); c.close()"
    subprocess.run([sys.executable, "-c", code, str(study_dir / STUDY_DB)], check=True)


def test_a_daemon_checking_its_own_database_loses_no_told_trial_to_a_kill_9(tmp_path):
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert daemon.stdin is not None and daemon.stdout is not None

    def step(command: str) -> list[str]:
        daemon.stdin.write(command + "\n")
        daemon.stdin.flush()
        said = []
        while (line := daemon.stdout.readline().strip()) != "ok":
            assert line, f"the daemon process died during {command!r}"
            said.append(line)
        return said

    try:
        step("tell 3")
        step("check")  # the daemon reads its own database while holding connections
        another_process_opens_and_closes(tmp_path)
        step("tell 5")
        assert step("wal") == ["wal-ok"], "the daemon writes into a WAL another process unlinked"
    finally:
        daemon.kill()
        daemon.wait()
    assert daemon.returncode == -signal.SIGKILL
    assert told_on_disk(tmp_path) == 8


def test_the_database_check_refuses_an_empty_file_and_a_file_that_is_not_sqlite(tmp_path):
    import pytest

    from autotune.errors import UsageError

    db = tmp_path / STUDY_DB
    db.write_bytes(b"")
    with pytest.raises(UsageError, match="empty file"):
        check_database(tmp_path)
    db.write_bytes(b"not a database at all, just some text" * 200)
    with pytest.raises(UsageError, match="not a SQLite database"):
        check_database(tmp_path)
    db.unlink()
    check_database(tmp_path)  # no file: nothing to check, and nothing created
    assert not db.exists()
    optuna.create_study(storage=make_storage(storage_url(tmp_path)), study_name="fine")
    check_database(tmp_path)
    assert os.path.getsize(db) > 0 and sqlite3.connect(db).execute("select count(*) from studies").fetchone() == (1,)
