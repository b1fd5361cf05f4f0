"""The on-disk layout of a results directory: one directory per study, the names of the files
and directories in it, and the writes that keep it consistent. Every module names these paths
through here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
    """UsageError when `results_dir` (or the nearest existing parent) is not writable."""
    probe = results_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {results_dir}: not writable ({probe} is not a writable directory)")


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
