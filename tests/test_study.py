"""A full study on a generated model, with real SQLite storage and real ONNX Runtime sessions."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest

from autotune.answer import best_trial, chosen_trial, pareto_front
from autotune.cli import main
from autotune.rules import Rule
from autotune.space import config_key, load_space
from autotune.targets.onnxruntime import OnnxRuntimeTarget
from tests.dashboard_client import served_study_detail

pytestmark = pytest.mark.slow


def small_spec(tmp_path: Path, model: Path, space: Path, trials: int):
    from autotune.spec import prepare_start, start_args

    args = start_args(model, trials=str(trials), space=space, results_dir=tmp_path / "r", max_measure_s="0.05")
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
    from autotune.study import finished_count

    _, _, study = finished
    states = [t.state for t in study.trials]
    assert all(s != optuna.trial.TrialState.RUNNING for s in states)
    assert finished_count(study) == 10


def test_repeats_do_not_consume_the_trial_budget(finished):
    """Trials beyond the ten counted ones are exactly those that brought nothing new."""
    from autotune.study._records import NOT_COUNTED

    _, _, study = finished
    told = [t for t in study.trials if t.state.is_finished()]
    uncounted = [t for t in told if any(key in t.user_attrs for key in NOT_COUNTED)]
    assert len(told) == 10 + len(uncounted)
    for trial in uncounted:
        if trial.user_attrs.get("ruled_out"):
            # Not run: a rule covers it (a known-slow value can become one on a busy machine:
            # the 2x bar compares unpaired measurements), and the rule is the study's own.
            rules = study.user_attrs.get("rules", [])
            reason = trial.user_attrs["reason"]
            assert any(all(f"{k}={v}" in reason for k, v in r["knobs"].items()) for r in rules), reason
            continue
        original = trial.user_attrs.get("duplicate_of", trial.user_attrs.get("shared_measurement_with_trial"))
        assert original is not None and original < trial.number


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
    assert "Pareto front" in report and "Noise floor (A/A control" in report
    assert set(manifest["aa_control"]) >= {"median", "p25", "p75"}
    if manifest["speedup_over_defaults"] is not None:
        assert manifest["speedup_over_defaults"]["p25"] > manifest["aa_control"]["p75"]


def test_each_batch_answer_is_paired_against_the_defaults_at_that_batch(finished):
    from autotune.answer import stored_answers

    _, _, study = finished
    answers = stored_answers(study)
    assert 1 in answers
    zero = study.trials[0]
    for batch, answer in answers.items():
        trial = study.trials[answer.trial]
        assert trial.user_attrs["batch_size"] == batch
        if answer.verdict == "faster":
            assert answer.speedup.median > 1.0 and answer.speedup.p25 > study.user_attrs["aa_control"]["p75"]
        elif answer.speedup is not None:  # the defaults at this batch stay the answer
            assert {k: v for k, v in trial.params.items() if k != "batch_size"} == {
                k: v for k, v in zero.params.items() if k != "batch_size"
            }
    best = chosen_trial(study)
    assert best.number == max(answers.values(), key=lambda a: a.samples_per_s).trial


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


def test_every_command_names_the_same_answer(finished, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich tables: no wrapping inside a cell
    results, _, study = finished
    number = study.user_attrs["best_trial"]
    assert main(["status", "tiny", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"trial {number} (chosen by paired re-measurement" in out and "10 counted" in out
    assert f"*{number} " in out  # the printed front marks the answer
    assert main(["list", "--results-dir", str(results)]) == 0
    assert f"trial {number} (" in capsys.readouterr().out
    assert main(["export", "tiny", "-o", str(tmp_path / "e"), "--results-dir", str(results)]) == 0
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["trial"] == number
    assert f"Trial {number}:" in (results / "tiny" / "report.md").read_text()


def test_every_surface_shows_the_same_front_and_marks_the_answer(finished, capsys, monkeypatch):
    """report.md, `status`, the dashboard's front and its study note: one set of trials (issue 26)."""
    import re

    from autotune.answer import shown_front

    monkeypatch.setenv("COLUMNS", "300")
    results, _, study = finished
    number = study.user_attrs["best_trial"]
    entries = shown_front(study)
    shown = [e.trial.number for e in entries]
    assert number in shown and [e.mark for e in entries if e.trial.number == number] == ["the answer"]
    report = (results / "tiny" / "report.md").read_text()
    table = report.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    assert [int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)] == shown
    assert re.search(rf"^\| {number} \|.*\| the answer \|$", table, re.M)
    assert main(["status", "tiny", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out.split("Pareto front of tiny", 1)[1]
    assert [int(n) for n in re.findall(r"^│ +\*?(\d+) │", out, re.M)] == shown
    detail = served_study_detail(results / "tiny")
    on_front = [e.trial.number for e in entries if e.on_front]
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(on_front)
    assert f"Trial {number}:" in detail["note"]["body"] and "the answer" in detail["note"]["body"]


def test_report_renders_the_stored_choice_and_never_rechooses(finished):
    results, _, study = finished
    before = (study.user_attrs["best_trial"], study.user_attrs["answers"])
    manifest = (results / "tiny" / "best" / "manifest.json").read_text()
    assert main(["report", "tiny", "--results-dir", str(results)]) == 0
    after = load(results, "tiny")
    assert (after.user_attrs["best_trial"], after.user_attrs["answers"]) == before
    assert (results / "tiny" / "best" / "manifest.json").read_text() == manifest
    assert f"Trial {before[0]}:" in (results / "tiny" / "best" / "report.md").read_text()


def test_export_batch_exports_that_batchs_answer(finished, tmp_path):
    from autotune.answer import stored_answers

    results, _, study = finished
    for batch, answer in stored_answers(study).items():
        out = tmp_path / f"b{batch}"
        assert main(["export", "tiny", "-o", str(out), "--batch", str(batch), "--results-dir", str(results)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["trial"] == answer.trial and manifest["batch_size"] == batch
    assert main(["export", "tiny", "-o", str(tmp_path / "x"), "--batch", "3", "--results-dir", str(results)]) == 2


def test_a_pass_with_no_rewrite_leaves_the_space(tmp_path, tiny_model):
    space = tmp_path / "passes.yaml"
    space.write_text(
        "target: onnxruntime\nknobs:\n"
        "  graph_optimization_level: {type: categorical, choices: [basic, all], default: all}\n"
        "  pass.remove_redundant_transposes: {type: bool, default: false}\n"
        "  pass.fuse_gelu: {type: bool, default: false}\n"
    )
    results = tmp_path / "results"
    assert tune(results, tiny_model, "passes", "--space", str(space), "--trials", "4") == 0
    study = load(results, "passes")
    dropped = study.user_attrs["dropped_knobs"]
    assert list(dropped) == ["pass.fuse_gelu"] and "0 rewrites" in dropped["pass.fuse_gelu"]
    assert all("pass.fuse_gelu" not in t.params for t in study.trials)
    assert any(t.params.get("pass.remove_redundant_transposes") for t in study.trials)
    assert "pass.fuse_gelu: 0 rewrites" in (results / "passes" / "report.md").read_text()


COMBO_SPACE = """
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, extended, all], default: all}
  execution_mode: {type: categorical, choices: [sequential, parallel], default: sequential}
  intra_op_spinning: {type: bool, default: true}
known_good:
  - {execution_mode: parallel, intra_op_spinning: false, graph_optimization_level: basic}
  - {execution_mode: parallel, intra_op_spinning: false, graph_optimization_level: extended}
  - {execution_mode: parallel, intra_op_spinning: false, graph_optimization_level: all}
"""


def test_a_combination_that_failed_twice_is_never_run_again_also_after_resume(
    tmp_path, tiny_model, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "300")
    space = tmp_path / "combo.yaml"
    space.write_text(COMBO_SPACE)
    results = tmp_path / "results"
    target = ["--target", "tests.crashing_target:UnsupportedComboTarget", "--space", str(space)]
    assert tune(results, tiny_model, "combo", *target, "--trials", "3") == 0
    study = load(results, "combo")
    (rule,) = [r for r in study.user_attrs["rules"] if r["enforced"]]
    assert rule["knobs"] == {"execution_mode": "parallel", "intra_op_spinning": False}
    assert "cannot run parallel execution without spinning" in rule["reason"]
    # Resumed with room for every configuration: the third combination is ruled out, not run.
    assert tune(results, tiny_model, "combo", *target, "--trials", "20") == 0
    study = load(results, "combo")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2
    # (on this 0.02 ms model parallel execution may also run 10x slower: a known-slow rule then
    # rules out more of it, which is not what this test is about)
    ruled = [t for t in study.trials if t.user_attrs.get("ruled_out") and "known slow" not in t.user_attrs["reason"]]
    assert ruled and all(t.params["execution_mode"] == "parallel" and not t.params["intra_op_spinning"] for t in ruled)
    assert all("ruled out: execution_mode=parallel" in t.user_attrs["reason"] for t in ruled)
    assert main(["status", "combo", "--results-dir", str(results)]) == 0
    assert "never again: execution_mode=parallel, intra_op_spinning=False" in capsys.readouterr().out
    assert "Rules learned from failures" in (results / "combo" / "report.md").read_text()


FRAGILE_SPACE = """
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, extended, all], default: all}
  intra_op_spinning: {type: bool, default: true}
known_good:
  - {intra_op_spinning: false, graph_optimization_level: basic}
  - {intra_op_spinning: false, graph_optimization_level: extended}
  - {intra_op_spinning: false, graph_optimization_level: all}
"""


def test_a_knob_value_to_probe_first_never_runs_twice_at_once_and_fails_once(tmp_path, tiny_model, caplog):
    """Issue 27 (YOLOv8n, GPU run 8): two CUDA-graph recipes ran at once, so both failed before
    the first failure made its rule. With two workers, three recipes holding a value the target
    probes first (and names in its failures): one runs; the others wait for it and are then
    ruled out, never run."""
    space = tmp_path / "fragile.yaml"
    space.write_text(FRAGILE_SPACE)
    results = tmp_path / "results"
    target = ["--target", "tests.crashing_target:FragileKnobTarget", "--space", str(space)]
    with caplog.at_level(logging.INFO, logger="autotune"):
        assert tune(results, tiny_model, "fragile", *target, "--workers", "2", "--trials", "4") == 0
    study = load(results, "fragile")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "cannot run with intra-op spinning off" in failed[0].user_attrs["reason"]
    builds = (results / "fragile" / "fragile-builds.txt").read_text().splitlines()
    assert len(builds) == 1  # the only build with the value: none ran beside it, none after it
    ruled = [t for t in study.trials if t.user_attrs.get("ruled_out")]
    assert len(ruled) == 2 and all(t.params["intra_op_spinning"] is False for t in ruled)
    waited = [r.getMessage() for r in caplog.records if "waits for trial" in r.getMessage()]
    assert waited and all(f"waits for trial {failed[0].number}" in message for message in waited)


def test_a_resume_remembers_which_configurations_ran(finished):
    """`held_back` counts a value as proven once a trial holding it completed, also before a
    resume: the resumed run's memory holds every completed configuration."""
    from autotune.study._loop import StudyRun, recover_state

    _, _, study = finished
    run = StudyRun(started=time.monotonic(), budget_s=None)
    recover_state(study, run)
    complete = [t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and sorted(map(str, run.ran)) == sorted(map(str, complete))


@pytest.mark.parametrize("how", ["rule", "budget", "stop"])
def test_a_held_trial_is_ruled_out_or_cancelled_never_left_running(tmp_path, how):
    """`release_held` once the trial a held one waited for has finished: ruled out by that
    trial's failure's rule; else, when the budget is spent or a stop was asked, told as
    cancelled (not run, not counted) and its configuration free to be asked again."""
    from types import SimpleNamespace

    from autotune.rules import FailureRules
    from autotune.study._loop import StudyLoop, StudyRun

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize", "minimize"])
    trial = study.ask()
    config = {"cuda_graph": trial.suggest_categorical("cuda_graph", [False, True]), "batch_size": 1}
    state = StudyRun(started=time.monotonic(), budget_s=0.0 if how == "budget" else None, stopping=how == "stop")
    state.keys[config_key(config)] = trial.number
    state.held[trial.number] = (trial, config)
    state.rules = FailureRules(named_by=lambda reason: {"cuda_graph": config["cuda_graph"]})
    if how == "rule":
        state.rules.record_failure(7, {**config, "batch_size": 8}, "build: cannot use the graph capture feature")
    loop = SimpleNamespace(  # the real method on a run with nothing in flight
        state=state, study=study, executor=SimpleNamespace(capacity=1),
        waits_for=lambda config: None, sweep_told=lambda config, outcome: None, submit=None,
    )  # fmt: skip
    StudyLoop.release_held(loop)
    (told,) = study.get_trials(deepcopy=False)
    assert state.held == {}
    if how == "rule":
        assert told.state == optuna.trial.TrialState.PRUNED and told.user_attrs["ruled_out"]
        return
    assert told.state == optuna.trial.TrialState.FAIL and told.user_attrs["cancelled"]
    assert told.user_attrs["reason"].startswith("budget spent" if how == "budget" else "stopped")
    assert config_key(config) not in state.keys


def test_a_small_space_stops_when_every_configuration_is_measured(tmp_path, tiny_model, small_space):
    results = tmp_path / "results"
    assert tune(results, tiny_model, "small", "--space", str(small_space), "--trials", "30") == 0
    study = load(results, "small")
    measured = {config_key(t.params) for t in study.trials if "duplicate_of" not in t.user_attrs}
    # A configuration left unmeasured must be ruled out by a rule the study stored: on a busy
    # machine two trials of this 10 µs model can each run twice the defaults' time, and the
    # known-slow rule they make then rules out the rest of their value (as it should).
    rules = [Rule(r["knobs"], r["reason"], r["trials"]) for r in study.user_attrs.get("rules", []) if r["enforced"]]
    space = load_space(small_space, OnnxRuntimeTarget())
    every = list(space.enumerate())
    assert len(every) == 8  # 2 levels x 2 batch sizes x pass on/off
    unmeasured = [c for c in every if config_key(c) not in measured]
    assert all(any(rule.matches(c) for rule in rules) for c in unmeasured), (unmeasured, rules)
    assert measured <= {config_key(c) for c in every} and len(measured) >= 2
    assert len(study.trials) < 30 + 1


def test_a_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path, tiny_model, small_space):
    from dataclasses import replace

    from autotune.study import run_study
    from autotune.trial import run_trial
    from autotune.workers import InProcessExecutor

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
    from autotune.study import finished_count

    results = tmp_path / "results"
    assert tune(results, tiny_model, "resume", "--trials", "4") == 0
    first = {t.number: t.values for t in load(results, "resume").trials if t.values}
    assert tune(results, tiny_model, "resume", "--trials", "7") == 0
    study = load(results, "resume")
    assert finished_count(study) == 7
    for number, values in first.items():
        assert study.trials[number].values == values


def test_ctrl_c_fails_the_trial_in_flight_as_interrupted_and_requeues_it(tmp_path, tiny_model, small_space):
    from autotune.study import finished_count, run_study
    from autotune.trial import run_trial
    from autotune.workers import InProcessExecutor

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
    from autotune.study import finished_count

    study = optuna.load_study(study_name="shared", storage=url)
    assert finished_count(study) == 3
    assert not (results / "shared" / "study.db").exists()
    assert main(["status", "shared", "--results-dir", str(results), "--storage", url]) == 0
    assert "3 counted" in capsys.readouterr().out


def test_a_spent_budget_stops_asking_for_trials(tmp_path, tiny_model, capsys):
    results = tmp_path / "results"
    assert tune(results, tiny_model, "budgeted", "--budget", "3s") == 0
    out = capsys.readouterr().out  # a foreground finalize shows a line per pairing, with its verdict
    assert "finalize: pairing 1 of" in out and "A/A control" in out and "-> the noise floor" in out
    study = load(results, "budgeted")
    starts = sorted(t.datetime_start for t in study.trials if t.datetime_start is not None)
    # asked only while the budget (less finalize's reserve) lasted: nothing was asked 3 s after the first
    assert starts and (starts[-1] - starts[0]).total_seconds() <= 3.0
    assert study.user_attrs["finalize_reserve_s"] > 0 and study.user_attrs["finalize_s"] > 0
    assert study.user_attrs["budget_s"] == 3.0


def test_the_defaults_are_remeasured_during_the_study_and_the_drift_is_reported(tmp_path, tiny_model, monkeypatch):
    import autotune.study._loop as study_module
    from autotune.study import finished_count, run_study
    from autotune.workers import InProcessExecutor

    monkeypatch.setattr(study_module, "CONTROL_EVERY", 4)
    from autotune.spec import prepare_start, start_args

    spec = prepare_start(start_args(tiny_model, trials="7", results_dir=tmp_path / "r", max_measure_s="0.05"))[0]
    study = run_study(spec, InProcessExecutor())
    from autotune.spec import write_inputs

    write_inputs(spec)
    drift = study.user_attrs["drift"]
    assert [d["after_trials"] for d in drift] == [3, 4]  # early (trial 0 ran cold), then every 4
    assert all(0.2 < d["ratio_to_baseline"] < 5 for d in drift)  # the same configuration, re-measured
    assert finished_count(study) == 7 and all(t.number >= 0 for t in study.trials)
    assert not (spec.study_dir / "controls").exists() or not any((spec.study_dir / "controls").iterdir())
    from autotune.finalize import finalize

    finalize(study, paired_rounds=3)
    assert "Machine drift" in (spec.study_dir / "report.md").read_text()


def test_a_configuration_cut_short_by_a_stop_is_run_again_on_resume(tmp_path, tiny_model, small_space):
    from dataclasses import replace

    from autotune.study import finished_count, run_study
    from autotune.trial import TrialResult, run_trial
    from autotune.workers import InProcessExecutor

    spec = small_spec(tmp_path, tiny_model, small_space, 4)
    calls = []

    def stopped_on_the_third(request):
        calls.append(request)
        if len(calls) == 3:  # what executor.cancel_all returns for `autotune stop --now`
            return TrialResult(request.number, dict(request.config), "failed", "stopped by `autotune stop --now`")
        return run_trial(request)

    study = run_study(spec, InProcessExecutor(stopped_on_the_third))
    cut = study.trials[calls[2].number]
    assert cut.state == optuna.trial.TrialState.FAIL and cut.user_attrs["cancelled"] is True
    assert finished_count(study) == 4  # the cut trial is not one of them

    resumed = run_study(replace(spec, n_trials=8), InProcessExecutor())
    reruns = [t for t in resumed.trials if t.number > cut.number and t.params == cut.params]
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in reruns)
    assert not any(t.user_attrs.get("duplicate_of") == cut.number for t in resumed.trials)


def test_a_combination_the_space_file_avoids_is_never_run(tmp_path, tiny_model):
    space = tmp_path / "avoid.yaml"
    space.write_text(COMBO_SPACE + "avoid:\n  - {execution_mode: parallel, intra_op_spinning: false}\n")
    results = tmp_path / "results"
    assert tune(results, tiny_model, "avoid", "--space", str(space), "--trials", "3") == 0
    study = load(results, "avoid")
    ran = [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get("ruled_out")]
    assert not any(t.params["execution_mode"] == "parallel" and not t.params["intra_op_spinning"] for t in ran)
    ruled = [t for t in study.trials if t.user_attrs.get("ruled_out")]
    assert len(ruled) == 3  # the three known-good entries of COMBO_SPACE, not run and not counted
    assert "listed under avoid:" in ruled[0].user_attrs["reason"]
    assert "(from the space file)" in (results / "avoid" / "report.md").read_text()


def test_a_wide_aa_control_is_measured_again_and_the_narrower_kept(finished, monkeypatch):
    import autotune.finalize as fin
    from autotune.answer import Speedup, default_trial

    _, _, study = finished
    widths = iter([(0.56, 1.86), (0.99, 1.01)])
    calls = []

    def fake(study, zero, candidate, batch, rounds, fn, **_):
        calls.append(candidate.number)
        p25, p75 = next(widths, (0.99, 1.01))
        return Speedup(1.0, p25, p75, rounds, 1.0, 1.0)

    monkeypatch.setattr(fin, "measure_speedup", fake)
    monkeypatch.setattr(fin, "choose_answers", lambda *a: {})
    monkeypatch.setattr(fin, "write_best", lambda study, best: None)
    monkeypatch.setattr(fin, "profile_after_search", lambda study: None)
    before = dict(study.user_attrs)
    try:
        fin.finalize(study, prune=False)
        zero = default_trial(study)
        assert calls[:2] == [zero.number, zero.number]
        assert (study.user_attrs["aa_control"]["p25"], study.user_attrs["aa_control"]["p75"]) == (0.99, 1.01)
    finally:
        for key in ("aa_control", "answers", "best_trial", "best_batch", "speedup"):
            if key in before:
                study.set_user_attr(key, before[key])


def test_a_finalize_past_its_deadline_pairs_at_the_minimum_rounds_and_leaves_the_profile(finished, monkeypatch):
    """Finalize inside --budget (issue 26): with no time left, every pairing stops at MIN_ROUNDS,
    the profile is left to `autotune profile`, and the progress `status` reads says done."""
    import time

    import autotune.finalize as fin

    _, _, study = finished
    monkeypatch.setattr(fin, "write_best", lambda study, best: None)
    profiled = []
    monkeypatch.setattr(fin, "profile_at_finalize", lambda study, gpu: profiled.append(1))
    before = dict(study.user_attrs)
    try:
        fin.finalize(study, prune=False, deadline=time.monotonic() - 1.0)
        attrs = study.user_attrs
        assert attrs["aa_control"]["rounds"] == fin.MIN_ROUNDS
        paired = [a["speedup"] for a in attrs["answers"].values() if a.get("speedup")]
        # a quiet machine's pairings settle sooner (the control decides which minimum applies)
        quiet = fin.quiet(fin.Speedup(**attrs["aa_control"]))
        assert attrs["paired_min_rounds"] == (fin.QUIET_MIN_ROUNDS if quiet else fin.MIN_ROUNDS)
        assert paired and all(p["rounds"] == attrs["paired_min_rounds"] for p in paired)
        assert not profiled and attrs["profile_skipped"].startswith("left to `autotune profile tiny`")
        progress = attrs["finalize_progress"]
        assert progress["phase"] == "done" and progress["done"] == progress["of"] > 1
        assert attrs["finalize_s"] > 0
    finally:
        for key, value in before.items():
            study.set_user_attr(key, value)
        for key in ("profile_skipped",):
            if key not in before:
                study.set_user_attr(key, None)
        fin.rerender(study)


def test_the_finalize_estimate_grows_with_what_finalize_will_pair(finished):
    import autotune.finalize as fin

    _, _, study = finished
    full = fin.finalize_estimate_s(study)
    assert full > fin.finalize_estimate_s(study, rounds=1) > 0
    assert study.user_attrs.get("finalize_reserve_s") is None  # no --budget: nothing was kept
    # the profile ran (no --budget) and its estimate is kept beside what it took, to be checked
    took = study.user_attrs["profile_s"]
    assert took["took"] > 0 and took["estimated"] == pytest.approx(fin.profile_time_s(study), rel=0.5)
    # The profile's share: PROFILE_REPEATS profiles of two configurations, each a session build.
    from autotune.profile import PROFILE_REPEATS, profile_estimate_s

    profile = fin.profile_time_s(study)
    zero = fin.default_trial(study)
    assert profile >= 2 * PROFILE_REPEATS * zero.user_attrs["build_time_s"]
    assert fin.finalize_estimate_s(study, rounds=0) >= profile + fin.WRITE_RESERVE_S and profile > 0
    assert profile_estimate_s(1.0, 0.01, repeats=10) > profile_estimate_s(1.0, 0.01, repeats=5)


KNOWN_SLOW_SPACE = """
target: slow-knob
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, extended, all], default: all}
  intra_op_spinning: {type: bool, default: true}
known_good:
  - {graph_optimization_level: basic, intra_op_spinning: false}
"""


def test_two_known_slow_trials_make_their_shared_value_a_rule_kept_after_resume(tmp_path, capsys):
    """Issue 27: a value whose trials run >= 2x slower than the defaults at their batch is a rule
    after two of them (the sweep's and a recipe's here), like a failure, and never tried again."""
    from autotune.rules import KNOWN_SLOW_REASON

    model = Path(__file__).resolve().parent.parent / "examples" / "example.onnx"
    space = tmp_path / "space.yaml"
    space.write_text(KNOWN_SLOW_SPACE)
    results = tmp_path / "r"
    target = "tests.crashing_target:SlowKnobTarget"
    assert tune(results, model, "slow", "--space", str(space), "--trials", "7", "--target", target) == 0
    study = load(results, "slow")
    rules = [r for r in study.user_attrs["rules"] if r["reason"] == KNOWN_SLOW_REASON and r["enforced"]]
    # basic is 6x slower by construction; extended/all run at the defaults' speed (a busy machine
    # can still make one of them look 2x slow twice: the bar compares unpaired measurements).
    rule = next(r for r in rules if r["knobs"] == {"graph_optimization_level": "basic"})
    basic = [t for t in study.trials if t.params.get("graph_optimization_level") == "basic"
             and "ruled_out" not in t.user_attrs and "duplicate_of" not in t.user_attrs]  # fmt: skip
    assert len(basic) == 2 and rule["trials"] == [t.number for t in basic]  # in-process: no third ran
    # each ran >= 2x the defaults' time per sample (or was cut at 10x as too slow)
    assert all(t.user_attrs.get("known_slow", 0) >= 2.0 or "too slow" in t.user_attrs.get("reason", "") for t in basic)
    assert main(["status", "slow", "--results-dir", str(results)]) == 0
    assert "graph_optimization_level=basic (known slow" in capsys.readouterr().out
    # rebuilt on resume: the resumed study runs the value no more
    assert tune(results, model, "slow", "--resume", "slow", "--trials", "8", "--target", target) == 0
    again = load(results, "slow")
    assert [t for t in again.trials if t.params.get("graph_optimization_level") == "basic"
            and "ruled_out" not in t.user_attrs and "duplicate_of" not in t.user_attrs] == basic  # fmt: skip


CARRY_SPACE = """
target: onnxruntime
knobs:
  graph_optimization_level: {type: categorical, choices: [disable, basic, extended, all], default: all}
  execution_mode: {type: categorical, choices: [sequential, parallel], default: sequential}
  batch_size: {type: categorical, choices: [1, 2, 4], default: 1}
  pass.remove_redundant_transposes: {type: bool, default: false}
"""


def test_the_best_configurations_are_measured_at_every_deployment_batch(tmp_path, tiny_model):
    """Issue 27: every batch's answer is at least the best known configuration run there."""
    space = tmp_path / "space.yaml"
    space.write_text(CARRY_SPACE)
    results = tmp_path / "r"
    assert tune(results, tiny_model, "carry", "--space", str(space), "--trials", "16") == 0
    study = load(results, "carry")
    carried = study.user_attrs["carried"]
    assert carried and carried != ["nothing to carry"]
    measured = [t for t in study.trials if t.state.is_finished() and not {"duplicate_of", "ruled_out"} & set(t.user_attrs)
                and (t.state == optuna.trial.TrialState.COMPLETE or "too slow" in t.user_attrs.get("reason", ""))]  # fmt: skip
    # each carried configuration was asked (queued first) and told at its batch

    told = {config_key(t.params) for t in study.trials if t.state.is_finished()}
    assert set(carried) <= told
    # every asked trial says where it came from (issue 27 item 3: what sampling adds)
    from autotune.study._loop import ORIGINS

    origin = {t.number: t.user_attrs.get("origin") for t in study.trials if t.number > 0 and t.state.is_finished()}
    assert set(origin.values()) <= set(ORIGINS) and study.trials[0].user_attrs["origin"] == "defaults"
    first = {}
    for t in study.trials:
        first.setdefault(config_key(t.params), t)
    assert {first[k].user_attrs["origin"] for k in carried} == {"carried"}
    assert {first[k].user_attrs["origin"] for k in study.user_attrs["sweep_keys"] if k in first} == {"sweep"}
    from autotune.answer import stored_answers, trial_sources

    rows, reached = trial_sources(study)
    assert sum(r.asked for r in rows) == sum(1 for t in study.trials if t.state.is_finished())
    assert sorted(b for r in rows for b in r.answers) == sorted(stored_answers(study))
    by_origin = {r.origin: r for r in rows}
    assert by_origin["carried"].asked >= len(carried)
    assert reached["to_95"] is not None and reached["to_95"] <= reached["to_100"]
    report = (results / "carry" / "report.md").read_text()
    assert "## Where the trials came from" in report and f"at trial {reached['to_100']}." in report

    def combo(t):
        return tuple(sorted((k, v) for k, v in t.params.items() if k != "batch_size"))

    knobs = {combo(t) for t in study.trials if t.state.is_finished() and config_key(t.params) in set(carried)}
    assert knobs
    for combo_ in knobs:
        # measured there: complete, or cut at 10x as too slow (a measurement too)
        batches = {t.params["batch_size"] for t in measured if combo(t) == combo_}
        assert batches == {1, 2, 4}, (combo_, batches)


def test_status_states_the_inputs_tuned_and_compares_the_provisional_best_at_its_own_batch(
    finished, capsys, tmp_path, monkeypatch
):
    """Issue 29: the shapes tuned are shown; "best so far ... at batch 8 (1.01x trial 0)" compared
    batch 8 with batch 1."""
    import shutil

    from autotune.answer import best_trial, default_trial, defaults_at_batch

    monkeypatch.setenv("COLUMNS", "300")
    results, _, _ = finished
    copy = tmp_path / "results"
    shutil.copytree(results / "tiny", copy / "tiny")
    study = load(copy, "tiny")
    study.set_user_attr("study_dir", str(copy / "tiny"))
    study.set_user_attr("best_trial", None)  # as before finalize: no answer yet
    assert main(["status", "tiny", "--results-dir", str(copy)]) == 0
    out = capsys.readouterr().out
    shapes = study.user_attrs["input_shapes"]
    assert shapes and all(f"{name} {shape}" in out for name, shape in shapes.items())
    assert "(b is the batch" in out or "; b is the batch" in out
    assert f"- inputs tuned: {next(iter(shapes))}" in (results / "tiny" / "report.md").read_text()
    best = best_trial(study)
    batch = int(best.user_attrs.get("batch_size", 1))
    same = defaults_at_batch(study, default_trial(study), batch)
    assert "x trial 0)" not in out
    if same is None:
        assert f"the defaults have not run at batch {batch} yet" in out
    elif same.number != best.number:
        assert f"{best.values[0] / same.values[0]:.2f}x the defaults at batch {batch}, trial {same.number}" in out
