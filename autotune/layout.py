"""The on-disk layout of a results directory: one directory per study, the names of the files
and directories in it, and the writes that keep it consistent. Every module names these paths
through here."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from autotune.errors import UsageError

# <results_dir>/<study>/
STUDY_DB = "study.db"  # the Optuna storage (SQLite), unless --storage names a server
TRIALS_DIR = "trials"  # one directory per trial number (`trial_dir`)
BEST_DIR = "best"  # the answer's deployable files, its manifest and the report (finalize, export)
REPORT_FILE = "report.md"
INPUTS_FILE = "inputs.npz"  # the held-out verification samples every trial is checked on
CALIBRATION_FILE = "calibration.npz"  # INT8/FP8 calibration batches, "<batch>/<input name>"
ARTIFACT_DIR = "artifacts"  # the dashboard's artifact store (finalize uploads the front's files)
CONTROLS_DIR = "controls"  # the drift controls' scratch directories
PAIRED_DIR = "paired"  # finalize's paired measurements' scratch directory
MANIFEST_FILE = "manifest.json"  # in best/ (and an export): what the answer is and how it was measured
PARETO_PLOT = "pareto.png"
PROFILE_FILE = "profile.json"  # where the time goes (also in the profiled trials' directories)
PID_FILE = "daemon.pid"  # the study lock (flock), naming the daemon's pid
STATE_FILE = "daemon.json"  # how the last daemon ended (the lock says whether one lives)
STOP_FILE = "stop.json"  # a stop request, persisted so that a resume does not tune past it
LOG_FILE = "autotune.log"  # the daemon's log

# <results_dir>/<study>/trials/<number>/
MODEL_FILE = "model.onnx"  # the candidate graph after the trial's passes and precision
METRICS_FILE = "metrics.json"  # the trial's result (kept when the rest is pruned)
ARRIVED_FILE = "arrived.json"  # a result that reached the daemon and is not yet told
OUTPUTS_FILE = "outputs.npz"  # the candidate's outputs on the verification samples
STAGE_FILE = "stage"  # the stage a trial is in, read by its supervisor when the trial dies


def trial_dir(study_dir: Path, number: int) -> Path:
    """Where trial `number` of the study in `study_dir` writes its files."""
    return study_dir / TRIALS_DIR / str(number)


def write_atomically(path: Path, text: str) -> bool:
    """Writes `text` to `path` through a temporary file and a rename, so that a reader never sees
    half a file; False (and no temporary left) when it cannot be written (a full disk)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
        return True
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def check_results_dir_writable(results_dir: Path) -> None:
    """UsageError when `results_dir` (or the nearest existing parent) is not writable: tried for
    real, a directory made and removed there, since permission bits say nothing for root and
    /proc refuses a directory whatever they say (`--results-dir /proc/autotune` was a traceback)."""
    probe = results_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {results_dir}: not writable ({probe} is not a writable directory)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".autotune-probe-", dir=probe))
    except OSError as exc:
        raise UsageError(
            f"--results-dir {results_dir}: not writable (a directory cannot be made in {probe}: "
            f"{exc.strerror or type(exc).__name__})"
        ) from None


def study_began(study_dir: Path) -> bool:
    """Whether the study in `study_dir` got as far as its storage: its inputs are written just
    before the storage is opened (both start paths), so a directory without them, nor a SQLite
    file nor trials, has no storage anywhere, not even on a `--storage` server."""
    return any((study_dir / name).exists() for name in (INPUTS_FILE, STUDY_DB, TRIALS_DIR))


def existing_dirs(study_dir: Path) -> tuple[Path, ...]:
    """The directories on the way to `study_dir` (the results directory's own parents excluded)
    that do not exist yet: what a start would create, and `remove_failed_start` may take back."""
    return tuple(path for path in (study_dir.parent, study_dir) if not path.exists())


def remove_failed_start(study_dir: Path, created: tuple[Path, ...]) -> bool:
    """Takes back what a start that failed before its study began wrote: the study directory
    (its lock, state and log) and the results directory, each only where this start `created` it
    (`existing_dirs` before the start), and only before the study began (`study_began`). True
    when something was removed.

    A failed start leaves nothing behind (issue 29: an unreachable --ray-address left a results
    directory whose study `list` did not show)."""

    if study_dir not in created or study_began(study_dir):
        return False
    shutil.rmtree(study_dir, ignore_errors=True)
    if study_dir.parent in created:
        try:
            study_dir.parent.rmdir()  # only while empty: another study may have arrived meanwhile
        except OSError:
            pass
    return True


def prune_trial_dirs(study_dir: Path, keep: set[int]) -> None:
    """Removes artifacts of trials off the front (metrics.json stays)."""
    trials_dir = study_dir / TRIALS_DIR
    if not trials_dir.is_dir():
        return
    for child in trials_dir.iterdir():
        if not child.is_dir() or not child.name.isdigit() or int(child.name) in keep:
            continue
        for item in child.iterdir():
            if item.name == METRICS_FILE:
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


def storage_url(study_dir: Path, storage: str | None = None) -> str:
    """`storage` when given, else the study's embedded SQLite database."""
    return storage or f"sqlite:///{(study_dir / STUDY_DB).resolve()}"


STUDY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


MAX_STUDY_NAME = 100  # a directory name, with room under NAME_MAX for the files inside


def check_study_name(name: str, flag: str = "study") -> str:
    """`name` when it names a study directory (letters, digits, `_.-`, at most 100 characters,
    no path); UsageError naming `flag` otherwise. Every command checks names the same way."""
    shown = name if len(name) <= 60 else name[:57] + "..."
    if len(name) > MAX_STUDY_NAME:
        raise UsageError(f"{flag} {shown!r}: a study name has at most {MAX_STUDY_NAME} characters ({len(name)} given)")
    if not STUDY_NAME.match(name):
        raise UsageError(f"{flag} {shown!r}: a study name is letters, digits, '_', '.' and '-', not a path")
    return name


# What the daemon's files say (the daemon writes them; every command reads them).


def lock_holder(study_dir: Path) -> int | None:
    """The pid of the live daemon holding the study lock, or None (no daemon, or a stale file)."""
    path = study_dir / PID_FILE
    if not path.exists():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def read_state(study_dir: Path) -> dict[str, Any]:
    """The daemon's last written state (`{}` when none or unreadable)."""
    try:
        data = json.loads((study_dir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def daemon_state(study_dir: Path) -> str:
    """running | starting | finalizing (pid N) | finished | stopped | failed: reason | crashed | not started.

    The lock decides whether a daemon lives; the state file only says how a dead one ended.
    """
    pid = lock_holder(study_dir)
    state = read_state(study_dir)
    if pid is not None:
        if state.get("state") in ("starting", "finalizing"):
            return f"{state['state']} (pid {pid})"
        return f"running (pid {pid})"
    if not (study_dir / STATE_FILE).exists():
        return "finished" if (study_dir / "report.md").exists() else "not started"
    name = str(state.get("state", "unknown"))
    if name == "failed":
        return f"failed: {state.get('reason', 'no reason recorded')}"
    # "running" or "starting" without a lock holder: the daemon died without saying so.
    if name in ("running", "starting", "finalizing", "unknown"):
        if name == "starting" and not state.get("external_storage") and not (study_dir / STUDY_DB).exists():
            # died before the study existed: there is nothing to resume (issue 25)
            return f"crashed before its first trial (nothing to resume: start it again with --study {study_dir.name})"
        return "crashed (resume with `autotune start --resume`)"
    return name
