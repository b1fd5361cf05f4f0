"""What a study records: the objectives, the user attributes of a told trial (the schema every
report, status and export reads) and the queries over them (counts, the goal, a trial by number)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna

from autotune.judges import JudgeLimits, roles_from_attrs
from autotune.layout import CALIBRATION_FILE, INPUTS_FILE, METRICS_FILE, MODEL_FILE, trial_dir
from autotune.model import pool_sha256
from autotune.rules import Rule
from autotune.space import config_key
from autotune.sweep import Outcome
from autotune.targets import target_class
from autotune.targets.base import TargetOptions
from autotune.trial import TrialResult, calibration_feeds, transform_model
from autotune.verify import Tolerance

if TYPE_CHECKING:
    from autotune.study._spec import StudySpec


OBJECTIVES = ("throughput", "normalized_error")


DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")


def native_constraints() -> bool:
    """Optuna >= 5 records constraints on the trial (`Trial.set_constraint`)."""

    return hasattr(optuna.trial.Trial, "set_constraint")


def constraints_from_attrs(trial: Any) -> list[float]:
    """Optuna constraint values (<= 0 is feasible), read from the trial's user attributes."""
    return list(trial.user_attrs.get("constraints", [1.0]))


FLAT_MEASUREMENTS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput")


FLAT_ACCURACY = (
    "passed",
    "normalized_error",
    "max_abs_error",
    "max_rel_error",
    "mean_rel_error",
    "min_cosine_similarity",
    "rejected_by",
)


def result_attrs(result: TrialResult) -> dict[str, Any]:
    """User attributes stored on the Optuna trial: the numbers a dashboard user filters on,
    flat; the rest nested under a few keys (each attribute is one storage write)."""
    attrs: dict[str, Any] = {"config_key": config_key(result.config), "batch_size": result.batch_size}
    if result.reason:
        attrs["reason"] = result.reason
    attrs.update({k: result.measurements[k] for k in FLAT_MEASUREMENTS if k in result.measurements})
    attrs.update({k: result.accuracy[k] for k in FLAT_ACCURACY if k in result.accuracy})
    judges = result.accuracy.get("judges", {})
    if judges:  # what each output's judge saw, in one line the dashboard shows
        attrs["judged"] = "; ".join(f"{name} ({v['role']}): {v['detail']}" for name, v in judges.items())
    if "build_s" in result.timings_s:
        attrs["build_time_s"] = result.timings_s["build_s"]
    attrs["details"] = {
        "measurement": {k: v for k, v in result.measurements.items() if k not in FLAT_MEASUREMENTS},
        "errors_per_output": result.accuracy.get("outputs", {}),
        "judges": result.accuracy.get("judges", {}),
        "timings_s": result.timings_s,
        "build": {k: v for k, v in result.build.items() if k != "layers"},
        "rewrites": result.rewrites,
    }
    if result.digest:
        attrs["digest"] = result.digest
    if result.shared_with is not None:
        attrs["shared_measurement_with_trial"] = result.shared_with
    return json.loads(json.dumps(attrs, default=str))


def tell_result(study: Any, trial: Any, result: TrialResult, spec: StudySpec) -> None:
    """Records `result` on `trial`: attributes first (the sampler's constraints read them)."""

    for key, value in result_attrs(result).items():
        trial.set_user_attr(key, value)
    if result.state == "complete" and spec.target_options.build_only:
        set_constraints(trial, {"accuracy": 0.0})
        study.tell(trial, [0.0, 0.0])
        return
    if result.state == "complete":
        constraints = {"accuracy": -1.0 if result.accuracy.get("passed") else 1.0}
        if spec.latency_sla_ms is not None:
            constraints["latency_sla"] = float(result.measurements["latency_ms_p50"]) - spec.latency_sla_ms
        set_constraints(trial, constraints)
        study.tell(trial, [result.throughput, error_objective(result.accuracy)])
    elif result.state == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


# Errors below this (normalized to the output's magnitude) are float rounding: FP32 graph
# rewrites and session options differ by 1e-7..1e-5. Told as equal, they stop splitting the
# Pareto front on noise, so the sampler ranks such configurations by throughput alone.
ERROR_FLOOR = 1e-4


def error_objective(accuracy: Mapping[str, Any]) -> float:
    """The error objective told to Optuna: the normalized error, floored at ERROR_FLOOR."""
    error = float(accuracy.get("normalized_error", math.inf))
    return max(error, ERROR_FLOOR) if math.isfinite(error) else 1e30


def set_constraints(trial: Any, constraints: Mapping[str, float]) -> None:
    """Records constraint values (<= 0 feasible) where the sampler reads them."""
    trial.set_user_attr("constraints", list(constraints.values()))
    if native_constraints():
        for key, value in constraints.items():
            trial.set_constraint(key, value)


def study_attrs(spec: StudySpec) -> dict[str, Any]:
    return {
        "study_dir": str(spec.study_dir.resolve()),
        "model_path": str(spec.model.path),
        "model_sha256": spec.model.sha256,
        "target": spec.target_name,
        "build_only": spec.target_options.build_only,
        "target_options": spec.target_options.as_study_attrs(),
        "space_source": spec.space.source,
        "atol": spec.tolerance.atol,
        "rtol": spec.tolerance.rtol,
        "accuracy_mode": spec.tolerance.mode,
        "max_error": spec.tolerance.max_error,
        "min_cosine": spec.tolerance.min_cosine,
        "metric": spec.tolerance.metric,
        "output_roles": [role.as_dict() for role in spec.tolerance.roles],
        "judge_limits": asdict(spec.tolerance.limits),
        "dynamic_batch": spec.model.dynamic_batch,
        "inputs_sha256": pool_sha256(spec.input_pool),
        "verification_samples": int(next(iter(spec.input_pool.values())).shape[0]) if spec.input_pool else 0,
        "calibration_samples": sum(int(next(iter(f.values())).shape[0]) for f in spec.calibration_feeds),
        "shape_overrides": {k: list(v) for k, v in spec.shape_overrides.items()},
        "input_shapes": input_shapes(spec.input_pool, spec.model.dynamic_batch),
        "n_trials": spec.n_trials,
        "budget_s": spec.budget_s,
        "latency_sla_ms": spec.latency_sla_ms,
        "start_options": spec.start_options,
    }


def input_shapes(pool: Mapping[str, Any], dynamic_batch: bool) -> dict[str, str]:
    """The shape and dtype of each input as the study tunes it (issue 29: the shape tuned is
    shown): "b" for a dynamic batch dim (the trial's batch size), the rest as the inputs hold them.

    Example:
        >>> import numpy as np
        >>> input_shapes({"x": np.zeros((8, 3, 48, 320), np.float32)}, True)
        {'x': '[b, 3, 48, 320] float32'}
    """
    shapes = {}
    for name, array in pool.items():
        dims = [str(d) for d in array.shape]
        if dynamic_batch and dims:
            dims[0] = "b"
        shapes[name] = f"[{', '.join(dims)}] {array.dtype}"
    return shapes


def inputs_line(attrs: Mapping[str, Any]) -> str | None:
    """The tuned inputs as `status` and report.md state them, or None for a study recorded
    before they were."""
    shapes = attrs.get("input_shapes")
    if not shapes:
        return None
    batches = "; b is the batch of each trial" if attrs.get("dynamic_batch") else ""
    return ", ".join(f"{name} {shape}" for name, shape in shapes.items()) + batches


def summary_from_attrs(number: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
    details = attrs.get("details", {})
    measurements = {k: attrs[k] for k in FLAT_MEASUREMENTS if k in attrs} | details.get("measurement", {})
    return {
        "number": number,
        "measurements": measurements | {"batch_size": attrs.get("batch_size", 1)},
        "accuracy": {k: attrs[k] for k in FLAT_ACCURACY if k in attrs}
        | {"outputs": details.get("errors_per_output", {})},
    }


def outcome_from_attrs(config: dict[str, Any], attrs: Mapping[str, Any]) -> Outcome:
    feasible = all(c <= 0 for c in attrs.get("constraints", [1.0]))
    error = float(attrs.get("normalized_error", math.inf))
    return Outcome(config, float(attrs.get("throughput", 0.0)), error, feasible)


def result_outcome(result: TrialResult) -> Outcome:
    error = float(result.accuracy.get("normalized_error", math.inf)) if result.accuracy else math.inf
    return Outcome(
        dict(result.config), result.throughput if result.state == "complete" else 0.0, error, result.feasible
    )


def count_trials(study: Any) -> dict[str, int]:

    counts = {"complete": 0, "failed": 0, "pruned": 0, "running": 0, "waiting": 0}
    names = {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.FAIL: "failed",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.RUNNING: "running",
        optuna.trial.TrialState.WAITING: "waiting",
    }
    for frozen in study.get_trials(deepcopy=False):
        counts[names[frozen.state]] += 1
    return counts


# Trials that taught nothing new do not count toward --trials: a configuration already
# measured (same config, or an artifact identical to an earlier trial's) or one a failure
# rule had already ruled out.
NOT_COUNTED = ("interrupted", "cancelled", "duplicate_of", "ruled_out", "shared_measurement_with_trial")


# Reasons of trials cut short by a stop or the budget (executor.cancel_all), not by their
# configuration: such a configuration was never measured, so a resume runs it again.
CANCELLED_PREFIXES = ("stopped", "budget spent")


def counts_toward_goal(frozen: Any, *, build_only: bool = False) -> bool:
    """Whether a finished trial counts toward `--trials` (new information, not interrupted).
    In a build-only study every build counts, identical engines included (a build is what
    such a study is for)."""

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    skip = [k for k in NOT_COUNTED if not (build_only and k == "shared_measurement_with_trial")]
    return frozen.state in finished and not any(key in frozen.user_attrs for key in skip)


def finished_count(study: Any) -> int:
    """Trials that count toward `--trials` (see `counts_toward_goal`)."""
    build_only = bool(study.user_attrs.get("build_only"))
    return sum(1 for t in study.get_trials(deepcopy=False) if counts_toward_goal(t, build_only=build_only))


def tell_duplicate(study: Any, trial: Any, original_number: int) -> None:
    """An identical configuration was already measured: copy its outcome, do not re-measure."""

    original = trial_by_number(study, original_number)
    trial.set_user_attr("duplicate_of", original_number)
    if original is not None and original.state == optuna.trial.TrialState.COMPLETE and original.values:
        for key, value in original.user_attrs.items():
            if key not in ("duplicate_of", "constraints"):
                trial.set_user_attr(key, value)
        names = ["accuracy", "latency_sla"]
        set_constraints(trial, dict(zip(names, original.user_attrs.get("constraints", [1.0]), strict=False)))
        study.tell(trial, list(original.values))
    else:
        state = "is not complete yet"
        if original is not None:
            states = {optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.PRUNED: "was pruned"}
            state = states.get(original.state, state)
        trial.set_user_attr("reason", f"duplicate of trial {original_number}, which {state}")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def tell_ruled_out(study: Any, trial: Any, rule: Rule) -> None:
    """A configuration a failure rule covers: not run, told as pruned with the rule."""

    trial.set_user_attr("ruled_out", True)
    knobs = ", ".join(f"{k}={v}" for k, v in rule.knobs.items())
    trial.set_user_attr("reason", f"ruled out: {knobs} failed as '{rule.reason}' in trials {rule.trials}")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def trial_by_number(study: Any, number: int | None) -> Any | None:
    """The trial with this number, or None (one storage lookup, not a scan)."""
    if number is None:
        return None
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
        return study._storage.get_trial(trial_id)
    except (KeyError, AttributeError):
        return None


def chosen_trial(study: Any) -> Any | None:
    """The study's answer, as finalize stored it; before finalize, None."""
    return trial_by_number(study, study.user_attrs.get("best_trial"))


# A trial read back from its directory: its layer table, its model rebuilt when pruned.


def trial_layers(study_dir: Path, number: int) -> list[dict[str, Any]]:
    """The per-layer table a target recorded for trial `number` (empty when it has none)."""
    path = trial_dir(study_dir, number) / METRICS_FILE
    try:
        return list(json.loads(path.read_text()).get("build", {}).get("layers", []))
    except (OSError, json.JSONDecodeError):
        return []


def regenerate_model(study: Any, trial: Any, source_dir: Path) -> Path:
    """Re-applies a trial's passes and precision (deterministic) when its files were pruned."""
    study_dir = Path(study.user_attrs["study_dir"])
    with np.load(study_dir / INPUTS_FILE) as data:
        pool = {k: data[k] for k in data.files}
    source_dir.mkdir(parents=True, exist_ok=True)
    out = source_dir / MODEL_FILE
    feeds = calibration_feeds(pool, bool(study.user_attrs.get("dynamic_batch")))
    if (study_dir / CALIBRATION_FILE).exists():
        with np.load(study_dir / CALIBRATION_FILE) as data:
            batches: dict[int, dict[str, np.ndarray]] = {}
            for key in data.files:
                index, name = key.split("/", 1)
                batches.setdefault(int(index), {})[name] = data[key]
        feeds = [batches[i] for i in sorted(batches)]
    # The same scheme and kernels the trial ran with (`Target.precision_kernels` may depend on
    # the device an instance finds, so an instance is asked).
    target = target_class(study.user_attrs["target"])(TargetOptions.from_study_attrs(study.user_attrs))
    transform_model(
        Path(study.user_attrs["model_path"]),
        trial.params,
        out,
        calibration_feeds=feeds,
        scheme=target.quantization_scheme,
        kernels=target.precision_kernels,
        tolerance=study_tolerance(study.user_attrs),  # keep_float_layers "auto" repairs to the study's gate
    )
    return out


def study_tolerance(attrs: dict[str, Any]) -> Any:
    """The study's accuracy gate (`autotune.verify.Tolerance`) from its user attributes."""
    defaults = Tolerance()
    return Tolerance(
        atol=float(attrs.get("atol", defaults.atol)),
        rtol=float(attrs.get("rtol", defaults.rtol)),
        mode=attrs.get("accuracy_mode") or "elementwise",  # studies from before the scale gate
        max_error=float(attrs.get("max_error", defaults.max_error)),
        min_cosine=float(attrs.get("min_cosine", defaults.min_cosine)),
        metric=attrs.get("metric"),
        roles=roles_from_attrs(attrs.get("output_roles", [])),
        limits=JudgeLimits(**attrs.get("judge_limits", {})),
    )
