"""A full study on a generated model, with real SQLite storage and real ONNX Runtime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest

from autotune.cli import main
from autotune.report import best_trial, chosen_trial, pareto_front
from autotune.space import config_key

pytestmark = pytest.mark.slow


def small_spec(tmp_path: Path, model: Path, space: Path, trials: int):
    from autotune.cli import build_parser, prepare_start

    args = build_parser().parse_args(
        [
            "start",
            str(model),
            "--trials",
            str(trials),
            "--space",
            str(space),
            "--results-dir",
            str(tmp_path / "r"),
            "--max-measure-s",
            "0.05",
        ]
    )
    return prepare_start(args)[0]


def load(results_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results_dir / name / 'study.db'}")


def tune(results_dir: Path, model: Path, name: str, *extra: str) -> int:
    return main(
        [
            "start",
            str(model),
            "--foreground",
            "--study",
            name,
            "--results-dir",
            str(results_dir),
            "--max-measure-s",
            "0.1",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One 10-trial study on the tiny model, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("study")
    from tests.conftest import make_tiny_model

    model = make_tiny_model(root / "tiny.onnx")
    results = root / "results"
    assert tune(results, model, "tiny", "--trials", "10") == 0
    return results, model, load(results, "tiny")


def test_a_study_completes_the_requested_number_of_trials(finished):
    _, _, study = finished
    states = [t.state for t in study.trials]
    assert len(states) == 10
    assert all(s != optuna.trial.TrialState.RUNNING for s in states)


def test_trial_zero_is_the_default_configuration(finished):
    _, _, study = finished
    zero = study.trials[0]
    assert zero.params["graph_optimization_level"] == "all"
    assert zero.params["batch_size"] == 1
    assert zero.params["precision"] == "fp32"
    assert not any(v for k, v in zero.params.items() if k.startswith("pass."))


def test_the_pareto_front_is_not_empty_and_its_best_is_within_tolerance(finished):
    _, _, study = finished
    front = pareto_front(study)
    assert front
    best = best_trial(study)
    assert best.user_attrs["passed"] is True
    assert best.user_attrs["max_abs_error"] <= 1e-2 or best.user_attrs["max_rel_error"] <= 1e-2
    assert best.values[0] == max(t.values[0] for t in front)


def test_every_complete_trial_carries_measurements_and_errors(finished):
    _, _, study = finished
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            for key in (
                "latency_ms_p50",
                "latency_ms_p90",
                "latency_ms_p99",
                "throughput",
                "max_abs_error",
                "max_rel_error",
                "mean_rel_error",
                "min_cosine_similarity",
            ):
                assert key in trial.user_attrs, (trial.number, key)
            assert trial.user_attrs["latency_ms_p50"] <= trial.user_attrs["latency_ms_p99"]
        elif trial.state == optuna.trial.TrialState.FAIL:
            assert trial.user_attrs.get("reason")


def test_no_configuration_is_measured_twice(finished):
    _, _, study = finished
    measured = [
        t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    keys = [config_key(t.params) for t in measured]
    assert len(keys) == len(set(keys))


def test_best_dir_has_model_manifest_and_report(finished):
    results, _, study = finished
    best = results / "tiny" / "best"
    manifest = json.loads((best / "manifest.json").read_text())
    assert manifest["trial"] == chosen_trial(study).number
    assert manifest["config"] == chosen_trial(study).params
    assert "onnxruntime" in manifest["versions"]
    assert manifest["host"]["cpu_count"] >= 1
    assert (best / "model.onnx").is_file()
    report = (best / "report.md").read_text()
    assert "Pareto front" in report
    if manifest["trial"] == 0:  # no finalist beat the defaults when re-measured interleaved
        assert manifest["speedup_over_defaults"] is None and "No configuration beat the defaults" in report
    else:
        assert manifest["speedup_over_defaults"]["median"] >= 1.0 and "Speedup over trial 0" in report


def test_the_chosen_best_has_the_highest_paired_speedup_among_the_finalists(finished):
    _, _, study = finished
    candidates = study.user_attrs["paired_candidates"]
    assert candidates
    chosen = chosen_trial(study).number
    top = max(candidates, key=lambda n: candidates[n]["median"])
    if candidates[top]["median"] >= 1.0:
        assert chosen == int(top)
    else:
        assert chosen == 0


def test_export_writes_a_model_that_reproduces_the_recorded_outputs(finished, tmp_path):
    results, _, study = finished
    out = tmp_path / "deploy"
    assert main(["export", "tiny", "-o", str(out), "--results-dir", str(results)]) == 0
    best = chosen_trial(study)
    recorded = np.load(results / "tiny" / "trials" / str(best.number) / "outputs.npz")
    pool = np.load(results / "tiny" / "inputs.npz")
    batch = best.user_attrs["batch_size"]
    feeds = {"x": pool["x"][np.arange(batch) % pool["x"].shape[0]]}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, feeds)
    np.testing.assert_allclose(y, recorded["y"], rtol=1e-4, atol=1e-5)


def test_export_of_a_named_trial_regenerates_pruned_files(finished, tmp_path):
    results, _, study = finished
    off_front = {t.number for t in pareto_front(study)} | {0}
    number = next(
        t.number
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.number not in off_front
        and "duplicate_of" not in t.user_attrs
    )
    out = tmp_path / "trial"
    assert main(["export", "tiny", "-o", str(out), "--trial", str(number), "--results-dir", str(results)]) == 0
    assert json.loads((out / "manifest.json").read_text())["trial"] == number
    assert (out / "model.onnx").stat().st_size > 0


def test_status_and_list_show_the_study(finished, capsys):
    results, _, _ = finished
    assert main(["status", "tiny", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "10 complete" in out or "complete" in out
    assert "Pareto front" in out
    assert main(["list", "--results-dir", str(results)]) == 0
    assert "tiny" in capsys.readouterr().out


def test_a_small_space_stops_when_every_configuration_is_measured(tmp_path, tiny_model, small_space):
    results = tmp_path / "results"
    assert tune(results, tiny_model, "small", "--space", str(small_space), "--trials", "30") == 0
    study = load(results, "small")
    measured = {config_key(t.params) for t in study.trials if "duplicate_of" not in t.user_attrs}
    assert len(measured) == 8  # 2 levels x 2 batch sizes x pass on/off
    assert len(study.trials) < 30 + 1


def test_a_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path, tiny_model, small_space):
    from dataclasses import replace

    from autotune.study import InProcessExecutor, run_study
    from autotune.trial import run_trial

    spec = small_spec(tmp_path, tiny_model, small_space, 5)

    submitted = []

    def run_with_a_broken_model(request):
        submitted.append(request.number)
        if len(submitted) == 3:  # a real trial on a model file that is not there
            request = replace(request, model_path=tmp_path / "vanished.onnx")
        return run_trial(request)

    study = run_study(spec, InProcessExecutor(run_with_a_broken_model))
    states = {t.number: t.state for t in study.trials}
    broken = submitted[2]
    assert states[broken] == optuna.trial.TrialState.FAIL
    assert "vanished.onnx" in study.trials[broken].user_attrs["reason"]
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states.values()) >= 4
    assert len(states) >= 5


def test_resuming_keeps_told_trials_and_adds_new_ones(tmp_path, tiny_model):
    results = tmp_path / "results"
    assert tune(results, tiny_model, "resume", "--trials", "4") == 0
    first = {t.number: t.values for t in load(results, "resume").trials if t.values}
    assert tune(results, tiny_model, "resume", "--trials", "7") == 0
    study = load(results, "resume")
    assert len(study.trials) == 7
    for number, values in first.items():
        assert study.trials[number].values == values


def test_ctrl_c_fails_the_trial_in_flight_as_interrupted_and_requeues_it(tmp_path, tiny_model, small_space):
    from autotune.study import InProcessExecutor, finished_count, run_study
    from autotune.trial import run_trial

    spec = small_spec(tmp_path, tiny_model, small_space, 6)
    calls = []

    def interrupted_on_the_third(request):
        calls.append(request.number)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_trial(request)

    with pytest.raises(KeyboardInterrupt):
        run_study(spec, InProcessExecutor(interrupted_on_the_third))
    study = load(tmp_path / "r", spec.name)
    cut = study.trials[calls[2]]
    assert cut.state == optuna.trial.TrialState.FAIL
    assert cut.user_attrs["interrupted"] is True
    assert finished_count(study) == len([t for t in study.trials if t.state.is_finished()]) - 1
    assert study.trials[-1].state == optuna.trial.TrialState.WAITING
    assert study.trials[-1].params == cut.params or study.trials[-1].system_attrs.get("fixed_params") == cut.params

    resumed = run_study(spec, InProcessExecutor())
    assert finished_count(resumed) == 6
    reruns = [t for t in resumed.trials if t.number > cut.number and t.params == cut.params]
    assert reruns and reruns[0].state == optuna.trial.TrialState.COMPLETE


def test_storage_url_puts_the_study_in_the_given_database(tmp_path, tiny_model, small_space, capsys):
    url = f"sqlite:///{tmp_path / 'team.db'}"
    results = tmp_path / "results"
    assert tune(results, tiny_model, "shared", "--space", str(small_space), "--trials", "3", "--storage", url) == 0
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 3
    assert not (results / "shared" / "study.db").exists()
    assert main(["status", "shared", "--results-dir", str(results), "--storage", url]) == 0
    assert "3 complete" in capsys.readouterr().out


def test_float_rounding_errors_are_told_as_equal_and_real_errors_are_not():
    from autotune.study import ERROR_FLOOR, error_objective

    assert error_objective({"normalized_error": 3e-7}) == error_objective({"normalized_error": 2e-6}) == ERROR_FLOOR
    assert error_objective({"normalized_error": 0.02}) == 0.02
    assert error_objective({}) == 1e30


def test_a_spent_budget_stops_asking_for_trials(tmp_path, tiny_model):
    results = tmp_path / "results"
    assert tune(results, tiny_model, "budgeted", "--budget", "3s") == 0
    study = load(results, "budgeted")
    assert 1 <= len(study.trials) < 500
    assert study.user_attrs["elapsed_s"] < 60  # ignoring the budget would run until the space is exhausted
