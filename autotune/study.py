"""The study: what to try (Optuna), handed to an executor (where it runs), told back.

The process running `run_study` is the only writer of the Optuna storage. It asks for
configurations, turns each into a `TrialRequest`, submits it to an executor (in-process or
Ray workers) and tells the result back with its measurements as user attributes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from autotune.errors import UsageError
from autotune.measure import StopRule
from autotune.model import ModelInfo, feeds_at_batch, fp32_cpu_session, pool_sha256
from autotune.rules import FailureRules, Rule, rules_from_history
from autotune.space import PASS_PREFIX, SearchSpace, config_key, space_sha256
from autotune.sweep import Outcome, combine_winners, one_knob, sweep_configs, unmeasured_config
from autotune.targets.base import TargetOptions
from autotune.trial import TrialRequest, TrialResult
from autotune.verify import Tolerance

STUDY_DB = "study.db"
OBJECTIVES = ("throughput", "normalized_error")
DIRECTIONS = ("maximize", "minimize")
SLOW_FACTOR = 10.0  # a configuration this many times slower per sample than trial 0 is cut short
CONTROL_EVERY = 10  # the defaults are re-measured after every this many counted trials (drift)
CONTROL_FIRST = 3  # ... and once early: trial 0 runs on a cold worker (seen 1.5x slow on a GPU)
NEARLY_TOO_SLOW = SLOW_FACTOR / 2  # a success this much slower than the defaults does not
# contradict a "too slow" failure rule (it was cut at 10x by the batch-scaled cap, not fast)
DRIFT_FLAG = 0.10  # a control this far from trial 0 (relative) flags the trials told after it
REPEATS_BEFORE_FALLBACK = 2  # asks that brought nothing new before a random unmeasured configuration
MAX_REPEATS = 200  # asks that brought nothing new before the study stops asking
ELAPSED_EVERY_S = 10.0  # the study's elapsed time is stored at least this often
ARRIVED_FILE = "arrived.json"  # a result that reached the daemon and is not yet told


@dataclass
class StudySpec:
    """A validated request to tune one model; nothing has been written yet.

    Args:
        name (str): study name (directory under `results_dir`).
        results_dir (Path): where studies live.
        model (ModelInfo): the validated model.
        target_name (str): resolved target name.
        target_options (TargetOptions): target settings (cache dir is filled in later).
        space (SearchSpace): validated, capability-filtered space.
        known_good (list): partial configurations enqueued after trial 0.
        avoid (list): partial configurations never proposed (the space file's `avoid:`).
        tolerance (Tolerance): accuracy tolerance.
        input_pool (dict): fixed inputs (user's or synthetic).
        shape_overrides (dict): `--shape` values.
        n_trials (int | None): trial count to reach (None: budget only).
        budget_s (float | None): wall-time budget (None: trials only).
        seed (int): sampler seed. Default: 0.
        stop_rule (StopRule): benchmark stop rule.
        latency_sla_ms (float | None): constraint on median latency. Default: None.
        storage (str | None): Optuna storage URL; None means SQLite in the study directory.
        sampler (str): "tpe" (multi-objective TPE with constant liar) or "random" (a baseline
            for benchmarks). Default: "tpe".
    """

    name: str
    results_dir: Path
    model: ModelInfo
    target_name: str
    target_options: TargetOptions
    space: SearchSpace
    known_good: list[dict[str, Any]]
    tolerance: Tolerance
    input_pool: dict[str, np.ndarray]
    shape_overrides: dict[str, tuple[int, ...]]
    n_trials: int | None
    budget_s: float | None
    seed: int = 0
    stop_rule: StopRule = field(default_factory=StopRule)
    latency_sla_ms: float | None = None
    storage: str | None = None
    sampler: str = "tpe"
    start_options: dict[str, Any] = field(default_factory=dict)
    avoid: list[dict[str, Any]] = field(default_factory=list)
    # INT8/FP8 calibration batches, disjoint from `input_pool` (autotune.calibration); empty:
    # the trials calibrate on `input_pool` (library callers of old).
    calibration_feeds: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def study_dir(self) -> Path:
        return self.results_dir / self.name

    @property
    def storage_url(self) -> str:
        return storage_url(self.study_dir, self.storage)

    def batch_sizes(self) -> list[int]:
        if "batch_size" in self.space and self.model.dynamic_batch:
            return [int(b) for b in self.space["batch_size"].values()]
        return [1]


def storage_url(study_dir: Path, storage: str | None = None) -> str:
    """`storage` when given, else the study's embedded SQLite database."""
    return storage or f"sqlite:///{(study_dir / STUDY_DB).resolve()}"


def quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _native_constraints() -> bool:
    """Optuna >= 5 records constraints on the trial (`Trial.set_constraint`)."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def constraints_from_attrs(trial: Any) -> list[float]:
    """Optuna constraint values (<= 0 is feasible), read from the trial's user attributes."""
    return list(trial.user_attrs.get("constraints", [1.0]))


def make_storage(url: str) -> Any:
    """Optuna RDB storage for `url`; SQLite gets WAL journaling and `synchronous=NORMAL`.

    Optuna commits once per suggest and per user attribute; with SQLite's default rollback
    journal each commit is an fsync (~4 ms here), which made the orchestration a third of a
    study's wall time. WAL keeps the database consistent across crashes (a `kill -9` loses at
    most the last transactions, never corrupts) at a fraction of the cost.
    """
    import optuna

    if not url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url)
    from sqlalchemy import event

    def set_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    event.listen(storage.engine, "connect", set_pragmas)
    storage.engine.dispose()  # later connections get the pragmas
    return storage


def open_study(spec: StudySpec, *, create: bool) -> Any:
    """Creates (or loads) the Optuna study with the multi-objective TPE sampler."""
    import optuna

    quiet_optuna()
    constraints = {} if _native_constraints() else {"constraints_func": constraints_from_attrs}
    if spec.sampler == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=spec.seed,
            constant_liar=True,
            n_startup_trials=max(4, min(10, (spec.n_trials or 40) // 4)),
            multivariate=True,
            **constraints,
        )
    if create:
        study = optuna.create_study(
            storage=make_storage(spec.storage_url),
            study_name=spec.name,
            directions=list(DIRECTIONS),
            sampler=sampler,
            load_if_exists=True,
        )
        study.set_metric_names(list(OBJECTIVES))
        return study
    return optuna.load_study(study_name=spec.name, storage=make_storage(spec.storage_url), sampler=sampler)


def existing_study_model(results_dir: Path, name: str, storage: str | None = None) -> dict[str, Any] | None:
    """The stored model facts of study `name`, or None when it does not exist (read-only).

    Raises:
        UsageError: the study's database is not a readable study database, or `storage`
            cannot be opened; the message names the file (or the URL, password hidden).
    """
    import optuna

    quiet_optuna()
    url = storage_url(results_dir / name, storage)
    if storage is None and not (results_dir / name / STUDY_DB).exists():
        return None
    if storage is None:
        check_database(results_dir / name)
    try:
        summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors: one line naming the file/URL
        raise UsageError(_unreadable(results_dir / name, storage, exc)) from None
    for summary in summaries:
        if summary.study_name == name:
            return dict(summary.user_attrs)
    return None


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


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: nothing to hide in it
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def check_database(study_dir: Path) -> None:
    """UsageError naming the file when `<study_dir>/study.db` exists but is no SQLite database
    (a 0-byte file included: it would silently become a new, empty study)."""
    db = study_dir / STUDY_DB
    try:
        with open(db, "rb") as handle:
            header = handle.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{db}: cannot read the study database ({exc.strerror})") from None
    if not header:
        raise UsageError(f"{db}: empty file, not a study database (restore it, or move it aside to start over)")
    if header != b"SQLite format 3\x00":
        raise UsageError(f"{db}: not a SQLite database (corrupt; restore it, or move it aside to start over)")


def _unreadable(study_dir: Path, storage: str | None, exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    detail = " ".join(str(cause).split())[:200]
    if storage is not None:
        return f"--storage {redact_url(storage)}: cannot open this storage ({type(cause).__name__}: {detail})"
    return f"{study_dir / STUDY_DB}: unreadable study database ({detail}); restore it, or move it aside"


def load_study_dir(results_dir: Path, name: str, storage: str | None = None) -> Any:
    """Loads study `name` of `results_dir` for a command (status, report, export, ...).

    One directory is one study: the returned study reads its `study_dir` as the directory it
    was loaded from, never the path stored in the database (a copied results directory must
    not write into the original), and a plugin target named in the database ("module:Class")
    is never imported from there.

    Raises:
        UsageError: a bad name, no such study, or an unreadable database (one line naming it).
    """
    import optuna

    quiet_optuna()
    check_study_name(name)
    study_dir = results_dir / name
    if storage is None and not (study_dir / STUDY_DB).exists():
        from autotune.daemon import daemon_state

        state = daemon_state(study_dir) if study_dir.is_dir() else "not started"
        if state != "not started":  # a daemon that failed (or runs) before the study existed
            raise UsageError(f"study {name!r}: no trials yet; its daemon: {state}")
        raise UsageError(f"study {name!r}: not found under {results_dir} (see `autotune list`)")
    if storage is None:
        check_database(study_dir)
    url = storage_url(study_dir, storage)
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise UsageError(f"study {name!r}: not in storage {redact_url(url)}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors: one line naming the file/URL
        raise UsageError(_unreadable(study_dir, storage, exc)) from None
    study.__class__ = _located_study_class()
    study._located_dir = str(study_dir.resolve())
    return study


@functools.cache
def _located_study_class() -> type:
    import optuna

    class _LocatedStudy(optuna.Study):
        """An Optuna study whose `study_dir` is where it was loaded from (see `load_study_dir`)."""

        _located_dir = ""

        @property
        def user_attrs(self) -> dict[str, Any]:
            from autotune.targets import target_names

            attrs = super().user_attrs
            attrs["study_dir"] = self._located_dir
            target = attrs.get("target")
            if isinstance(target, str) and target not in target_names():
                # Named by "module:Class" at start; importing a name read from a file would run
                # whatever code it names. Commands that need the target refuse it by this name.
                attrs["target"] = f"plugin {target.replace(':', '.')} (not imported from the database)"
            return attrs

    return _LocatedStudy


def compute_references(spec: StudySpec) -> dict[int, dict[str, np.ndarray]]:
    """FP32 reference outputs of the original model (ONNX Runtime CPU, no graph
    optimizations) for every batch size the space may pick."""
    if spec.target_options.build_only:
        return {}  # nothing runs, nothing is compared
    session = fp32_cpu_session(spec.model.path)
    names = [o.name for o in session.get_outputs()]
    references = {}
    for batch in spec.batch_sizes():
        feeds = feeds_at_batch(spec.input_pool, batch, spec.model.dynamic_batch)
        references[batch] = dict(zip(names, session.run(names, feeds), strict=True))
    return references


def weak_reference_warnings(references: dict[int, dict[str, np.ndarray]], tolerance: Tolerance) -> list[str]:
    """Outputs whose FP32 reference cannot tell a right candidate from a wrong one.

    A reference that stays within `atol` of zero everywhere (a detector's empty heat map on
    synthetic noise) lets any candidate that outputs near-zeros pass (elementwise), or has a
    range so small that float rounding decides (scale); a constant one says nothing either.
    The user should then pass real inputs (`--inputs`).
    """
    from autotune.verify import DEGENERATE_SCALE

    warnings = []
    for _batch, outputs in sorted(references.items())[:1]:
        for name, value in outputs.items():
            if value.size == 0 or not np.issubdtype(value.dtype, np.floating):
                continue
            peak = float(np.max(np.abs(value)))
            spread = float(np.ptp(value.astype(np.float64)))
            if peak <= tolerance.atol:
                consequence = "accuracy checks cannot reject a wrong candidate"
                if tolerance.mode == "scale" and peak > DEGENERATE_SCALE:
                    scale = spread if spread > DEGENERATE_SCALE else peak
                    consequence = f"its errors are judged against a range of only {scale:.3g}, where rounding decides"
                warnings.append(
                    f"output {name!r} of the FP32 reference is within atol of zero (max |value| {peak:.3g} <= "
                    f"{tolerance.atol:g}) on these inputs: {consequence}; "
                    "pass real inputs with --inputs FILE.npz"
                )
            elif spread <= DEGENERATE_SCALE:
                warnings.append(
                    f"output {name!r} of the FP32 reference is constant ({peak:.3g}) on these inputs: "
                    "accuracy checks are weak; pass real inputs with --inputs FILE.npz"
                )
    return warnings


class Executor:
    """Where trials run. `submit` hands a request over; `wait` returns finished results."""

    capacity: int = 1
    asynchronous: bool = False  # True when submitted trials run while the study loop goes on

    def submit(self, request: TrialRequest) -> None:
        raise NotImplementedError

    def wait(self, timeout_s: float) -> list[TrialResult]:
        raise NotImplementedError

    def in_flight(self) -> int:
        raise NotImplementedError

    def cancel_all(self, reason: str) -> None:
        """Stops every in-flight trial; each comes back from `wait` failed with `reason`."""

    def close(self) -> None:
        """Releases workers."""


class InProcessExecutor(Executor):
    """Runs each trial synchronously in this process (foreground runs and tests)."""

    def __init__(self, run: Callable[[TrialRequest], TrialResult] | None = None) -> None:
        from autotune.trial import run_trial

        self._run = run or run_trial
        self._done: list[TrialResult] = []

    def submit(self, request: TrialRequest) -> None:
        self._done.append(self._run(request))

    def wait(self, timeout_s: float) -> list[TrialResult]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)


@dataclass
class StudyRun:
    """Mutable state of one run of the ask/submit/tell loop."""

    started: float
    budget_s: float | None
    pending: dict[int, Any] = field(default_factory=dict)  # number -> optuna Trial
    keys: dict[str, int] = field(default_factory=dict)  # config key -> trial number that measured it
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> summary
    reference_latency_s: float = 0.0  # the defaults' fastest latency per sample (trial 0, controls)
    trial0_latency_s: float = 0.0  # trial 0's own latency per sample (what drift is relative to)
    done: int = 0  # trials that count toward --trials
    repeats: int = 0  # consecutive asks that brought nothing new (duplicates, ruled out)
    stopping: bool = False
    rules: FailureRules = field(default_factory=FailureRules)
    sweep_keys: set[str] = field(default_factory=set)  # one-knob sweep configurations not yet told
    sweep_told: list[Outcome] = field(default_factory=list)
    default: Outcome | None = None  # the defaults' outcome (fastest of trial 0 and the controls)
    controls: dict[int, TrialRequest] = field(default_factory=dict)  # in-flight drift controls
    controls_sent: int = 0
    last_control: int = 0  # counted trials when the last control was sent
    drift_ratio: float = 1.0  # the latest control's latency over trial 0's

    def out_of_time(self) -> bool:
        return self.budget_s is not None and time.monotonic() - self.started >= self.budget_s

    def busy(self) -> int:
        return len(self.pending) + len(self.controls)


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
    if "build_s" in result.timings_s:
        attrs["build_time_s"] = result.timings_s["build_s"]
    attrs["details"] = {
        "measurement": {k: v for k, v in result.measurements.items() if k not in FLAT_MEASUREMENTS},
        "errors_per_output": result.accuracy.get("outputs", {}),
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
    import optuna

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
    if _native_constraints():
        for key, value in constraints.items():
            trial.set_constraint(key, value)


def sweep_cap(n_trials: int | None) -> int:
    """How many one-knob sweep trials a study of `n_trials` affords: half of them (the knobs
    listed first in the space file are swept first), 40 for a budget-only study."""
    return max(n_trials // 2, 4) if n_trials else 40


def seed_queue(study: Any, spec: StudySpec) -> None:
    """Enqueues, once per study: trial 0 (all defaults), the known-good configurations (the
    recipes an expert tries first), then the one-knob-at-a-time sweep (see `autotune.sweep`)."""
    if study.user_attrs.get("seeded"):
        return
    seen = set()
    sweep = [] if spec.target_options.build_only else sweep_configs(spec.space)[: sweep_cap(spec.n_trials)]
    sweep_keys = []
    for index, partial in enumerate([{}, *spec.known_good, *sweep]):
        config = spec.space.complete(partial)
        key = config_key(config)
        if key not in seen:
            seen.add(key)
            study.enqueue_trial(config, skip_if_exists=True)
            if index > len(spec.known_good):
                sweep_keys.append(key)
    study.set_user_attr("sweep_keys", sweep_keys)
    study.set_user_attr("seeded", True)


def study_attrs(spec: StudySpec) -> dict[str, Any]:
    return {
        "study_dir": str(spec.study_dir.resolve()),
        "model_path": str(spec.model.path),
        "model_sha256": spec.model.sha256,
        "target": spec.target_name,
        "build_only": spec.target_options.build_only,
        "space_source": spec.space.source,
        "atol": spec.tolerance.atol,
        "rtol": spec.tolerance.rtol,
        "accuracy_mode": spec.tolerance.mode,
        "max_error": spec.tolerance.max_error,
        "min_cosine": spec.tolerance.min_cosine,
        "metric": spec.tolerance.metric,
        "dynamic_batch": spec.model.dynamic_batch,
        "inputs_sha256": pool_sha256(spec.input_pool),
        "verification_samples": int(next(iter(spec.input_pool.values())).shape[0]) if spec.input_pool else 0,
        "calibration_samples": sum(int(next(iter(f.values())).shape[0]) for f in spec.calibration_feeds),
        "shape_overrides": {k: list(v) for k, v in spec.shape_overrides.items()},
        "n_trials": spec.n_trials,
        "budget_s": spec.budget_s,
        "latency_sla_ms": spec.latency_sla_ms,
        "start_options": spec.start_options,
    }


def recover_state(study: Any, run: StudyRun, space: SearchSpace | None = None, spec: StudySpec | None = None) -> None:
    """Rebuilds the loop's memory from told trials (dedup maps, failure rules, the sweep, the
    baseline); tells trials a dead run left RUNNING whose result had arrived (`arrived.json`),
    fails the others and re-queues their configurations."""
    import optuna

    if spec is not None:
        _tell_arrivals(study, spec, space.default_config() if space is not None else {})

    history = []
    defaults = space.default_config() if space is not None else {}
    requeued = list(study.user_attrs.get("requeued_cancelled", []))
    before = len(requeued)
    requeued_now: list[dict[str, Any]] = []  # configurations cut short, queued again below
    for frozen in study.get_trials(deepcopy=False):
        attrs = frozen.user_attrs
        if frozen.state == optuna.trial.TrialState.RUNNING:
            interrupted = optuna.trial.Trial(study, frozen._trial_id)
            interrupted.set_user_attr("reason", "interrupted: the daemon stopped mid-trial; configuration re-queued")
            interrupted.set_user_attr("interrupted", True)
            study.tell(interrupted, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            if frozen.params:
                study.enqueue_trial(frozen.params, skip_if_exists=False)
                requeued_now.append(dict(frozen.params))
            continue
        if "config_key" not in attrs or attrs.get("interrupted"):
            continue
        if attrs.get("cancelled"):
            # Cut short by a stop or the budget, never measured: run it again, once.
            if frozen.number not in requeued and frozen.params:
                study.enqueue_trial(frozen.params, skip_if_exists=False)
                requeued.append(frozen.number)
                requeued_now.append(dict(frozen.params))
            continue
        state = {
            optuna.trial.TrialState.COMPLETE: "complete",
            optuna.trial.TrialState.FAIL: "failed",
            optuna.trial.TrialState.PRUNED: "pruned",
        }.get(frozen.state)
        if state == "complete" and attrs.get("slow_vs_baseline", 0.0) > NEARLY_TOO_SLOW:
            state = "slow"  # neither a failure nor evidence against a failure rule
        if state is not None:
            history.append((frozen.number, state, dict(frozen.params), str(attrs.get("reason", ""))))
        if frozen.state == optuna.trial.TrialState.FAIL:
            run.keys.setdefault(attrs["config_key"], frozen.number)  # a failing configuration is not retried
            continue
        if frozen.state == optuna.trial.TrialState.PRUNED and attrs.get("ruled_out"):
            run.keys.setdefault(attrs["config_key"], frozen.number)
            continue
        if frozen.state != optuna.trial.TrialState.COMPLETE:
            continue
        run.keys.setdefault(attrs["config_key"], frozen.number)
        if (
            "digest" in attrs
            and ("latency_ms_p50" in attrs or "build" in attrs)
            and "shared_measurement_with_trial" not in attrs
        ):
            run.measured.setdefault(attrs["digest"], _summary_from_attrs(frozen.number, attrs))
        if (attrs.get("baseline") or frozen.number == 0) and "latency_ms_p50" in attrs:
            run.reference_latency_s = attrs["latency_ms_p50"] / 1e3 / max(int(attrs.get("batch_size", 1)), 1)
            run.trial0_latency_s = run.reference_latency_s
            run.default = _outcome(dict(frozen.params), attrs)
    if len(requeued) > before:
        study.set_user_attr("requeued_cancelled", requeued)
    if space is not None and requeued_now:
        _requeued_first(study, space, requeued_now)
    run.rules = rules_from_history(history, defaults)
    run.done = finished_count(study)
    run.sweep_keys = {k for k in study.user_attrs.get("sweep_keys", []) if k not in run.keys}
    for frozen in study.get_trials(deepcopy=False):
        measured = frozen.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in frozen.user_attrs
        outcome = _outcome(dict(frozen.params), frozen.user_attrs)
        if measured and space is not None and one_knob(outcome, defaults, space) is not None:
            run.sweep_told.append(outcome)
    run.controls_sent = len(study.user_attrs.get("drift", []))
    for control in study.user_attrs.get("drift", []):
        run.reference_latency_s = min(run.reference_latency_s, control["ms_per_sample"] / 1e3)


def _journal_arrival(spec: StudySpec, result: TrialResult) -> bool:
    """Writes `result` to `trials/<n>/arrived.json` (atomically); False when it cannot be written."""
    if result.number < 0:
        return True  # a drift control is not a trial
    path = spec.study_dir / "trials" / str(result.number) / ARRIVED_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return write_atomically(path, json.dumps(result.as_dict(), default=str))


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


def _drop_arrival(spec: StudySpec, number: int) -> None:
    try:
        (spec.study_dir / "trials" / str(number) / ARRIVED_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def _tell_arrivals(study: Any, spec: StudySpec, defaults: dict[str, Any]) -> None:
    """Tells the RUNNING trials whose result reached a dead daemon (see `_journal_arrival`)."""
    import optuna

    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        path = spec.study_dir / "trials" / str(frozen.number) / ARRIVED_FILE
        try:
            data = json.loads(path.read_text())
            result = TrialResult(**data)
        except (OSError, ValueError, TypeError):
            continue
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if config_key(result.config) == config_key(defaults):
            trial.set_user_attr("baseline", True)
        tell_result(study, trial, result, spec)
        path.unlink(missing_ok=True)
        logging.getLogger("autotune").info("trial %d: told its result, which had arrived before a stop", result.number)


def _requeued_first(study: Any, space: SearchSpace, requeued: list[dict[str, Any]]) -> None:
    """Moves configurations cut short (interrupted by a dead daemon, cancelled by a stop) to
    the head of the queue, the defaults first: they were asked before everything still
    queued, and the defaults are the baseline every later measurement is judged against (the
    slow-trial cap, the sweep, finalize's pairing). Optuna pops waiting trials by number, so
    the waiting trials' `fixed_params` (a storage system attribute) are reassigned in order."""
    import optuna

    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    params = [dict(t.system_attrs.get("fixed_params", t.params)) for t in waiting]
    defaults_key = config_key(space.default_config())
    first_keys = {config_key(space.complete(p)) for p in requeued}

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        key = config_key(space.complete(item[1]))
        return (0 if key == defaults_key and key in first_keys else 1 if key in first_keys else 2, item[0])

    ordered = [p for _, p in sorted(enumerate(params), key=rank)]
    if ordered == params:
        return
    storage = study._storage  # noqa: SLF001 - the public storage API, reached through the study
    for trial, fixed in zip(waiting, ordered, strict=True):
        storage.set_trial_system_attr(trial._trial_id, "fixed_params", fixed)


def _summary_from_attrs(number: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
    details = attrs.get("details", {})
    measurements = {k: attrs[k] for k in FLAT_MEASUREMENTS if k in attrs} | details.get("measurement", {})
    return {
        "number": number,
        "measurements": measurements | {"batch_size": attrs.get("batch_size", 1)},
        "accuracy": {k: attrs[k] for k in FLAT_ACCURACY if k in attrs}
        | {"outputs": details.get("errors_per_output", {})},
    }


def _outcome(config: dict[str, Any], attrs: Mapping[str, Any]) -> Outcome:
    feasible = all(c <= 0 for c in attrs.get("constraints", [1.0]))
    error = float(attrs.get("normalized_error", math.inf))
    return Outcome(config, float(attrs.get("throughput", 0.0)), error, feasible)


def _result_outcome(result: TrialResult) -> Outcome:
    error = float(result.accuracy.get("normalized_error", math.inf)) if result.accuracy else math.inf
    return Outcome(
        dict(result.config), result.throughput if result.state == "complete" else 0.0, error, result.feasible
    )


def count_trials(study: Any) -> dict[str, int]:
    import optuna

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
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    skip = [k for k in NOT_COUNTED if not (build_only and k == "shared_measurement_with_trial")]
    return frozen.state in finished and not any(key in frozen.user_attrs for key in skip)


def finished_count(study: Any) -> int:
    """Trials that count toward `--trials` (see `counts_toward_goal`)."""
    build_only = bool(study.user_attrs.get("build_only"))
    return sum(1 for t in study.get_trials(deepcopy=False) if counts_toward_goal(t, build_only=build_only))


def run_study(
    spec: StudySpec,
    executor: Executor,
    *,
    on_result: Callable[[TrialResult, Any], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    references: dict[int, dict[str, np.ndarray]] | None = None,
    elapsed_before_s: float = 0.0,
    grace_s: float = 60.0,
    on_started: Callable[[], None] | None = None,
) -> Any:
    """Runs the ask/submit/tell loop until the trial count or the budget is reached.

    Args:
        spec (StudySpec): the validated study.
        executor (Executor): where trials run.
        on_result (Callable | None): called after each tell with (result, study). Default: None.
        should_stop (Callable[[], bool]): polled between trials; True stops asking. Default: never.
        references (dict | None): precomputed FP32 references. Default: computed here.
        elapsed_before_s (float): budget already spent by earlier runs of this study. Default: 0.
        grace_s (float): once the budget is spent, in-flight trials get this long to finish
            before they are cancelled (failed with the reason). Default: 60.
        on_started (Callable | None): called once, after the first trials are dispatched (or
            nothing was left to ask). Default: None.

    Returns:
        The Optuna study.
    """
    import optuna

    spec.study_dir.mkdir(parents=True, exist_ok=True)
    (spec.study_dir / "trials").mkdir(exist_ok=True)
    spec = replace(spec, target_options=replace(spec.target_options, cache_dir=spec.study_dir.resolve()))
    searched = spec.space  # what the user asked for; inert passes are dropped below
    spec, dropped = drop_inert_passes(spec)
    study = open_study(spec, create=True)
    for key, value in {**study_attrs(spec), "space_sha256": space_sha256(searched)}.items():
        study.set_user_attr(key, value)
    study.set_user_attr("dropped_knobs", dropped)
    seed_queue(study, spec)
    budget = None if spec.budget_s is None else max(spec.budget_s - elapsed_before_s, 0.0)
    run = StudyRun(started=time.monotonic(), budget_s=budget)
    recover_state(study, run, spec.space, spec)
    defaults = spec.space.default_config()  # recover_state gave the rules these too
    run.rules.fixed = [Rule(dict(knobs), f"listed under avoid: in {spec.space.source}") for knobs in spec.avoid]
    refs = references if references is not None else compute_references(spec)
    warnings = weak_reference_warnings(refs, spec.tolerance)
    if warnings:
        study.set_user_attr("warnings", warnings)
    space_size = spec.space.size() if _enumerable(spec.space) else math.inf
    defaults_key = config_key(defaults)

    def asking() -> bool:
        return (
            not run.out_of_time()
            and not run.stopping
            and (spec.n_trials is None or run.done + len(run.pending) < spec.n_trials)
            and len(run.keys) < space_size
            and run.repeats < MAX_REPEATS
        )

    def nothing_new() -> None:
        """The last ask repeated or was ruled out: after a few, steer the sampler to a
        configuration never measured and not ruled out (it may keep proposing the same)."""
        run.repeats += 1
        if run.repeats % REPEATS_BEFORE_FALLBACK == 0:
            fresh = unmeasured_config(
                spec.space, set(run.keys), lambda c: run.rules.ruled_out(c) is None, seed=spec.seed + run.repeats
            )
            if fresh is None:
                run.repeats = MAX_REPEATS  # the reachable space is exhausted
            else:
                study.enqueue_trial(fresh, skip_if_exists=False)

    def fill() -> None:
        """Asks and submits until every worker is busy (or nothing more is to be asked)."""
        maybe_control()
        while run.busy() < executor.capacity and asking():
            trial = study.ask()
            config = spec.space.sample(trial)
            key = config_key(config)
            if key in run.keys:
                _tell_duplicate(study, trial, run.keys[key])
                sweep_told(config, None)  # its original's outcome is already in (or will not be)
                nothing_new()
                continue
            rule = run.rules.ruled_out(config)
            run.keys[key] = trial.number
            if rule is not None:
                _tell_ruled_out(study, trial, rule)
                sweep_told(config, None)
                nothing_new()
                continue
            run.repeats = 0
            run.pending[trial.number] = trial
            executor.submit(_request(spec, trial.number, config, refs, run))

    def maybe_control() -> None:
        """Re-measures the defaults after CONTROL_FIRST counted trials (trial 0 may have run
        cold) and every CONTROL_EVERY after, so that a machine that drifts (thermal, a
        neighbour) shows in the report instead of in the ranking."""
        due = CONTROL_FIRST if run.controls_sent == 0 else max(run.controls_sent * CONTROL_EVERY, run.last_control + 1)
        if spec.target_options.build_only or run.reference_latency_s <= 0 or run.controls or run.done < due:
            return
        if run.stopping or run.out_of_time() or run.busy() >= executor.capacity:
            return
        run.controls_sent += 1
        run.last_control = run.done
        number = -run.controls_sent
        request = _request(spec, number, dict(defaults), refs, run)
        request = replace(
            request,
            workdir=(spec.study_dir / "controls" / str(run.controls_sent)).resolve(),
            shared_measurements={},
            stop_rule=spec.stop_rule,
        )
        run.controls[number] = request
        executor.submit(request)

    def record_control(result: TrialResult) -> None:
        run.controls.pop(result.number, None)
        shutil.rmtree(spec.study_dir / "controls" / str(-result.number), ignore_errors=True)
        if not result.measurements or run.reference_latency_s <= 0:
            return
        per_sample_s = result.measurements["latency_ms_p50"] / 1e3 / max(result.batch_size, 1)
        run.drift_ratio = per_sample_s / (run.trial0_latency_s or run.reference_latency_s)
        # The defaults' best measurement is the baseline of the slow-trial cap and the sweep.
        run.reference_latency_s = min(run.reference_latency_s, per_sample_s)
        if run.default is not None and result.throughput > run.default.throughput:
            run.default = replace(run.default, throughput=result.throughput)
        drift = list(study.user_attrs.get("drift", []))
        drift.append(
            {"after_trials": run.done, "ms_per_sample": per_sample_s * 1e3, "ratio_to_baseline": run.drift_ratio}
        )
        study.set_user_attr("drift", drift)

    def learn_in_memory(result: TrialResult) -> None:
        """What a result teaches before the next ask (no storage writes): the baseline and the
        failure rules, so an asynchronous worker's next trial already obeys a new rule."""
        if config_key(result.config) == defaults_key and result.measurements and not run.reference_latency_s:
            run.reference_latency_s = result.measurements["latency_ms_p50"] / 1e3 / result.batch_size
            run.trial0_latency_s = run.reference_latency_s
            run.default = _result_outcome(result)
        if result.state == "complete":
            if slow_vs_baseline(result) <= NEARLY_TOO_SLOW:
                run.rules.record_success(result.config)
        elif result.state in ("failed", "pruned"):
            before = {r.reason for r in run.rules.enforced()}
            rule = run.rules.record_failure(result.number, result.config, result.reason)
            if rule is not None and rule.enforced and rule.reason not in before:
                logging.getLogger("autotune").info("new rule: %s", rule.describe())

    def slow_vs_baseline(result: TrialResult) -> float:
        if not result.measurements or run.reference_latency_s <= 0:
            return 0.0
        return result.measurements["latency_ms_p50"] / 1e3 / max(result.batch_size, 1) / run.reference_latency_s

    def learn(trial: Any, result: TrialResult) -> None:
        """What a told result teaches that is stored: rules, the sweep's progress."""
        rules = [r.as_dict() for r in run.rules.rules()]
        if rules != study.user_attrs.get("rules", []):
            study.set_user_attr("rules", rules)
        sweep_told(result.config, _result_outcome(result))

    def sweep_told(config: dict[str, Any], outcome: Outcome | None) -> None:
        """Records an outcome one knob away from the defaults (a sweep trial, or a known-good
        recipe that is one: CUDA graph alone); None when a sweep configuration repeated or was
        ruled out. Once every sweep configuration is in, enqueues the winners combined."""
        key = config_key(config)
        if outcome is not None and one_knob(outcome, defaults, spec.space) is not None:
            run.sweep_told.append(outcome)
        if key not in run.sweep_keys:
            return
        run.sweep_keys.discard(key)
        if not run.sweep_keys and run.default is not None and not study.user_attrs.get("sweep_combined"):
            combined = combine_winners(spec.space, run.sweep_told, run.default)
            for winner in combined:
                if config_key(winner) not in run.keys:
                    study.enqueue_trial(winner, skip_if_exists=True)
            study.set_user_attr("sweep_combined", [config_key(c) for c in combined])

    last_elapsed = time.monotonic()
    try:
        while True:
            run.stopping = should_stop() or run.stopping  # polled even while workers are busy
            fill()
            if on_started is not None:
                on_started()
                on_started = None
            if not run.pending and not run.controls:
                break
            if run.budget_s is not None and time.monotonic() - run.started > run.budget_s + grace_s:
                executor.cancel_all(f"budget spent: still running {grace_s:.0f} s after the budget ended")
            results = executor.wait(timeout_s=0.5)
            for control in [r for r in results if r.number in run.controls]:
                record_control(control)
            arrived = [(run.pending.pop(r.number), r) for r in results if r.number in run.pending]
            run.done += sum(1 for _, r in arrived if _counts(r, spec))
            for _, result in arrived:
                learn_in_memory(result)
            # Asynchronous workers get their next trials before the results are written: storage
            # writes overlap with running trials instead of leaving workers idle. (In-process,
            # the sampler sees each result before the next ask.) Only once the results are on
            # disk (`arrived.json`, told on resume should this process die before telling them);
            # where that write fails (a full disk) they are told first.
            if executor.asynchronous and all(_journal_arrival(spec, r) for _, r in arrived):
                fill()
            for trial, result in arrived:
                measured = bool(result.measurements) or spec.target_options.build_only
                if result.state == "complete" and result.digest and result.shared_with is None and measured:
                    run.measured.setdefault(
                        result.digest,
                        {"number": result.number, "measurements": result.measurements, "accuracy": result.accuracy},
                    )
                if config_key(result.config) == defaults_key:
                    trial.set_user_attr("baseline", True)
                if slow_vs_baseline(result) > NEARLY_TOO_SLOW:
                    trial.set_user_attr("slow_vs_baseline", slow_vs_baseline(result))
                if result.state == "failed" and result.reason.startswith(CANCELLED_PREFIXES):
                    trial.set_user_attr("cancelled", True)
                    if run.keys.get(config_key(result.config)) == result.number:
                        del run.keys[config_key(result.config)]  # never measured: may be asked again
                if run.controls_sent and abs(run.drift_ratio - 1.0) > DRIFT_FLAG:
                    trial.set_user_attr("drift_ratio", run.drift_ratio)
                tell_result(study, trial, result, spec)
                _drop_arrival(spec, result.number)
                learn(trial, result)
                if on_result is not None:
                    on_result(result, study)
            if arrived or time.monotonic() - last_elapsed > ELAPSED_EVERY_S:
                # Also while every worker is busy (a long or stuck trial): `status` stays current.
                study.set_user_attr("elapsed_s", elapsed_before_s + time.monotonic() - run.started)
                last_elapsed = time.monotonic()
    except KeyboardInterrupt:
        # Ctrl-C in a foreground run: what was told stays; the trials cut short are failed
        # as interrupted and re-queued, like a dead daemon's, so a resume re-runs them.
        for trial in run.pending.values():
            trial.set_user_attr("reason", "interrupted: Ctrl-C; configuration re-queued")
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, skip_if_exists=False)
        raise
    finally:
        study.set_user_attr("elapsed_s", elapsed_before_s + time.monotonic() - run.started)
    return study


def _counts(result: TrialResult, spec: StudySpec) -> bool:
    """Whether a result counts toward --trials (see `counts_toward_goal`)."""
    if result.state == "failed" and result.reason.startswith(CANCELLED_PREFIXES):
        return False
    return result.shared_with is None or spec.target_options.build_only


def drop_inert_passes(spec: StudySpec) -> tuple[StudySpec, dict[str, str]]:
    """Applies every graph pass of the space to the model once; a pass that rewrites nothing
    leaves the space (it could only repeat the measurement of the configuration without it).

    Returns:
        The spec with those `pass.*` knobs removed, and knob -> why it was dropped.
    """
    import onnx

    from autotune.passes import inert_passes

    names = [k[len(PASS_PREFIX) :] for k in spec.space.names if k.startswith(PASS_PREFIX)]
    if not names:
        return spec, {}
    try:
        inert = inert_passes(onnx.load(str(spec.model.path)), names)
    except Exception as exc:  # noqa: BLE001 - a pass that cannot run on this model is searched as before
        logging.getLogger("autotune").warning("could not pre-apply the graph passes: %s", exc)
        return spec, {}
    space = spec.space
    for name in inert:
        space = space.restrict(PASS_PREFIX + name, [])
    return replace(spec, space=space), {PASS_PREFIX + name: why for name, why in inert.items()}


def _enumerable(space: SearchSpace) -> bool:
    if any(k.type == "float" for k in space.knobs):
        return False
    product = 1
    for knob in space.knobs:
        product *= len(knob.values())
        if product > 20000:
            return False
    return True


def _tell_duplicate(study: Any, trial: Any, original_number: int) -> None:
    """An identical configuration was already measured: copy its outcome, do not re-measure."""
    import optuna

    original = next((t for t in study.get_trials(deepcopy=False) if t.number == original_number), None)
    trial.set_user_attr("duplicate_of", original_number)
    if original is not None and original.state == optuna.trial.TrialState.COMPLETE and original.values:
        for key, value in original.user_attrs.items():
            if key not in ("duplicate_of", "constraints"):
                trial.set_user_attr(key, value)
        names = ["accuracy", "latency_sla"]
        set_constraints(trial, dict(zip(names, original.user_attrs.get("constraints", [1.0]), strict=False)))
        study.tell(trial, list(original.values))
    else:
        state = {optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.PRUNED: "was pruned"}.get(
            original.state if original is not None else None, "is not complete yet"
        )
        trial.set_user_attr("reason", f"duplicate of trial {original_number}, which {state}")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def _tell_ruled_out(study: Any, trial: Any, rule: Rule) -> None:
    """A configuration a failure rule covers: not run, told as pruned with the rule."""
    import optuna

    trial.set_user_attr("ruled_out", True)
    knobs = ", ".join(f"{k}={v}" for k, v in rule.knobs.items())
    trial.set_user_attr("reason", f"ruled out: {knobs} failed as '{rule.reason}' in trials {rule.trials}")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def _request(
    spec: StudySpec, number: int, config: dict[str, Any], refs: dict[int, dict[str, np.ndarray]], run: StudyRun
) -> TrialRequest:
    rule = spec.stop_rule
    if run.reference_latency_s > 0 and number != 0:
        batch = int(config.get("batch_size", 1)) if spec.model.dynamic_batch else 1
        rule = replace(rule, slow_factor=SLOW_FACTOR, reference_latency_s=run.reference_latency_s * batch)
    return TrialRequest(
        number=number,
        config=config,
        model_path=spec.model.path,
        target_name=spec.target_name,
        target_options=spec.target_options,
        input_pool=spec.input_pool,
        calibration_feeds=spec.calibration_feeds or None,
        dynamic_batch=spec.model.dynamic_batch,
        reference_outputs=refs,
        tolerance=spec.tolerance,
        stop_rule=rule,
        workdir=(spec.study_dir / "trials" / str(number)).resolve(),
        shared_measurements=dict(run.measured),
    )


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
    trials_dir = study_dir / "trials"
    if not trials_dir.is_dir():
        return
    for child in trials_dir.iterdir():
        if not child.is_dir() or not child.name.isdigit() or int(child.name) in keep:
            continue
        for item in child.iterdir():
            if item.name == "metrics.json":
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
