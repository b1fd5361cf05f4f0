"""Paths no other test reached: `autotune report`, `--latency-sla-ms`, `--shape` and `--inputs`
that work, the space's `known_good` recipes and the grace a budget gives in-flight trials.

Each runs a study of two or three trials on a generated model, in this process, in seconds.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest

from autotune.answer import is_feasible
from autotune.cli import main
from autotune.layout import INPUTS_FILE
from autotune.model import fp32_cpu_session
from autotune.study import run_study
from autotune.trial import OUTPUTS_FILE, TrialRequest, TrialResult, run_trial
from autotune.workers import Executor
from tests.conftest import make_dynamic_hw_model, make_tiny_model


def tune(results: Path, model: Path, name: str, *extra: str) -> int:
    return main(
        ["start", str(model), "--foreground", "--no-ray", "--study", name, "--results-dir", str(results),
         "--max-measure-s", "0.05", *extra]
    )  # fmt: skip


def load(results: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / name / 'study.db'}")


def told(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.is_finished()]


def trial_outputs(results: Path, name: str, number: int) -> dict[str, np.ndarray]:
    with np.load(results / name / "trials" / str(number) / OUTPUTS_FILE) as data:
        return {key: data[key] for key in data.files}


# --- autotune report -----------------------------------------------------------------------


def test_report_rewrites_report_md_and_bests_copy_and_prints_its_path(tmp_path, capsys):
    results = tmp_path / "results"
    assert tune(results, make_tiny_model(tmp_path / "tiny.onnx"), "rep", "--trials", "2") == 0
    study_dir = results / "rep"
    written = (study_dir / "report.md").read_text()
    (study_dir / "report.md").unlink()
    (study_dir / "best" / "report.md").write_text("stale")
    capsys.readouterr()

    assert main(["report", "rep", "--results-dir", str(results)]) == 0

    assert capsys.readouterr().out.strip() == str(study_dir / "report.md")
    rendered = (study_dir / "report.md").read_text()
    assert f"Trial {load(results, 'rep').user_attrs['best_trial']}:" in rendered
    assert (study_dir / "best" / "report.md").read_text() == rendered
    # From the stored answer: nothing re-chosen, nothing re-measured (only the time it was written moves).
    assert _undated(rendered) == _undated(written)
    assert _undated(rendered) != rendered


def _undated(report: str) -> str:
    return "\n".join(line for line in report.splitlines() if not line.startswith("- written: "))


# --- --latency-sla-ms ----------------------------------------------------------------------


def test_trials_slower_than_the_latency_sla_are_infeasible_and_never_the_answer(tmp_path):
    results = tmp_path / "results"
    sla_ms = 1e-6  # a nanosecond: every real run is slower
    assert tune(results, make_tiny_model(tmp_path / "tiny.onnx"), "sla", "--trials", "2",
                "--latency-sla-ms", str(sla_ms)) == 0  # fmt: skip
    study = load(results, "sla")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    for trial in complete:
        assert trial.user_attrs["passed"] is True  # accurate: only the SLA makes it infeasible
        assert trial.user_attrs["constraints"][-1] == pytest.approx(trial.user_attrs["latency_ms_p50"] - sla_ms)
        assert not is_feasible(trial)
    assert "best_trial" not in study.user_attrs and study.user_attrs["answers"] == {}
    assert not (results / "sla" / "best").exists()


def test_a_generous_latency_sla_leaves_accurate_trials_feasible(tmp_path):
    results = tmp_path / "results"
    assert tune(results, make_tiny_model(tmp_path / "tiny.onnx"), "roomy", "--trials", "2",
                "--latency-sla-ms", "60000") == 0  # fmt: skip
    study = load(results, "roomy")
    assert all(is_feasible(t) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert study.user_attrs["best_trial"] in {t.number for t in told(study)}


# --- --shape and --inputs ------------------------------------------------------------------


def test_a_dynamic_model_with_shape_runs_its_trials_on_inputs_of_that_shape(tmp_path):
    results = tmp_path / "results"
    model = make_dynamic_hw_model(tmp_path / "det.onnx")
    assert tune(results, model, "det", "--shape", "x:1,3,20,24", "--trials", "2") == 0
    study = load(results, "det")
    assert [t.state for t in told(study)] == [optuna.trial.TrialState.COMPLETE] * 2
    with np.load(results / "det" / INPUTS_FILE) as data:
        pool = data["x"]
    assert pool.shape[1:] == (3, 20, 24)
    # verified on every sample of the pool, whatever the trial's batch size
    np.testing.assert_array_equal(trial_outputs(results, "det", 0)["y"], np.maximum(pool, 0))


def test_an_inputs_npz_is_the_pool_the_trials_are_verified_on(tmp_path):
    from autotune.calibration import VERIFY_EVERY

    results = tmp_path / "results"
    model = make_tiny_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(3)
    samples = (5.0 + rng.standard_normal((8, 3, 8, 8))).astype(np.float32)  # far from the synthetic N(0, 1)
    np.savez(tmp_path / "real.npz", x=samples)
    assert tune(results, model, "real", "--inputs", str(tmp_path / "real.npz"), "--trials", "2") == 0
    held_out = samples[np.arange(len(samples)) % VERIFY_EVERY == 1]
    with np.load(results / "real" / INPUTS_FILE) as data:
        np.testing.assert_array_equal(data["x"], held_out)
    study = load(results, "real")
    assert study.trials[0].params["batch_size"] == 1 and study.trials[0].user_attrs["passed"] is True
    session = fp32_cpu_session(model)
    expected = session.run(["y"], {"x": held_out})[0]  # all 4 held-out samples, run one at a time
    np.testing.assert_allclose(trial_outputs(results, "real", 0)["y"], expected, rtol=1e-5, atol=1e-6)


# --- known_good ----------------------------------------------------------------------------

KNOWN_GOOD_SPACE = """
target: onnxruntime
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, extended, all], default: all}
  intra_op_spinning: {type: bool, default: true}
known_good:
  - {graph_optimization_level: basic, intra_op_spinning: false}
  - {graph_optimization_level: fastest}
  - {graph_optimization_level: extended, no_such_knob: 3}
"""


def test_known_good_recipes_run_right_after_the_defaults_skipping_those_the_space_cannot_take(tmp_path):
    results = tmp_path / "results"
    space = tmp_path / "space.yaml"
    space.write_text(KNOWN_GOOD_SPACE)
    assert tune(results, make_tiny_model(tmp_path / "tiny.onnx"), "kg", "--space", str(space), "--trials", "3") == 0
    first = [t.params for t in sorted(told(load(results, "kg")), key=lambda t: t.number)][:3]
    assert first == [
        {"graph_optimization_level": "all", "intra_op_spinning": True},  # trial 0: the defaults
        {"graph_optimization_level": "basic", "intra_op_spinning": False},
        {"graph_optimization_level": "extended", "intra_op_spinning": True},  # unknown knob dropped, rest kept
    ]


# --- the budget's grace period -------------------------------------------------------------


class HeldExecutor(Executor):
    """Two workers; trial 1 is held in flight until `hold_s` after the loop first waits (the
    budget's clock starts just before), then runs. Every other trial runs as soon as it is waited
    for. A cancelled trial comes back failed with the reason, as from the Ray executor."""

    capacity = 2
    asynchronous = True

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.first_wait: float | None = None
        self.held: list[TrialRequest] = []
        self.cancelled: list[TrialResult] = []

    def submit(self, request: TrialRequest) -> None:
        self.held.append(request)

    def wait(self, timeout_s: float) -> list[TrialResult]:
        now = time.monotonic()
        self.first_wait = self.first_wait or now
        if self.cancelled:
            done, self.cancelled = self.cancelled, []
            return done
        due = [r for r in self.held if r.number != 1 or now >= self.first_wait + self.hold_s]
        if not due:
            time.sleep(min(timeout_s, 0.05))
            return []
        self.held = [r for r in self.held if r not in due]
        return [run_trial(request) for request in due]

    def in_flight(self) -> int:
        return len(self.held)

    def cancel_all(self, reason: str) -> None:
        self.cancelled += [
            TrialResult(number=r.number, config=r.config, state="failed", reason=reason) for r in self.held
        ]
        self.held = []


BUDGET_S, GRACE_S = 2.0, 4.0


def budgeted_spec(tmp_path: Path, small_space: Path):
    from autotune.cli import build_parser, prepare_start

    model = make_tiny_model(tmp_path / "tiny.onnx")
    args = build_parser().parse_args(
        ["start", str(model), "--space", str(small_space), "--budget", "1h", "--results-dir", str(tmp_path / "r"),
         "--max-measure-s", "0.05"]
    )  # fmt: skip
    return replace(prepare_start(args)[0], budget_s=BUDGET_S)


def test_a_trial_in_flight_when_the_budget_ends_finishes_within_the_grace_and_is_told(tmp_path, small_space):
    executor = HeldExecutor(hold_s=BUDGET_S + GRACE_S / 2)
    started = time.monotonic()
    study = run_study(budgeted_spec(tmp_path, small_space), executor, grace_s=GRACE_S)
    assert time.monotonic() - started > BUDGET_S + GRACE_S / 2  # it waited for trial 1
    one = study.trials[1]
    assert one.state == optuna.trial.TrialState.COMPLETE and "cancelled" not in one.user_attrs
    assert one.user_attrs["throughput"] > 0


def test_a_trial_still_running_past_the_grace_is_cancelled_as_budget_spent(tmp_path, small_space):
    executor = HeldExecutor(hold_s=60.0)  # uncancelled, it would end the study after a minute
    started = time.monotonic()
    study = run_study(budgeted_spec(tmp_path, small_space), executor, grace_s=GRACE_S)
    took_s = time.monotonic() - started
    one = study.trials[1]
    assert one.state == optuna.trial.TrialState.FAIL and one.user_attrs["cancelled"] is True
    assert one.user_attrs["reason"] == f"budget spent: still running {GRACE_S:.0f} s after the budget ended"
    assert BUDGET_S + GRACE_S <= took_s < 40
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
