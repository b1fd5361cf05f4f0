"""The daemon, Ray workers and fault tolerance, with a real local Ray cluster and SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from autotune.daemon import daemon_state, lock_holder
from tests.conftest import make_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
MISBEHAVING = "tests.crashing_target:MisbehavingTarget"

# Levels of the misbehaving target: "all" builds normally, "extended" builds normally too,
# "disable" aborts the worker, "basic" hangs.
SLOW_SPACE = """
knobs:
  graph_optimization_level: {type: categorical, choices: [all, extended], default: all}
  intra_op_threads: {type: int, low: 0, high: 2, default: 0}
  batch_size: {type: categorical, choices: [1, 2, 4, 8], default: 1}
"""
FAULTY_SPACE = """
knobs:
  graph_optimization_level: {type: categorical, choices: [all, disable, basic], default: all}
  batch_size: {type: categorical, choices: [1, 2], default: 1}
"""


def cli(*argv: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"autotune {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def load(results: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / name / 'study.db'}")


def finished(results: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return [t for t in load(results, name).trials if t.state.is_finished()]
    except Exception:  # noqa: BLE001 - any error of the library here is reported as this one line
        return []


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "tiny.onnx")


def space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def start_slow_study(
    tmp_path: Path, results: Path, name: str, *options: str, max_measure_s: str = "1.5", timeout: float = 180
) -> None:
    """Starts a study (detached unless `--foreground` is among `options`) on the misbehaving
    target, whose trials take over a second each."""
    cli(
        "start",
        str(tmp_path / "tiny.onnx"),
        "--study",
        name,
        *options,
        "--results-dir",
        str(results),
        "--target",
        MISBEHAVING,
        "--space",
        str(space(tmp_path, SLOW_SPACE)),
        "--max-measure-s",
        max_measure_s,
        timeout=timeout,
    )


def wait_until_running(results: Path, name: str, finished_at_least: int) -> None:
    wait_for(lambda: len(finished(results, name)) >= finished_at_least, 180, f"{finished_at_least} finished trials")
    wait_for(
        lambda: any(t.state == optuna.trial.TrialState.RUNNING for t in load(results, name).trials),
        60,
        "a running trial",
    )


def test_start_detaches_status_sees_trials_and_a_second_start_is_refused(tmp_path, model):
    results = tmp_path / "results"
    # One worker, trials of over a second each: the daemon is still running when the second
    # start comes (asserted below), so the refusal is checked on every run, never skipped.
    options = ["--study", "bg", "--trials", "6", "--workers", "1", "--results-dir", str(results), "--target", MISBEHAVING,
               "--space", str(space(tmp_path, SLOW_SPACE)), "--max-measure-s", "0.1"]  # fmt: skip
    proc = cli("start", str(model), *options)
    assert "study bg started" in proc.stdout
    assert str(results / "bg" / "autotune.log") in proc.stdout
    assert "autotune dashboard bg" in proc.stdout and "autotune stop bg" in proc.stdout
    pid = lock_holder(results / "bg")
    assert pid is not None and pid != os.getpid()
    # out of memory, the kernel ends the study's own processes before anyone else's (issue 25)
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "500"

    second = cli("start", str(model), *options, check=False)
    assert lock_holder(results / "bg") == pid  # the first daemon outlived the second start
    assert second.returncode == 2
    assert "already running" in second.stderr and str(pid) in second.stderr

    wait_for(lambda: len(finished(results, "bg")) >= 1, 120, "a first trial")
    status = cli("status", "bg", "--results-dir", str(results)).stdout
    assert "complete" in status
    wait_for(lambda: lock_holder(results / "bg") is None, 180, "the daemon to finish")
    assert len(finished(results, "bg")) == 6
    assert daemon_state(results / "bg") == "finished"
    assert (results / "bg" / "best" / "manifest.json").is_file()
    assert "daemon pid" in (results / "bg" / "autotune.log").read_text()


def test_kill_9_then_resume_loses_nothing_and_reruns_the_interrupted_trial(tmp_path, model):
    results = tmp_path / "results"
    start_slow_study(tmp_path, results, "crash", "--trials", "10")
    wait_until_running(results, "crash", finished_at_least=3)
    pid = lock_holder(results / "crash")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: lock_holder(results / "crash") is None, 30, "the lock to be released by the kernel")
    before = {t.number: (t.state, t.values) for t in load(results, "crash").trials if t.state.is_finished()}
    interrupted = [t for t in load(results, "crash").trials if t.state == optuna.trial.TrialState.RUNNING]
    assert interrupted

    cli("start", "--resume", "crash", "--target", MISBEHAVING, "--results-dir", str(results))
    wait_for(lambda: lock_holder(results / "crash") is None, 240, "the resumed daemon to finish")
    study = load(results, "crash")
    for number, (state, values) in before.items():
        assert study.trials[number].state == state
        assert study.trials[number].values == values
    log = (results / "crash" / "autotune.log").read_text()
    for trial in interrupted:
        again = study.trials[trial.number]
        if again.state == optuna.trial.TrialState.COMPLETE:
            # Its result had reached the daemon (journaled in arrived.json) before the kill: told
            # on resume, not re-run.
            assert f"trial {trial.number}: told its result, which had arrived before a stop" in log
            continue
        assert again.state == optuna.trial.TrialState.FAIL
        assert "interrupted" in again.user_attrs["reason"]
        reruns = [
            t
            for t in study.trials
            if t.number > trial.number and t.params == trial.params and t.state == optuna.trial.TrialState.COMPLETE
        ]
        assert reruns, f"trial {trial.number}'s configuration was not re-run"
    from autotune.study import finished_count

    assert finished_count(study) == 10  # interrupted trials and repeats do not count


def test_a_worker_abort_and_a_hanging_trial_fail_only_their_trials(tmp_path, model):
    results = tmp_path / "results"
    proc = cli(
        "start",
        str(model),
        "--foreground",
        "--study",
        "faulty",
        "--trials",
        "6",
        "--results-dir",
        str(results),
        "--target",
        MISBEHAVING,
        "--space",
        str(space(tmp_path, FAULTY_SPACE)),
        "--trial-timeout",
        "4s",
        "--max-measure-s",
        "0.1",
        timeout=300,
    )
    assert proc.returncode == 0
    from autotune.study import finished_count

    study = load(results, "faulty")
    assert finished_count(study) == 6
    by_level: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in study.trials:
        # Repeats and configurations a failure rule ruled out never ran: they are not faults.
        if trial.state.is_finished() and not {"duplicate_of", "ruled_out"} & set(trial.user_attrs):
            by_level.setdefault(trial.params["graph_optimization_level"], []).append(trial)
    aborted = by_level["disable"]
    assert aborted and all(t.state == optuna.trial.TrialState.FAIL for t in aborted)
    assert all("worker died: signal 6 (SIGABRT) during build" in t.user_attrs["reason"] for t in aborted)
    hung = by_level["basic"]
    assert hung and all(t.state == optuna.trial.TrialState.FAIL for t in hung)
    assert all("timed out after 4 s" in t.user_attrs["reason"] and "build" in t.user_attrs["reason"] for t in hung)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in by_level["all"])


def test_stop_finalizes_a_running_study(tmp_path, model):
    results = tmp_path / "results"
    start_slow_study(tmp_path, results, "stopme", "--budget", "10m")
    wait_for(lambda: len(finished(results, "stopme")) >= 2, 180, "two finished trials")
    out = cli("stop", "stopme", "--results-dir", str(results)).stdout
    assert "stops asking" in out
    wait_for(lambda: lock_holder(results / "stopme") is None, 120, "the daemon to stop")
    assert daemon_state(results / "stopme") == "finished"  # finalized: its answer is written (issue 26)
    assert (
        "stopped early by `autotune stop`: finalized what was measured"
        in (results / "stopme" / "autotune.log").read_text()
    )
    study = load(results, "stopme")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert (results / "stopme" / "report.md").is_file()
    manifest = json.loads((results / "stopme" / "best" / "manifest.json").read_text())
    assert manifest["study"] == "stopme"
    again = cli("stop", "stopme", "--results-dir", str(results), check=False)
    assert again.returncode == 2 and "no daemon" in again.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_answers_over_http_with_the_study_listed(tmp_path, model):
    results = tmp_path / "results"
    cli(
        "start",
        str(model),
        "--foreground",
        "--study",
        "dash",
        "--trials",
        "3",
        "--results-dir",
        str(results),
        "--max-measure-s",
        "0.05",
    )
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "dashboard", "dash", "--port", str(port), "--results-dir", str(results)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = {}

        def answered() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body["json"] = json.loads(response.read())
                return True
            except OSError:
                return False

        wait_for(answered, 60, "the dashboard to answer")
        names = [s["study_name"] for s in body["json"]["study_summaries"]]
        assert names == ["dash"]
    finally:
        server.terminate()
        server.wait(10)


def test_stop_now_ends_at_once_and_leaves_the_storage_consistent(tmp_path, model, monkeypatch):
    from tests.crashing_target import HOLD_ENV

    hold = tmp_path / "hold"
    monkeypatch.setenv(HOLD_ENV, str(hold))  # the daemon's trials wait in their build while it exists
    results = tmp_path / "results"
    hold.touch()  # every trial is held in its build: in flight when `stop --now` comes (an event, not a race)
    start_slow_study(tmp_path, results, "now", "--budget", "10m")
    wait_until_running(results, "now", finished_at_least=0)
    cli("stop", "now", "--now", "--results-dir", str(results))
    wait_for(lambda: lock_holder(results / "now") is None, 60, "the daemon to end")
    hold.unlink()
    study = load(results, "now")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    stopped = [t for t in study.trials if "stopped by `autotune stop --now`" in t.user_attrs.get("reason", "")]
    assert stopped and all(t.state == optuna.trial.TrialState.FAIL for t in stopped)
    assert daemon_state(results / "now") == "stopped"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least two CPU cores to split between workers")
def test_parallel_cpu_trials_are_pinned_to_disjoint_cores(tmp_path, model):
    results = tmp_path / "results"
    start_slow_study(
        tmp_path, results, "pinned", "--foreground", "--trials", "6", "--workers", "2", max_measure_s="0.2", timeout=300
    )
    trials = [
        t
        for t in load(results, "pinned").trials
        if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    core_sets = {tuple(t.user_attrs["details"]["build"]["cpu_affinity"]) for t in trials}
    per_worker = len(os.sched_getaffinity(0)) // 2
    assert len(core_sets) == 2
    first, second = core_sets
    assert len(first) == len(second) == per_worker
    assert not set(first) & set(second)

    def interval(t):
        return t.user_attrs["details"]["build"]["build_interval"]

    overlapping = [
        (a, b)
        for a in trials
        for b in trials
        if a.number < b.number and interval(a)[0] < interval(b)[1] and interval(b)[0] < interval(a)[1]
    ]
    assert overlapping, "two trials should have run at the same time"
    for a, b in overlapping:
        assert a.user_attrs["details"]["build"]["cpu_affinity"] != b.user_attrs["details"]["build"]["cpu_affinity"]
