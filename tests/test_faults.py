"""Fault injection against the daemon and the commands (issue 12): stops at every stage of a
daemon's life, kills, corrupt and copied study directories, bad names and flags, bounds.

The daemon tests run the real daemon with a local Ray cluster and SQLite; each asserts trial
counts by state before and after the fault, the baseline's presence, and the final `best/`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import onnx
import optuna
import psutil
import pytest

from autotune.daemon import STATE_FILE, _without_storage, daemon_state, lock_holder, write_state
from autotune.errors import UsageError
from tests.conftest import make_dynamic_hw_model, make_tiny_model
from tests.test_daemon import MISBEHAVING, SLOW_SPACE, cli, finished, load, wait_for

LONG_NAME = "a" * 300


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, enqueued (WAITING) ones left out."""
    by_state: dict[str, int] = {}
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.WAITING:
            by_state[trial.state.name] = by_state.get(trial.state.name, 0) + 1
    return by_state


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(capsys, *argv: str) -> Ran:
    """`autotune ARGV` in this process (commands that start nothing): exit code and output."""
    from autotune.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def baseline(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    from autotune.answer import default_trial

    return default_trial(study)


def one_line_error(proc, *needles: str) -> None:
    """Exit 2 with a single stderr line (no traceback) containing every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def wait_in_log(study_dir: Path, text: str, timeout_s: float = 180) -> None:
    log = study_dir / "autotune.log"
    wait_for(lambda: log.exists() and text in log.read_text(errors="replace"), timeout_s, repr(text))


def wait_daemon_gone(study_dir: Path, timeout_s: float = 180) -> None:
    wait_for(lambda: lock_holder(study_dir) is None, timeout_s, f"the daemon of {study_dir.name} to end")


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A results directory holding one finalized study `ok` (foreground, in-process)."""
    root = tmp_path_factory.mktemp("finished")
    model = make_tiny_model(root / "tiny.onnx")
    results = root / "results"
    cli("start", str(model), "--foreground", "--no-ray", "--study", "ok", "--trials", "2",
        "--results-dir", str(results), "--max-measure-s", "0.05", timeout=300)  # fmt: skip
    assert (results / "ok" / "best" / "manifest.json").is_file()
    return results


# ---------------------------------------------------------------- directories and names


def test_a_corrupt_database_is_one_line_naming_the_file_for_that_study_only(finished_study, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(finished_study, results)
    shutil.copytree(results / "ok", results / "garbage")
    for extra in ("study.db-wal", "study.db-shm"):
        (results / "garbage" / extra).unlink(missing_ok=True)
    (results / "garbage" / "study.db").write_bytes(os.urandom(4096))
    shutil.copytree(results / "ok", results / "malformed")
    with open(results / "malformed" / "study.db", "r+b") as handle:  # a valid header, broken pages
        handle.seek(100)
        handle.write(os.urandom(20000))
    (results / "empty").mkdir()
    (results / "empty" / "study.db").touch()

    for name in ("garbage", "malformed"):
        db = str(results / name / "study.db")
        for command in ("status", "report"):
            one_line_error(run_main(capsys, command, name, "--results-dir", str(results)), db)
        one_line_error(run_main(capsys, "start", "--resume", name, "--results-dir", str(results)), db)
    # A 0-byte file never silently becomes a new study.
    model = finished_study.parent / "tiny.onnx"
    started = run_main(capsys, "start", str(model), "--study", "empty", "--results-dir", str(results))
    one_line_error(started, str(results / "empty" / "study.db"), "empty file")
    assert (results / "empty" / "study.db").stat().st_size == 0
    assert not (results / "empty" / STATE_FILE).exists()

    listing = run_main(capsys, "list", "--results-dir", str(results))
    assert listing.returncode == 0 and "Traceback" not in listing.stderr
    rows = listing.stdout
    assert "ok" in rows and f"unreadable: {results / 'garbage' / 'study.db'}" in rows
    assert counts(load(results, "ok")) == {"COMPLETE": 2}


def test_a_copied_results_dir_is_its_own_study_and_imports_nothing_named_in_it(
    finished_study, tmp_path, capsys, monkeypatch
):
    copy = tmp_path / "copy"
    shutil.copytree(finished_study, copy)
    original_report = (finished_study / "ok" / "report.md").read_text()
    original_mtime = (finished_study / "ok" / "report.md").stat().st_mtime_ns
    (copy / "ok" / "report.md").unlink()
    # A database naming a module as its target: no command may import it.
    marker = tmp_path / "imported"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    load(copy, "ok").set_user_attr("target", "evil_plugin:Target")
    monkeypatch.syspath_prepend(str(plugins))
    assert run_main(capsys, "report", "ok", "--results-dir", str(copy)).returncode == 0
    status = run_main(capsys, "status", "ok", "--results-dir", str(copy))
    exported = run_main(capsys, "export", "ok", "--trial", "0", "-o", str(tmp_path / "out"), "--results-dir", str(copy))
    assert (copy / "ok" / "report.md").is_file()  # written in the copy ...
    assert (finished_study / "ok" / "report.md").read_text() == original_report  # ... not in the original
    assert (finished_study / "ok" / "report.md").stat().st_mtime_ns == original_mtime
    assert "not imported" in status.stdout
    assert exported.returncode == 2 and "Traceback" not in exported.stderr
    assert not marker.exists()
    assert counts(load(copy, "ok")) == counts(load(finished_study, "ok")) == {"COMPLETE": 2}
    assert baseline(load(copy, "ok")) is not None


@pytest.mark.parametrize("name", ["../ok", LONG_NAME])
def test_every_command_checks_study_names_alike(finished_study, tmp_path, capsys, name):
    results = str(finished_study)
    for argv in (
        ("status", name),
        ("report", name),
        ("stop", name),
        ("dashboard", name),
        ("export", name, "-o", str(tmp_path / "out")),
    ):
        one_line_error(run_main(capsys, *argv, "--results-dir", results), "study name")
    one_line_error(run_main(capsys, "start", "--resume", name, "--results-dir", results), "--resume")
    assert not (tmp_path / "out").exists()


def test_a_300_character_study_name_is_refused_with_nothing_written(finished_study, tmp_path, capsys):
    results = tmp_path / "results"
    model = finished_study.parent / "tiny.onnx"
    proc = run_main(capsys, "start", str(model), "--study", LONG_NAME, "--results-dir", str(results))
    one_line_error(proc, "--study", "at most 100 characters")
    assert not results.exists()


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (("--workers", "0"), ("--workers",)),
        (("--storage", "bogus://x"), ("--storage bogus://x",)),
        (("--storage", "postgresql://me:hunter2@127.0.0.1:1/db"), ("--storage", "***")),
        (("--ray-address", "127.0.0.1:1"), ("--ray-address 127.0.0.1:1", "no Ray cluster")),
        (("--trial-timeout", "soon"), ("--trial-timeout 'soon'",)),
    ],
)
def test_bad_start_flags_fail_before_started_with_nothing_written(finished_study, tmp_path, capsys, flags, needles):
    results = tmp_path / "results"
    model = finished_study.parent / "tiny.onnx"
    proc = run_main(capsys, "start", str(model), *flags, "--results-dir", str(results))
    one_line_error(proc, *needles)
    assert "--budget" not in proc.stderr and "hunter2" not in proc.stderr
    assert "started" not in proc.stdout
    assert not results.exists()


def test_a_ray_address_that_answers_but_is_not_ray_is_one_line_in_seconds(finished_study, tmp_path, capsys):
    import http.server
    import threading

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # the server's log would share the CLI's stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    results = tmp_path / "results"
    try:
        began = time.monotonic()
        proc = run_main(capsys, "start", str(finished_study.parent / "tiny.onnx"), "--ray-address", address,
                        "--results-dir", str(results))  # fmt: skip
        took = time.monotonic() - began
    finally:
        server.shutdown()
        server.server_close()
    one_line_error(proc, f"--ray-address {address}", "not a Ray cluster's head")
    assert took < 60  # Ray's own retries take minutes; the handshake probe gives up after 5 s
    assert not results.exists()


# ---------------------------------------------------------------- bounds


def test_a_huge_int_range_is_sampled_without_materializing_it(tmp_path):
    from autotune.space import load_space
    from autotune.sweep import sweep_configs, unmeasured_config
    from autotune.targets.onnxruntime import OnnxRuntimeTarget

    path = tmp_path / "space.yaml"
    path.write_text(
        "knobs:\n"
        "  intra_op_threads: {type: int, low: 0, high: 100000000, default: 0}\n"
        "  graph_optimization_level: {type: categorical, choices: [all, basic], default: all}\n"
    )
    tracemalloc.start()
    try:
        space = load_space(path, OnnxRuntimeTarget())
        sweep = sweep_configs(space)
        fresh = unmeasured_config(space, set(), lambda c: True, seed=0)
        study = optuna.create_study()
        sampled = space.sample(study.ask())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak} bytes traced"
    assert {c["intra_op_threads"] for c in sweep} >= {50000000, 100000000}
    assert 0 <= fresh["intra_op_threads"] <= 100000000 and 0 <= sampled["intra_op_threads"] <= 100000000


def test_a_batch_range_of_10_to_the_12_is_read_by_its_ends():
    """`start` with such a space spun forever finding the range's maximum (issue 25)."""
    from autotune.spec import largest_int

    assert largest_int(range(1, 10**12 + 1)) == 10**12
    assert largest_int(range(64, 0, -8)) == 64
    assert largest_int(range(0)) == 1 and largest_int([1, 8, 4]) == 8


def test_yaml_aliases_in_a_space_file_are_refused(tmp_path):
    from autotune.space import load_space
    from autotune.targets.onnxruntime import OnnxRuntimeTarget

    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb) + "\nknobs: {intra_op_threads: {type: int, low: 0, high: 2, default: 0}}\n")
    with pytest.raises(UsageError, match="aliases"):
        load_space(path, OnnxRuntimeTarget())


# ---------------------------------------------------------------- secrets, digests, state


def test_the_model_digest_covers_external_data(tmp_path):
    from autotune.model import load_model_info

    model = onnx.load(str(make_tiny_model(tmp_path / "inline.onnx")))
    path = tmp_path / "external.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    before = load_model_info(path).sha256
    weights = bytearray((tmp_path / "weights.bin").read_bytes())
    weights[0] ^= 0xFF
    (tmp_path / "weights.bin").write_bytes(bytes(weights))
    assert load_model_info(path).sha256 != before
    inline = load_model_info(tmp_path / "inline.onnx")
    from autotune.model import file_sha256

    assert inline.sha256 == file_sha256(tmp_path / "inline.onnx")  # unchanged for a self-contained model


def test_the_storage_url_is_taken_out_of_the_daemon_argv():
    argv = ["m.onnx", "--storage", "postgresql://me:pw@h/db", "--trials", "3", "--storage=sqlite:///x.db"]
    kept, storage = _without_storage(argv)
    assert kept == ["m.onnx", "--trials", "3"] and storage == "sqlite:///x.db"


def test_a_state_file_without_a_lock_holder_is_never_running(tmp_path):
    study_dir = tmp_path / "s"
    study_dir.mkdir()
    for state in ("running", "starting"):
        (study_dir / STATE_FILE).write_text(json.dumps({"state": state, "pid": 1}))
        assert daemon_state(study_dir).startswith("crashed")
    # The atomic write cannot create its temporary file: it falls back to writing in place.
    (study_dir / (STATE_FILE + ".tmp")).mkdir()
    assert write_state(study_dir, "failed", reason="OSError: [Errno 28] No space left on device")
    assert daemon_state(study_dir) == "failed: OSError: [Errno 28] No space left on device"


# ---------------------------------------------------------------- the daemon, stopped and killed


def start_daemon(model: Path, results: Path, name: str, *flags: str, target: str | None = None,
                 space: Path | None = None, max_measure_s: str = "0.05"):  # fmt: skip
    extra = [*(["--target", target] if target else []), *(["--space", str(space)] if space else [])]
    return cli("start", str(model), "--study", name, "--results-dir", str(results), "--max-measure-s",
               max_measure_s, *extra, *flags, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_stop_right_after_start_and_during_finalize_lets_it_finish_and_stop_now_ends_it_resumable(tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    results = tmp_path / "results"
    study_dir = results / "fin"
    storage = f"sqlite:///{tmp_path}/team.db"  # stands for a URL with a password

    def load_fin() -> optuna.Study:
        return optuna.load_study(study_name="fin", storage=storage)

    out = start_daemon(model, results, "fin", "--budget", "10m", "--storage", storage, max_measure_s="0.2").stdout
    assert "started" in out
    pid = lock_holder(study_dir)
    assert "team.db" not in Path(f"/proc/{pid}/cmdline").read_text()  # the URL stays out of argv
    assert "stops asking" in cli("stop", "fin", "--results-dir", str(results)).stdout  # right after start
    stopped_at = datetime.datetime.now()  # Optuna's trial times are this clock's (local, naive)
    wait_in_log(study_dir, "finalizing")
    cli("stop", "fin", "--results-dir", str(results))  # again, during finalize: it finishes all the same
    wait_daemon_gone(study_dir)
    assert daemon_state(study_dir) == "finished"  # finalized (issue 26)
    assert "already finalizing" in (study_dir / "autotune.log").read_text()
    study = load_fin()
    done = counts(study).get("COMPLETE", 0)
    # In flight finished, nothing asked after the stop. On a busy machine the stop can land after
    # many trials, and one of them may have been cut as too slow (PRUNED): a measured outcome.
    assert done >= 1 and set(counts(study)) <= {"COMPLETE", "PRUNED"}
    assert [t.number for t in study.trials if t.datetime_start and t.datetime_start > stopped_at] == []
    assert not [t.number for t in study.trials if any(
        word in str(t.user_attrs.get("reason", "")) for word in ("stopped", "cancelled", "interrupted"))]  # fmt: skip
    assert baseline(study) is not None and (study_dir / "report.md").is_file()
    first = json.loads((study_dir / "best" / "manifest.json").read_text())

    from autotune.study import finished_count

    # --trials counts a trial cut as too slow (PRUNED) too: with one such trial above, `done + 1`
    # was already reached and the resumed run asked nothing (seen with a second suite beside it)
    goal = finished_count(study) + 1
    cli("start", "--resume", "fin", "--trials", str(goal), "--storage", storage, "--results-dir", str(results),
        timeout=300)  # fmt: skip
    wait_for(lambda: "finalizing" in (study_dir / "autotune.log").read_text().split("daemon pid")[-1], 180,
             "the resumed daemon to finalize")  # fmt: skip
    cli("stop", "--now", "fin", "--results-dir", str(results))
    wait_daemon_gone(study_dir, 60)
    assert daemon_state(study_dir) == "stopped"
    assert "stopped during finalize" in (study_dir / "autotune.log").read_text()
    study = load_fin()
    # one more trial was told (complete, or cut as too slow on a busy machine); resumable: nothing running
    assert finished_count(study) == goal and set(counts(study)) <= {"COMPLETE", "PRUNED"}
    assert counts(study).get("COMPLETE", 0) >= done and baseline(study) is not None
    assert json.loads((study_dir / "best" / "manifest.json").read_text()) == first  # best/ never half-written
    assert not (study_dir / "stop.json").exists()


@pytest.mark.slow
def _owner(ray_dir: Path) -> int | None:
    try:
        return int((ray_dir / "owner.pid").read_text())
    except (OSError, ValueError):
        return None


def test_kill_9_in_trial_0_then_stop_now_then_resume_measure_the_defaults_as_baseline(tmp_path, monkeypatch):
    from tests.crashing_target import HOLD_ENV

    hold = tmp_path / "hold"
    monkeypatch.setenv(HOLD_ENV, str(hold))
    model = make_tiny_model(tmp_path / "tiny.onnx")
    results = tmp_path / "results"
    study_dir = results / "k9"
    space = tmp_path / "space.yaml"
    space.write_text(SLOW_SPACE)
    start_daemon(model, results, "k9", "--trials", "2", target=MISBEHAVING, space=space)
    # `start` returned once trial 0 was dispatched: it is running now (its build sleeps 1 s).
    pid = lock_holder(study_dir)
    os.kill(pid, signal.SIGKILL)
    wait_daemon_gone(study_dir, 30)
    assert daemon_state(study_dir).startswith("crashed")
    # what the killed daemon's Ray cluster left: its directory, and agents that name it (issue 25)
    left = [d for d in Path(tempfile.gettempdir()).glob("autotune-ray-*") if _owner(d) == pid]
    assert len(left) == 1
    study = load(results, "k9")
    assert counts(study) == {"RUNNING": 1} and study.trials[0].state == optuna.trial.TrialState.RUNNING
    defaults = study.trials[0].params

    # The resumed daemon re-runs the defaults first; `stop --now` cuts that trial short too
    # (held in its build until the stop is asked).
    hold.touch()
    cli("start", "--resume", "k9", "--target", MISBEHAVING, "--results-dir", str(results), timeout=300)
    cli("stop", "--now", "k9", "--results-dir", str(results))
    wait_daemon_gone(study_dir, 60)  # `stop --now` ends the held trials: nothing is let go before
    hold.unlink()
    assert daemon_state(study_dir) == "stopped"
    # the resumed daemon ended them before it started its own cluster
    assert not left[0].exists()
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(left[0]) in " ".join(p.info["cmdline"] or ())]
    study = load(results, "k9")
    cancelled = [t for t in study.trials if t.user_attrs.get("cancelled")]
    assert counts(study) == {"FAIL": 2} and study.trials[0].user_attrs["interrupted"]
    assert len(cancelled) == 1 and cancelled[0].params == defaults and baseline(study) is None

    cli("start", "--resume", "k9", "--target", MISBEHAVING, "--results-dir", str(results), timeout=300)
    wait_daemon_gone(study_dir, 240)
    study = load(results, "k9")
    zero = baseline(study)
    assert zero is not None and zero.number > cancelled[0].number and zero.user_attrs.get("baseline")
    assert zero.params == defaults
    from autotune.study import finished_count

    assert finished_count(study) == 2 and counts(study) == {"FAIL": 2, "COMPLETE": 2}
    assert json.loads((study_dir / "best" / "manifest.json").read_text())["study"] == "k9"


def test_a_shape_too_big_for_memory_is_one_line_before_anything_is_allocated(tmp_path, capsys):
    # 3x100000x100000 float32 is 112 GiB a sample: more than any machine this runs on has free.
    model = make_dynamic_hw_model(tmp_path / "image.onnx")
    results = tmp_path / "results"
    proc = run_main(capsys, "start", str(model), "--shape", "100000x100000", "--batch", "1",
                    "--results-dir", str(results))  # fmt: skip
    one_line_error(proc, "--shape", "GiB", "1 samples per pool")
    assert not results.exists()


def test_the_synthetic_pool_shrinks_to_the_batch_asked_when_eight_samples_do_not_fit(tmp_path):
    from autotune.model import POOL_BATCH, load_model_info, synthetic_pool_bytes, synthetic_samples_that_fit

    info = load_model_info(make_dynamic_hw_model(tmp_path / "image.onnx"))
    shape = {"x": [1, 3, 2000, 2000]}
    one = synthetic_pool_bytes(info, shape, 1)
    assert one == 3 * 2000 * 2000 * 4  # float32 drawn as float32: no float64 copy
    assert synthetic_pool_bytes(info, shape, POOL_BATCH) == POOL_BATCH * one
    # Room for two pools of 8: 8; room for two pools of 1 only: the batch asked (1); room for
    # neither: the bytes the caller reports.
    assert synthetic_samples_that_fit(info, shape, 1, 2 * POOL_BATCH * one) == (POOL_BATCH, 2 * POOL_BATCH * one)
    assert synthetic_samples_that_fit(info, shape, 1, 2 * one) == (1, 2 * one)
    assert synthetic_samples_that_fit(info, shape, 4, 2 * one) == (4, 8 * one)
    assert synthetic_samples_that_fit(info, shape, 1, one) == (1, 2 * one)


def test_a_float32_pool_peaks_at_its_own_size(tmp_path):
    from autotune.model import load_model_info, synthetic_pool

    info = load_model_info(make_dynamic_hw_model(tmp_path / "image.onnx"))
    tracemalloc.start()
    try:
        pool = synthetic_pool(info, {"x": [1, 3, 1000, 1000]}, seed=0, samples=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = pool["x"].nbytes
    assert pool["x"].dtype == np.float32 and pool["x"].shape == (2, 3, 1000, 1000) and size == 24_000_000
    assert -1.0 <= pool["x"].min() and pool["x"].max() < 1.0 and abs(float(pool["x"].mean())) < 0.01
    assert peak < 1.2 * size  # drawn through float64 it would peak at 3x


def _descendants_named(root: int, title: str) -> list[int]:
    """Live processes under `root` whose command line starts with `title` (Ray's proctitle)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, root):
            ancestor = parents.get(ancestor)
        if ancestor == root:
            try:
                if (Path("/proc") / str(pid) / "cmdline").read_bytes().startswith(title.encode()):
                    found.append(pid)
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_stopped_ray_worker_is_killed_at_the_trial_timeout(tmp_path, monkeypatch):
    from autotune import workers
    from autotune.cli import build_parser, prepare_start
    from autotune.study import compute_references
    from autotune.study._loop import StudyRun, _request

    model = make_tiny_model(tmp_path / "tiny.onnx")
    space = tmp_path / "space.yaml"
    space.write_text(SLOW_SPACE)
    args = build_parser().parse_args(["start", str(model), "--target", MISBEHAVING, "--space", str(space),
                                      "--results-dir", str(tmp_path / "results")])  # fmt: skip
    spec, _ = prepare_start(args)
    request = _request(spec, 0, spec.space.default_config(), compute_references(spec), StudyRun(0.0, None))
    request.workdir.mkdir(parents=True)
    monkeypatch.setattr(workers, "WORKER_TIMEOUT_SLACK_S", 3.0)
    executor = workers.RayExecutor(1, trial_timeout_s=2.0)
    stopped: list[int] = []
    try:
        submitted = time.monotonic()
        executor.submit(request)
        wait_for(lambda: bool(_descendants_named(os.getpid(), "ray::_remote_trial")), 60, "the trial's Ray worker")
        stopped = _descendants_named(os.getpid(), "ray::_remote_trial")
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        results: list = []
        wait_for(lambda: bool(results.extend(executor.wait(0.5)) or results), 60, "the trial to be failed")
        elapsed = time.monotonic() - submitted
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        executor.close()
    (result,) = results
    assert result.state == "failed" and "--trial-timeout" in result.reason and "did not answer" in result.reason
    assert elapsed < 2.0 + 3.0 + 30  # not the child's hour: the driver ended it


TOLD = re.compile(r"trial (\d+) (complete|failed|pruned):")


@pytest.mark.slow
def test_kill_9_at_random_times_after_each_of_several_resumes_loses_no_told_trial(tmp_path):
    """Issue 25's fault: told trials were lost by a kill -9 after a resume (the resumed daemon
    wrote into a deleted WAL). Four daemons in a row, each killed at a random moment after it
    told a trial: every trial any daemon's log says it told is in the database, finished, with
    that state, and no trial number is told twice."""
    import random

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    model = make_tiny_model(tmp_path / "tiny.onnx")
    results = tmp_path / "results"
    study_dir = results / "rk"
    space = tmp_path / "space.yaml"
    space.write_text(SLOW_SPACE)
    start_daemon(model, results, "rk", "--trials", "200", target=MISBEHAVING, space=space)
    told: dict[int, str] = {}
    for round_ in range(4):
        if round_:
            cli("start", "--resume", "rk", "--target", MISBEHAVING, "--results-dir", str(results), timeout=300)
        log = study_dir / "autotune.log"
        before = len(TOLD.findall(log.read_text(errors="replace")))
        wait_for(lambda: len(TOLD.findall(log.read_text(errors="replace"))) > before, 180, "a trial told")  # noqa: B023
        time.sleep(rng.uniform(0, 1.5))  # a random moment after the tell (what is waited for is above)
        os.kill(lock_holder(study_dir), signal.SIGKILL)
        wait_daemon_gone(study_dir, 30)
        for number, state in TOLD.findall(log.read_text(errors="replace")):
            assert told.setdefault(int(number), state) == state, f"trial {number} told twice (seed {seed})"
    stored = {t.number: t.state for t in load(results, "rk").trials}
    by_name = {"complete": optuna.trial.TrialState.COMPLETE, "failed": optuna.trial.TrialState.FAIL,
               "pruned": optuna.trial.TrialState.PRUNED}  # fmt: skip
    lost = {n: s for n, s in told.items() if stored.get(n) != by_name[s]}
    assert not lost, f"told but not stored as told: {lost} (seed {seed})"
    assert len(told) >= 4


def test_a_result_that_arrived_before_the_daemon_died_is_told_on_resume(finished_study, tmp_path):
    from autotune.cli import build_parser, prepare_start
    from autotune.layout import ARRIVED_FILE
    from autotune.study._loop import StudyRun, recover_state
    from autotune.trial import TrialResult

    results = tmp_path / "results"
    shutil.copytree(finished_study, results)
    study = load(results, "ok")
    trial = study.ask()  # RUNNING, as a dead daemon leaves a trial whose result it had received
    arrived = TrialResult(
        number=trial.number, config={}, state="complete", batch_size=1,
        measurements={"latency_ms_p50": 0.5, "throughput": 2000.0},
        accuracy={"passed": True, "normalized_error": 0.0},
    )  # fmt: skip
    path = results / "ok" / "trials" / str(trial.number) / ARRIVED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(arrived.as_dict()))
    before = counts(load(results, "ok"))

    spec, _ = prepare_start(build_parser().parse_args(["start", "--resume", "ok", "--results-dir", str(results)]))
    recover_state(load(results, "ok"), StudyRun(0.0, None), spec.space, spec)
    after = load(results, "ok")
    assert before == {"COMPLETE": 2, "RUNNING": 1} and counts(after) == {"COMPLETE": 3}
    assert after.trials[trial.number].values[0] == 2000.0 and not path.exists()
    assert baseline(after) is not None


@pytest.mark.slow
def test_a_daemon_that_fails_before_its_first_trial_makes_start_fail_and_status_say_why(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    results = tmp_path / "results"
    (results / "broken").mkdir(parents=True)
    (results / "broken" / "trials").write_text("a file where the daemon needs a directory")  # an OSError at start
    proc = cli("start", str(model), "--study", "broken", "--trials", "2", "--results-dir", str(results),
               check=False, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and "started" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "failed at start" in lines[0] and "trials" in lines[0], proc.stderr
    assert daemon_state(results / "broken").startswith("failed: ")
    assert lock_holder(results / "broken") is None
    status = run_main(capsys, "status", "broken", "--results-dir", str(results))
    one_line_error(status, "failed: ", "trials")


@pytest.mark.slow
def test_a_stop_its_daemon_never_finished_is_honoured_by_the_resumed_daemon(finished_study, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(finished_study, results)
    # `autotune stop` persisted its request; the daemon it was sent to died before finishing it.
    (results / "ok" / "stop.json").write_text(json.dumps({"now": False, "time": 0}))
    before = counts(load(results, "ok"))
    cli("start", "--resume", "ok", "--trials", "6", "--results-dir", str(results), timeout=300)
    wait_daemon_gone(results / "ok")
    study = load(results, "ok")
    assert before == counts(study) == {"COMPLETE": 2}  # finalized, not tuned past the stop
    assert daemon_state(results / "ok") == "finished" and not (results / "ok" / "stop.json").exists()
    assert baseline(study) is not None and (results / "ok" / "best" / "manifest.json").is_file()
    assert "finalizing without tuning" in (results / "ok" / "autotune.log").read_text()


class _LateExecutor:
    """Real trials, run in this process, whose results come back on the next wait (as Ray's
    do): an asynchronous executor. Records what was told when each trial was submitted."""

    capacity = 1
    asynchronous = True

    def __init__(self, storage: str, name: str) -> None:
        from autotune.trial import run_trial

        self._run, self._ready, self.storage, self.name = run_trial, [], storage, name
        self.told_at_submit: list[tuple[int, int]] = []

    def submit(self, request) -> None:
        told = [
            t for t in optuna.load_study(study_name=self.name, storage=self.storage).trials if t.state.is_finished()
        ]
        self.told_at_submit.append((request.number, len(told)))
        self._ready.append(self._run(request))

    def wait(self, timeout_s: float) -> list:
        ready, self._ready = self._ready, []
        return ready

    def in_flight(self) -> int:
        return len(self._ready)

    def cancel_all(self, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_results_are_told_before_the_next_ask_when_they_cannot_be_journaled(tmp_path):
    """A full disk: `arrived.json` cannot be written, so each result is told before the next
    trial is asked for (none may be lost with the daemon)."""
    from autotune.cli import build_parser, prepare_start
    from autotune.layout import ARRIVED_FILE
    from autotune.study import run_study

    model = make_tiny_model(tmp_path / "tiny.onnx")
    results = tmp_path / "results"
    args = build_parser().parse_args(["start", str(model), "--study", "full", "--trials", "2", "--results-dir",
                                      str(results), "--max-measure-s", "0.05"])  # fmt: skip
    spec, _ = prepare_start(args)
    for number in range(6):  # where the journal would go, a directory: every write of it fails
        (results / "full" / "trials" / str(number) / ARRIVED_FILE).mkdir(parents=True)
    executor = _LateExecutor(spec.storage_url, "full")
    study = run_study(spec, executor, references=None)
    assert counts(study) == {"COMPLETE": 2} and baseline(study) is not None
    told = [told for number, told in executor.told_at_submit if number >= 0]  # drift controls aside
    assert told == [0, 1]  # each result told before the next ask

    # Where the journal can be written, the next trial is dispatched before the tell (the
    # storage writes overlap the trial), and no journal is left once told.
    spec, _ = prepare_start(build_parser().parse_args(["start", str(model), "--study", "roomy", "--trials", "2",
                                                       "--results-dir", str(results), "--max-measure-s", "0.05"]))  # fmt: skip
    executor = _LateExecutor(spec.storage_url, "roomy")
    study = run_study(spec, executor, references=None)
    assert counts(study) == {"COMPLETE": 2}
    assert [told for number, told in executor.told_at_submit if number >= 0] == [0, 0]
    assert not list((results / "roomy" / "trials").glob(f"*/{ARRIVED_FILE}"))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 48 MiB filesystem (tmpfs) to fill: needs the right to mount (root here and in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> None:
    """Writes zeros to `path` until the filesystem refuses. When the study filled the disk
    first, says with a warning what filled it (the test goes on: the disk is full either way)."""
    written = 0
    try:
        with open(path, "wb") as handle:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
                written += 1
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    assert shutil.disk_usage(path.parent).free < 1 << 20
    if written == 0:
        largest = sorted(
            (p.stat().st_size, str(p.relative_to(path.parent))) for p in path.parent.rglob("*") if p.is_file()
        )
        warnings.warn(f"the study filled the {path.parent} disk itself; largest files: {largest[-5:]}", stacklevel=2)


@pytest.mark.slow
def test_a_disk_that_fills_mid_study_loses_nothing_told_and_resumes(small_disk, tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    results = small_disk / "results"
    study_dir = results / "full"
    cli("start", str(model), "--study", "full", "--trials", "5000", "--budget", "3m", "--no-ray",
        "--results-dir", str(results), "--max-measure-s", "0.05")  # fmt: skip
    wait_for(lambda: sum(t.state.name == "COMPLETE" for t in finished(results, "full")) >= 5, 120, "5 trials")
    _fill(small_disk / "filler")
    # What was told before the disk filled: nothing of it may be lost, changed or duplicated.
    told = {t.number: t.values for t in load(results, "full").trials if t.state.name == "COMPLETE"}
    wait_daemon_gone(study_dir, 120)

    state = json.loads((study_dir / STATE_FILE).read_text())
    assert state["state"] == "failed" and "is full" in state["reason"] and str(study_dir) in state["reason"], state
    status = cli("status", "full", "--results-dir", str(results))
    assert "failed: the disk holding" in " ".join(status.stdout.split()), status.stdout
    after_fill = {t.number: t.values for t in load(results, "full").trials if t.state.name == "COMPLETE"}
    assert {n: after_fill.get(n) for n in told} == told

    from autotune.study import finished_count

    (small_disk / "filler").unlink(missing_ok=True)
    subprocess.run(["mount", "-o", "remount,size=96m", str(small_disk)], check=True)  # and room, whatever filled it
    goal = finished_count(load(results, "full")) + 3  # --trials counts failed trials too (those the full disk failed)
    cli("start", "--resume", "full", "--trials", str(goal), "--foreground", "--results-dir", str(results), timeout=300)
    study = load(results, "full")
    resumed = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    assert {n: resumed.get(n) for n in after_fill} == after_fill
    assert finished_count(study) >= goal and len(resumed) > len(after_fill)
    assert "RUNNING" not in counts(study) and baseline(study) is not None
    assert daemon_state(study_dir) == "finished", daemon_state(study_dir)
    assert json.loads((study_dir / "best" / "manifest.json").read_text())["study"] == "full"


def test_a_foreground_run_takes_the_study_lock_like_a_daemon(finished_study, tmp_path, capsys):
    from autotune.daemon import PID_FILE, StudyLock

    results = tmp_path / "results"
    shutil.copytree(finished_study, results)
    lock = StudyLock(results / "ok" / PID_FILE)
    lock.acquire()  # as a running daemon holds it
    try:
        before = counts(load(results, "ok"))
        proc = run_main(capsys, "start", "--resume", "ok", "--trials", "4", "--foreground", "--no-ray",
                        "--results-dir", str(results))  # fmt: skip
    finally:
        lock.release()
    one_line_error(proc, "already running")
    assert counts(load(results, "ok")) == before


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("bogus://x", "cannot open this storage (NoSuchModuleError"),
        # the server's own words, not Optuna's "invalid data in the commit" (issue 25)
        ("postgresql+psycopg2://me:hunter2@127.0.0.1:1/db", "Connection refused"),
        # SQLAlchemy's default PostgreSQL driver is psycopg (3); its absence is named, with the way out
        ("postgresql://me:hunter2@127.0.0.1:1/db", "the database driver 'psycopg' is not installed"),
    ],
)
def test_list_with_a_storage_it_cannot_open_is_one_line_without_the_password(tmp_path, capsys, url, why):
    import importlib.util

    if "driver" in why and importlib.util.find_spec("psycopg") is not None:
        why = "cannot open this storage"  # psycopg installed: the refused connection is said instead
    proc = run_main(capsys, "list", "--storage", url, "--results-dir", str(tmp_path))
    one_line_error(proc, "--storage", why)
    assert "hunter2" not in proc.stderr


@pytest.mark.parametrize(
    ("stored", "flag"),
    [
        ({"metric": "this:s"}, "--metric"),
        ({"ray_address": "10.255.255.1:6379"}, "--ray-address"),
        ({"target": "evil.module:Target"}, "--target"),
    ],  # fmt: skip
)
def test_a_resumed_study_takes_code_and_addresses_from_the_command_line_only(stored, flag):
    """A crafted database's `metric`, plugin `target` or `ray_address` is refused before anything
    is imported or joined (issue 25: `this:s` printed the Zen of Python on --resume)."""
    import sys

    from autotune.spec import _inherit_options, parse_start

    sys.modules.pop("this", None)
    with pytest.raises(UsageError, match=f"{flag} .* never taken from there on resume: pass {flag}"):
        _inherit_options(parse_start(["--resume", "crafted"]), {"budget": None, **stored})
    assert "this" not in sys.modules
    value = next(iter(stored.values()))
    given = parse_start(["--resume", "crafted", flag, value])
    _inherit_options(given, stored)  # given again: the user's own choice
    assert getattr(given, next(iter(stored))) == value
    builtin = parse_start(["--resume", "crafted"])
    _inherit_options(builtin, {"metric": "top1", "target": "onnxruntime", "ray_address": None})
    assert (builtin.metric, builtin.target) == ("top1", "onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["deleted", "truncated"])
def test_a_database_deleted_or_truncated_under_the_daemon_fails_the_study_in_one_line(tmp_path, fault):
    """The daemon carried on, ended "finished" and wrote best/ and report.md from memory over a
    study that was gone (issue 25); now it fails, says why, and writes nothing as if intact."""
    from tests.test_daemon import start_slow_study, wait_until_running

    make_tiny_model(tmp_path / "tiny.onnx")
    results = tmp_path / "results"
    study_dir = results / "lost"
    start_slow_study(tmp_path, results, "lost", "--trials", "50")
    wait_until_running(results, "lost", 1)
    db = study_dir / "study.db"
    if fault == "deleted":
        db.unlink()
    else:
        os.truncate(db, 1024)
    wait_daemon_gone(study_dir, 120)
    state = daemon_state(study_dir)
    said = {"deleted": "study.db was deleted while the study ran", "truncated": "study.db shrank from"}[fault]
    assert state.startswith("failed") and said in state and len(state.splitlines()) == 1, state
    assert not (study_dir / "best").exists() and not (study_dir / "report.md").exists()


def test_a_daemon_killed_before_its_first_trial_is_not_advised_to_resume(tmp_path, capsys):
    """Issue 25: after a kill -9 before the study existed, `status` advised --resume and --resume
    said "no such study". The state a daemon leaves when killed there: "starting", no database,
    no lock holder."""
    results = tmp_path / "results"
    (results / "early").mkdir(parents=True)
    (results / "early" / STATE_FILE).write_text(json.dumps({"state": "starting", "pid": 999999999}))
    status = run_main(capsys, "status", "early", "--results-dir", str(results))
    one_line_error(status, "crashed before its first trial", "start it again with --study early")
    assert "--resume" not in status.stderr
    resumed = run_main(capsys, "start", "--resume", "early", "--results-dir", str(results))
    one_line_error(resumed, "--resume early: its daemon crashed before its first trial", "start it again")
    # a daemon that died once its study existed is still advised to resume
    (results / "early" / STATE_FILE).write_text(json.dumps({"state": "running", "pid": 999999999}))
    status = run_main(capsys, "status", "early", "--results-dir", str(results))
    one_line_error(status, "crashed (resume with `autotune start --resume`)")
