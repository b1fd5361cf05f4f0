"""How good is autotune's search? Benchmarks against peers on real models (issue 6).

    python bench/run_all.py [--quick] [--models NAME ...]      (or: make bench [QUICK=1])

For each model, on the ONNX Runtime CPU target, in one run on one machine:

1. ONNX Runtime's default session: the baseline every speedup is quoted against.
2. autotune (TPE) on the full space (search_spaces/onnxruntime.yaml) at a fixed trial budget.
3. Random search (Optuna's RandomSampler) over the same space at the same budget, 5 seeds, and
4. the exhaustive optimum, on an enumerable slice of the space (bench/spaces/onnxruntime_small.yaml):
   every configuration is measured once (a real study), then autotune's and random search's
   studies are run for 5 seeds each through `run_study` itself with an executor that replays
   the exhaustive measurements (a tabular benchmark: both tuners see identical numbers, so the
   comparison isolates search quality from machine noise). Seed 0 of each also runs for real
   (autotune through the Ray executor), which checks the replay and measures overhead.
5. Olive's `OrtSessionParamsTuning` at the same budget (bench/peers.py).

The chosen configurations are then re-measured interleaved (round-robin, per-round ratios to
the default, medians), never compared through each tool's own numbers. Results: bench/RESULTS.md,
bench/results.png and bench/results.json; scratch files in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import models as bench_models  # noqa: E402

FULL_SPACE = ROOT / "search_spaces" / "onnxruntime.yaml"
SMALL_SPACE = BENCH / "spaces" / "onnxruntime_small.yaml"
OUT = BENCH / "out"
SEEDS = (0, 1, 2, 3, 4)
SMALL_BUDGET_FRACTION = 0.30  # goal 1: within 30% of the exhaustive trial count
REACH = 0.95  # goal 1: 95% of the optimum
AA = "_aa"  # remeasure's label for the A/A control (the defaults paired against themselves)

# name -> (export function, --shape flags). The OCR detector's H and W are dynamic: fix them.
MODELS: dict[str, tuple[Any, list[str]]] = {
    "mobilenet_v3_large": (bench_models.mobilenet_v3_large, []),
    "ppocr_v4_det": (bench_models.ppocr_v4_det, ["x:1,3,480,480"]),
    "resnet50": (bench_models.resnet50, []),
    "bert_base": (bench_models.bert_base, []),
    "vit_b_16": (bench_models.vit_b_16, []),
}
TRAINED = {"ppocr_v4_det"}


@dataclass(frozen=True)
class Mode:
    """How much work one run does."""

    name: str
    models: tuple[str, ...]
    full_trials: int  # autotune and Olive budget on the headline row
    max_measure_s: float  # autotune's per-measurement time cap (--max-measure-s)
    rounds: int  # interleaved re-measurement rounds
    round_s: float  # seconds per candidate per round


QUICK = Mode("quick", ("mobilenet_v3_large", "ppocr_v4_det"), full_trials=12, max_measure_s=0.5, rounds=11, round_s=0.2)
FULL = Mode("full", tuple(MODELS), full_trials=30, max_measure_s=1.0, rounds=15, round_s=0.3)


# ---------------------------------------------------------------- studies


def make_spec(
    model: str,
    study: str,
    space: Path,
    trials: int,
    mode: Mode,
    *,
    seed: int = 0,
    sampler: str = "tpe",
    known_good: bool = True,
) -> Any:
    """A StudySpec built exactly as `autotune start` builds one (same flags, same validation)."""
    from autotune.spec import prepare_start, start_args

    export, shapes = MODELS[model]
    args = start_args(
        export(),
        study=study,
        results_dir=OUT / model,
        space=Path(space),
        target="onnxruntime",
        trials=str(trials),
        max_measure_s=str(mode.max_measure_s),
        shape=list(shapes),
    )
    spec, _ = prepare_start(args)
    # Seeds change the sampler only; every study of a model sees the same input pool.
    spec = replace(spec, seed=seed, sampler=sampler)
    if not known_good:
        spec = replace(spec, known_good=[])
    return spec


def trial_time_s(trial: Any) -> float:
    """Seconds spent inside `run_trial` (the `total_s` timing, flat or under `details`)."""
    attrs = trial.user_attrs
    timings = attrs.get("timings_s") or attrs.get("details", {}).get("timings_s") or {}
    return float(timings.get("total_s", 0.0))


@dataclass
class RunRecord:
    """One study run: its trials in order, wall time and time spent inside trials."""

    label: str
    study: Any
    wall_s: float
    inside_trials_s: float
    started_epoch: float

    @property
    def overhead(self) -> float:
        return max(self.wall_s - self.inside_trials_s, 0.0) / self.wall_s if self.wall_s > 0 else math.nan

    def overhead_after_first(self) -> float:
        """Overhead once the first trial is done (for Ray: after the worker imported the trial modules)."""
        trials = [t for t in trial_sequence(self.study) if t.datetime_complete is not None]
        if len(trials) < 2:
            return math.nan
        first = trials[0]
        span = self.wall_s - (first.datetime_complete.timestamp() - self.started_epoch)
        inside = sum(trial_time_s(t) for t in trials[1:] if "duplicate_of" not in t.user_attrs)
        return max(span - inside, 0.0) / span if span > 0 else math.nan


def run(
    spec: Any, executor: Any, refs: dict, label: str, *, keep_models: bool = False, enqueue: list[dict] | None = None
) -> tuple[RunRecord, dict[str, Any]]:
    """Runs one study; returns its record and the TrialResults by configuration key."""
    from autotune.space import config_key
    from autotune.study import open_study, run_study

    shutil.rmtree(spec.study_dir, ignore_errors=True)
    results: dict[str, Any] = {}

    def on_result(result: Any, study: Any) -> None:
        results.setdefault(config_key(result.config), result)
        if not keep_models and result.workdir:  # BERT is 435 MB a copy: keep no trial's model
            for name in ("model.onnx", "outputs.npz"):
                (Path(result.workdir) / name).unlink(missing_ok=True)

    if enqueue:
        spec.study_dir.mkdir(parents=True, exist_ok=True)
        study = open_study(spec, create=True)
        for config in enqueue:
            study.enqueue_trial(config, skip_if_exists=True)
    started_epoch = time.time()
    t0 = time.monotonic()
    study = run_study(spec, executor, on_result=on_result, references=refs)
    wall = time.monotonic() - t0
    # Duplicates carry a copy of the original's attributes (timings included): count each run once.
    inside = sum(trial_time_s(t) for t in study.get_trials() if "duplicate_of" not in t.user_attrs)
    return RunRecord(label, study, wall, inside, started_epoch), results


class ReplayExecutor:
    """An executor that answers each configuration with its exhaustive measurement."""

    capacity = 1
    asynchronous = False  # answers at once: nothing runs while the study loop goes on

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self._done: list[Any] = []

    def submit(self, request: Any) -> None:
        from autotune.space import config_key
        from autotune.trial import TrialResult

        measured = self.table.get(config_key(request.config))
        if measured is None:
            result = TrialResult(
                number=request.number, config=dict(request.config), state="failed", reason="not in the exhaustive table"
            )
        else:
            result = replace(measured, number=request.number, config=dict(request.config), shared_with=None)
        self._done.append(result)

    def wait(self, timeout_s: float) -> list[Any]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)

    def cancel_all(self, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- reading studies


def trial_sequence(study: Any) -> list[Any]:
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def feasible_value(trial: Any, table: dict[str, Any] | None = None) -> float:
    """Throughput of a feasible complete trial (from `table` when given), else 0."""
    import optuna

    from autotune.answer import is_feasible

    if trial.state != optuna.trial.TrialState.COMPLETE or not is_feasible(trial) or not trial.values:
        return 0.0
    if table is not None:
        key = trial.user_attrs.get("config_key")
        measured = table.get(key)
        return float(measured.throughput) if measured is not None and measured.feasible else 0.0
    return float(trial.values[0])


def best_so_far(study: Any, table: dict[str, Any] | None = None) -> list[float]:
    values, best = [], 0.0
    for trial in trial_sequence(study):
        best = max(best, feasible_value(trial, table))
        values.append(best)
    return values


def first_reach(curve: list[float], target: float) -> int | None:
    """Trials (1-based) until the best-so-far reaches `target`, or None."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def wall_to_reach(record: RunRecord, target: float) -> float | None:
    for trial in trial_sequence(record.study):
        if feasible_value(trial) >= target and trial.datetime_complete is not None:
            return trial.datetime_complete.timestamp() - record.started_epoch
    return None


def best_measured(study: Any) -> Any | None:
    from autotune.answer import best_trial

    return best_trial(study)


def best_before(record: RunRecord, seconds: float) -> Any | None:
    """The fastest feasible trial that had completed `seconds` after the study started."""
    best, value = None, 0.0
    for trial in trial_sequence(record.study):
        if trial.datetime_complete is None or trial.datetime_complete.timestamp() - record.started_epoch > seconds:
            continue
        if "duplicate_of" in trial.user_attrs:
            continue
        v = feasible_value(trial)
        if v > value:
            best, value = trial, v
    return best


# ---------------------------------------------------------------- interleaved re-measurement


def remeasure(
    spec: Any, refs: dict, candidates: dict[str, tuple[Path, dict]], mode: Mode, extra_pairs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Measures every candidate against "default" by `autotune.measure.paired_speedup`, the
    procedure finalize uses: per pair, adjacent order-alternating blocks, each warmed up on its
    own session and at least `round_s` long; a round's ratio is of the two blocks' 10th-percentile
    per-sample times, and a speedup is the median ratio over rounds (IQR given). Pairs are
    (default, candidate) for every candidate, `extra_pairs` (direct comparisons), and the A/A
    control: the defaults against a second session of themselves (`_aa`), the noise floor that a
    speedup's IQR must clear. Identical configurations share one session. Also verifies each
    candidate's outputs against the FP32 reference.
    """
    from autotune.measure import paired_speedup
    from autotune.model import feeds_at_batch
    from autotune.space import config_key
    from autotune.targets import target_class
    from autotune.verify import compare_outputs

    target = target_class("onnxruntime")(spec.target_options)
    workdir = spec.study_dir.parent / "remeasure"
    shutil.rmtree(workdir, ignore_errors=True)
    unique: dict[str, str] = {}
    alias: dict[str, str] = {}
    normalized: dict[str, tuple[Path, dict]] = {}
    for label, (path, config) in candidates.items():
        config = spec.space.complete(config)
        transformed = config.get("precision", "fp32") != "fp32" or any(
            v for k, v in config.items() if k.startswith("pass.")
        )
        path = path if transformed else spec.model.path
        normalized[label] = (path, config)
        alias[label] = unique.setdefault(f"{path}|{config_key(config)}", label)
    measured = [label for label in candidates if alias[label] == label]
    if "default" in measured:
        measured.append(AA)  # a second session of the defaults: the A/A control
        normalized[AA] = normalized["default"]
    sessions, timers, batches, accuracy = {}, {}, {}, {}
    try:
        for label in measured:
            path, config = normalized[label]
            batch = int(config.get("batch_size", 1)) if spec.model.dynamic_batch else 1
            feeds = feeds_at_batch(spec.input_pool, batch, spec.model.dynamic_batch)
            (workdir / label).mkdir(parents=True, exist_ok=True)
            built = target.build(path, config, workdir / label, {k: list(v.shape) for k, v in feeds.items()})
            session = target.open(built, config)
            sessions[label] = session
            report = compare_outputs(session.infer(feeds), refs[batch], spec.tolerance).as_dict()
            accuracy[label] = {k: report.get(k) for k in ("passed", "normalized_error", "max_abs_error")}
            timers[label] = session.timer(feeds)
            batches[label] = batch

        pairs = [("default", m) for m in measured if m != "default"]
        pairs += [(alias[a], alias[b]) for a, b in extra_pairs if a in alias and b in alias and alias[a] != alias[b]]
        pairs = list(dict.fromkeys(pairs))
        results: dict[tuple[str, str], Any] = {}
        per_sample: dict[str, list[float]] = {label: [] for label in measured}
        for a, b in pairs:
            r = paired_speedup(
                timers[a], timers[b], batch_a=batches[a], batch_b=batches[b], rounds=mode.rounds, round_s=mode.round_s
            )
            results[(a, b)] = r
            per_sample[a].append(r.a_ms_per_sample_median / 1e3)
            per_sample[b].append(r.b_ms_per_sample_median / 1e3)

        def stats(a: str, b: str) -> dict[str, float]:
            if a == b:
                return {"speedup": 1.0, "speedup_p25": 1.0, "speedup_p75": 1.0}
            r = results[(a, b)]
            return {"speedup": r.speedup_median, "speedup_p25": r.speedup_p25, "speedup_p75": r.speedup_p75}

        out: dict[str, Any] = {}
        for label in [*candidates, *([AA] if AA in measured else [])]:
            m = alias.get(label, label)
            out[label] = {
                "measured_as": m,
                "config": normalized[label][1],
                "ms_per_sample": float(np.median(per_sample[m])) * 1e3,
                "throughput": 1.0 / float(np.median(per_sample[m])),
                **stats("default", m),
                **accuracy[m],
            }
        out["_direct"] = {f"{b}/{a}": stats(alias[a], alias[b]) for a, b in extra_pairs if a in alias and b in alias}
        return out
    finally:
        for session in sessions.values():
            session.close()
        shutil.rmtree(workdir, ignore_errors=True)


def paired_ratio(result: dict[str, Any], a: str, b: str) -> float:
    """Throughput of `a` over `b`, measured in adjacent blocks (a direct pair)."""
    direct = result.get("_direct", {}).get(f"{a}/{b}")
    return direct["speedup"] if direct else result[a]["speedup"] / result[b]["speedup"]


# ---------------------------------------------------------------- one model


def bench_model(model: str, mode: Mode, ray_executor: Any, log: Any) -> dict[str, Any]:
    from peers import run_olive

    from autotune.space import config_key
    from autotune.study import compute_references
    from autotune.workers import InProcessExecutor

    out: dict[str, Any] = {"model": model, "trained": model in TRAINED}
    shutil.rmtree(OUT / model, ignore_errors=True)

    # FP32 references at every batch size either space may pick, computed once.
    full_spec = make_spec(model, "full-autotune", FULL_SPACE, mode.full_trials, mode)
    refs = compute_references(full_spec)
    out["input_shapes"] = {k: list(v.shape[1:]) for k, v in full_spec.input_pool.items()}

    # -- exhaustive optimum of the small space (a real study, every configuration once)
    small = make_spec(model, "small-exhaustive", SMALL_SPACE, 1, mode, sampler="random", known_good=False)
    configs = list(small.space.enumerate())
    default = small.space.default_config()
    configs = [default] + [c for c in configs if c != default]
    small = replace(small, n_trials=len(configs))
    log(f"[{model}] exhaustive: {len(configs)} configurations")
    exhaustive, table = run(small, InProcessExecutor(), refs, "exhaustive", enqueue=configs)
    optimum_key = max(table, key=lambda k: table[k].throughput if table[k].feasible else 0.0)
    optimum = table[optimum_key]
    budget = math.floor(SMALL_BUDGET_FRACTION * len(configs))
    out["small"] = {
        "space_size": len(configs),
        "budget": budget,
        "exhaustive_wall_s": exhaustive.wall_s,
        "exhaustive_overhead": exhaustive.overhead,
        "optimum_throughput": optimum.throughput,
        "optimum_config": optimum.config,
        "default_throughput": table[config_key(default)].throughput,
        "feasible_configs": sum(1 for r in table.values() if r.feasible),
    }

    # -- autotune and random search on the small space: 5 seeds replayed, seed 0 also real
    curves: dict[str, list[list[float]]] = {"autotune": [], "random": []}
    finals: dict[str, list[float]] = {"autotune": [], "random": []}
    reach: dict[str, list[int | None]] = {"autotune": [], "random": []}
    for seed in SEEDS:
        for tuner, sampler in (("autotune", "tpe"), ("random", "random")):
            spec = make_spec(
                model,
                f"replay-{tuner}-{seed}",
                SMALL_SPACE,
                budget,
                mode,
                seed=seed,
                sampler=sampler,
                known_good=tuner == "autotune",
            )
            record, _ = run(spec, ReplayExecutor(table), refs, f"replay {tuner} {seed}")
            curve = [v / optimum.throughput for v in best_so_far(record.study, table)][:budget]
            curves[tuner].append(curve)
            finals[tuner].append(curve[-1] if curve else 0.0)
            reach[tuner].append(first_reach(curve, REACH))
            shutil.rmtree(spec.study_dir, ignore_errors=True)
    out["small"]["replay"] = {"curves": curves, "final_ratio": finals, "trials_to_95": reach}
    log(
        f"[{model}] replay: autotune median {np.median(finals['autotune']):.3f}, "
        f"random median {np.median(finals['random']):.3f} of the optimum"
    )

    real: dict[str, Any] = {}
    for tuner, sampler, executor in (("autotune", "tpe", ray_executor), ("random", "random", InProcessExecutor())):
        spec = make_spec(
            model, f"small-{tuner}-0", SMALL_SPACE, budget, mode, sampler=sampler, known_good=tuner == "autotune"
        )
        record, _ = run(spec, executor, refs, f"small {tuner} 0")
        best = best_measured(record.study)
        own = best_so_far(record.study)
        real[tuner] = {
            "executor": "ray" if executor is ray_executor else "in-process",
            "wall_s": record.wall_s,
            "overhead": record.overhead,
            "overhead_after_first": record.overhead_after_first(),
            "best_config": dict(best.params) if best else None,
            "ratio_by_table": (table[config_key(best.params)].throughput / optimum.throughput) if best else 0.0,
            "trials_to_95_own": first_reach(own, REACH * own[-1]) if own and own[-1] > 0 else None,
        }
    out["small"]["real"] = real
    log(
        f"[{model}] real seed 0: autotune (Ray) {real['autotune']['wall_s']:.0f} s, overhead "
        f"{100 * real['autotune']['overhead']:.1f}%; random {real['random']['wall_s']:.0f} s"
    )

    # -- headline: autotune on the full space, in-process
    log(f"[{model}] autotune, full space, {mode.full_trials} trials")
    full, _ = run(full_spec, InProcessExecutor(), refs, "full autotune", keep_models=True)
    best = best_measured(full.study)
    own = best_so_far(full.study)
    top = own[-1] if own else 0.0
    out["full"] = {
        "trials": len(full.study.get_trials()),
        "wall_s": full.wall_s,
        "overhead": full.overhead,
        "overhead_after_first": full.overhead_after_first(),
        "best_number": best.number if best else None,
        "best_config": dict(best.params) if best else None,
        "trials_to_95": first_reach(own, REACH * top) if top else None,
        "wall_to_95_s": wall_to_reach(full, REACH * top) if top else None,
        "failed": sum(1 for t in full.study.get_trials() if t.state.name == "FAIL"),
    }

    # -- Olive at the same budget, batch 1 (it cannot search the batch size)
    log(f"[{model}] Olive OrtSessionParamsTuning, {mode.full_trials} samples")
    from autotune.model import feeds_at_batch

    feeds = feeds_at_batch(full_spec.input_pool, 1, full_spec.model.dynamic_batch)
    try:
        olive = run_olive(
            full_spec.model.path,
            feeds,
            max_samples=mode.full_trials,
            workdir=OUT / model / "olive",
            cpus=os.cpu_count() or 1,
        )
    except Exception as exc:  # noqa: BLE001 - the peer failing is a result too
        olive = {"config": None, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "wall_s": None}
    out["olive"] = {k: v for k, v in olive.items() if k != "inference_settings"}
    out["olive"]["session_options"] = (olive.get("inference_settings") or {}).get("session_options")

    # -- interleaved re-measurement of every tool's choice
    model_path = full_spec.model.path
    candidates: dict[str, tuple[Path, dict]] = {"default": (model_path, full_spec.space.default_config())}
    if best is not None:
        candidates["autotune"] = (full_spec.study_dir / "trials" / str(best.number) / "model.onnx", dict(best.params))
        # Like with like: the defaults at the batch autotune's best runs at (issue 10).
        batch = dict(best.params).get("batch_size", 1)
        candidates["default_same_batch"] = (model_path, {**full_spec.space.default_config(), "batch_size": batch})
    batch1 = [t for t in full.study.get_trials() if t.user_attrs.get("batch_size", 1) == 1]
    best1 = max(batch1, key=feasible_value, default=None)
    if best1 is not None and feasible_value(best1) > 0:
        candidates["autotune_batch1"] = (
            full_spec.study_dir / "trials" / str(best1.number) / "model.onnx",
            dict(best1.params),
        )
    if olive.get("config"):
        candidates["olive"] = (model_path, olive["config"])
        at_olive_wall = best_before(full, float(olive["wall_s"]))
        if at_olive_wall is not None:
            candidates["autotune_at_olive_wall"] = (
                full_spec.study_dir / "trials" / str(at_olive_wall.number) / "model.onnx",
                dict(at_olive_wall.params),
            )
    candidates["exhaustive_optimum"] = (model_path, optimum.config)
    for tuner in ("autotune", "random"):
        if real[tuner]["best_config"]:
            candidates[f"small_{tuner}"] = (model_path, real[tuner]["best_config"])
    for label, (path, _) in list(candidates.items()):
        if not path.exists():  # a trial whose transformed model is gone: rebuild it from the config
            from autotune.trial import calibration_feeds, transform_model

            path.parent.mkdir(parents=True, exist_ok=True)
            transform_model(
                model_path,
                candidates[label][1],
                path,
                calibration_feeds=calibration_feeds(full_spec.input_pool, True),
                scheme="asymmetric_u8",
            )
    log(f"[{model}] interleaved re-measurement of {len(candidates)} candidates")
    direct = [
        ("olive", "autotune"),
        ("olive", "autotune_batch1"),
        ("olive", "autotune_at_olive_wall"),
        ("default_same_batch", "autotune"),
    ]
    out["remeasure"] = remeasure(full_spec, refs, candidates, mode, direct)
    shutil.rmtree(OUT / model, ignore_errors=True)
    return out


# ---------------------------------------------------------------- report


def versions() -> dict[str, str]:
    from autotune.export import library_versions

    return library_versions(("olive-ai", "torch", "torchvision", "transformers", "rapidocr-onnxruntime", "onnxscript"))


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def pct(x: Any) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def speed(r: dict | None) -> str:
    if not r:
        return "–"
    return f"{r['speedup']:.2f}× ({r['speedup_p25']:.2f}–{r['speedup_p75']:.2f})"


def err(r: dict | None) -> str:
    if not r:
        return "–"
    flag = "" if r.get("passed") else " ✗"
    return f"{fmt(r.get('normalized_error'), 2)}{flag}"


def median_or_none(values: list[int | None]) -> str:
    hits = [v for v in values if v is not None]
    missing = len(values) - len(hits)
    if not hits:
        return f"never ({missing}/{len(values)})"
    padded = sorted(v if v is not None else math.inf for v in values)
    med = padded[len(padded) // 2]
    text = "never" if not math.isfinite(med) else f"{med:g}"
    return text + (f" ({missing} of {len(values)} never)" if missing else "")


def goals(results: list[dict]) -> dict[str, Any]:
    g1_rows, g1b_rows, g2_rows, overheads_inproc, overheads_ray = [], [], [], [], []
    for r in results:
        rep = r["small"]["replay"]
        med_a = float(np.median(rep["final_ratio"]["autotune"]))
        med_r = float(np.median(rep["final_ratio"]["random"]))
        g1_rows.append((r["model"], med_a, med_a >= REACH))
        g1b_rows.append((r["model"], med_a, med_r, med_a > med_r, med_a == med_r))
        m = r["remeasure"]
        if "olive" in m and "autotune" in m:
            ratio = paired_ratio(m, "autotune", "olive")
            err_a = m["autotune"].get("normalized_error") or 0.0
            err_o = m["olive"].get("normalized_error") or 0.0
            # Equal accuracy: autotune passes and its error is at most Olive's plus float-rounding noise
            # (1% of the tolerance; session options alone change only the order of float operations).
            accurate = bool(m["autotune"].get("passed")) and err_a <= err_o + 0.01
            g2_rows.append((r["model"], ratio, err_a, err_o, ratio >= 1.0 and accurate))
        else:
            g2_rows.append((r["model"], None, None, None, False))
        overheads_inproc += [r["full"]["overhead"], r["small"]["real"]["random"]["overhead"]]
        overheads_ray.append(r["small"]["real"]["autotune"]["overhead"])
    wins = sum(1 for row in g1b_rows if row[3])
    return {
        "g1_reach": g1_rows,
        "g1_reach_met": all(row[2] for row in g1_rows),
        "g1_random": g1b_rows,
        "g1_random_met": wins > len(g1b_rows) / 2,
        "g2": g2_rows,
        "g2_met": all(row[4] for row in g2_rows),
        "overhead_inproc_max": max(overheads_inproc),
        "overhead_ray_max": max(overheads_ray),
        "g3_met": max(overheads_inproc + overheads_ray) < 0.05,
    }


def write_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels = [
        ("autotune", "autotune (full space)"),
        ("autotune_batch1", "autotune, batch 1 only"),
        ("olive", "Olive (batch 1)"),
        ("exhaustive_optimum", "exhaustive optimum (small space)"),
        ("small_random", "random search (small space, seed 0)"),
    ]
    x = np.arange(len(results))
    width = 0.8 / len(labels)
    for i, (key, name) in enumerate(labels):
        values = [r["remeasure"].get(key, {}).get("speedup", 0.0) for r in results]
        lo = [v - r["remeasure"].get(key, {}).get("speedup_p25", v) for v, r in zip(values, results, strict=True)]
        hi = [r["remeasure"].get(key, {}).get("speedup_p75", v) - v for v, r in zip(values, results, strict=True)]
        left.bar(x + (i - len(labels) / 2 + 0.5) * width, values, width, yerr=[lo, hi], label=name, capsize=2)
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_xticks(x, [r["model"] for r in results], rotation=15)
    left.set_ylabel("throughput / ORT default (paired, median, IQR)")
    left.set_title("Best configuration found, re-measured interleaved")
    left.legend(fontsize=8)
    for r in results:
        rep = r["small"]["replay"]["curves"]
        for tuner, style in (("autotune", "-"), ("random", "--")):
            curves = np.asarray(rep[tuner])
            if curves.size:
                right.plot(
                    np.arange(1, curves.shape[1] + 1), np.median(curves, axis=0), style, label=f"{r['model']} {tuner}"
                )
    right.axhline(REACH, color="grey", linewidth=0.8, linestyle=":")
    right.set_xlabel("trials")
    right.set_ylabel("best so far / exhaustive optimum (median of 5 seeds)")
    right.set_title("Search efficiency on the enumerable space (48 configs)")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(results: list[dict], mode: Mode, meta: dict[str, Any], path: Path) -> str:
    g = goals(results)
    lines = [
        "# Benchmarks: is autotune worth its budget?",
        "",
        f"Generated by `{meta['command']}` ({mode.name} mode) on {meta['date']}, in {meta['total_s'] / 60:.1f} min.",
        "Regenerate with `make bench` (full) or `make bench QUICK=1`; raw numbers in `bench/results.json`.",
        "",
        f"**Machine**: {meta['host']['cpu']}, {meta['host']['cpu_count']} cores, {meta['host']['os']}, "
        f"Python {platform.python_version()}; a shared, noisy machine (other jobs ran at the same time), so every "
        "speedup below is a median of per-round ratios from an interleaved re-measurement, with the interquartile "
        "range in parentheses.",
        "",
        "**Versions**: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        f"**Settings**: ONNX Runtime CPU target; autotune `--max-measure-s {mode.max_measure_s}`, tolerance "
        "atol = rtol = 1e-2 against the FP32 reference; full-space budget "
        f"{mode.full_trials} trials for autotune and {mode.full_trials} search points for Olive; small space "
        f"{results[0]['small']['space_size'] if results else 48} configurations, budget "
        f"{results[0]['small']['budget'] if results else 14} trials; seeds {list(SEEDS)}; "
        f"{mode.rounds} interleaved rounds of ~{mode.round_s} s per candidate.",
        "",
        "## Headline: autotune vs ONNX Runtime's default session vs Olive (same budget)",
        "",
        "| model | default samples/s | autotune best | × default | × defaults at its batch | A/A (noise floor) | error "
        "| trials (wall) | to 95%: trials (wall) | overhead | autotune batch 1 | Olive | Olive error | Olive wall (points) "
        "| autotune ÷ Olive | autotune @ Olive's wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, f, o = r["remeasure"], r["full"], r["olive"]
        d = m["default"]
        a = m.get("autotune")
        name = r["model"] + (" (trained)" if r["trained"] else "")
        ratio = fmt(paired_ratio(m, "autotune", "olive"), 3) + "×" if "olive" in m and a else "–"
        lines.append(
            f"| {name} | {d['throughput']:.3g} | {fmt(a['throughput'] if a else None)} | {speed(a)} "
            f"| {speed(m['_direct'].get('autotune/default_same_batch'))} | {speed(m.get(AA))} | {err(a)} "
            f"| {f['trials']} ({f['wall_s']:.0f} s) | {fmt(f['trials_to_95'])} ({fmt(f['wall_to_95_s'], 2)} s) "
            f"| {pct(f['overhead'])} ({pct(f['overhead_after_first'])}) | {speed(m.get('autotune_batch1'))} | {speed(m.get('olive'))} "
            f"| {err(m.get('olive'))} | {fmt(o.get('wall_s'), 3)} s ({fmt(o.get('samples'))}) | {ratio} | {speed(m.get('autotune_at_olive_wall'))} |"
        )
    lines += [
        "",
        "*default samples/s* and *autotune best* are from the interleaved re-measurement (samples per second at the "
        "median per-sample latency). *× default* and the other speedups: median of per-round ratios of adjacent, "
        "order-alternating blocks against the default session at batch 1 (IQR in parentheses); *× defaults at its "
        "batch*: autotune's best against the defaults at the same batch size (like with like: a larger batch alone "
        "raises throughput); *A/A*: the defaults paired against a second session of themselves by the same procedure, "
        "the noise floor (a speedup whose IQR overlaps it is no measurable difference); *autotune ÷ Olive* is a direct "
        "pair of the same kind. *error*: autotune's normalized error against the FP32 reference (≤ 1 passes; "
        "✗ marks a failure). *to 95%*: trials and wall time until autotune's best-so-far reached 95% of its final "
        "best. *overhead*: (study wall − Σ trial `total_s`) / study wall, in-process executor; in parentheses, the same once the first trial is done. *autotune batch 1*: "
        "autotune's best batch-1 trial, the like-for-like comparison with Olive, which cannot search the batch size. "
        "*autotune @ Olive's wall*: the best autotune had found when Olive's whole run had taken (same wall-time "
        "budget).",
        "",
        "## Search efficiency: autotune vs random search vs the exhaustive optimum (enumerable space)",
        "",
        "| model | feasible / configs | exhaustive optimum × default | exhaustive wall | autotune @ budget "
        "(median, min–max of 5) | random @ budget | autotune trials to 95% | random trials to 95% "
        "| seed-0 real: autotune (Ray) | seed-0 real: random | Ray overhead | in-process overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["small"]
        rep = s["replay"]
        a, rnd = rep["final_ratio"]["autotune"], rep["final_ratio"]["random"]
        real = s["real"]
        lines.append(
            f"| {r['model']} | {s['feasible_configs']} / {s['space_size']} | {speed(r['remeasure'].get('exhaustive_optimum'))} "
            f"| {s['exhaustive_wall_s']:.0f} s | {np.median(a):.3f} ({min(a):.3f}–{max(a):.3f}) "
            f"| {np.median(rnd):.3f} ({min(rnd):.3f}–{max(rnd):.3f}) "
            f"| {median_or_none(rep['trials_to_95']['autotune'])} | {median_or_none(rep['trials_to_95']['random'])} "
            f"| {real['autotune']['ratio_by_table']:.3f} ({real['autotune']['wall_s']:.0f} s) "
            f"| {real['random']['ratio_by_table']:.3f} ({real['random']['wall_s']:.0f} s) "
            f"| {pct(real['autotune']['overhead'])} ({pct(real['autotune']['overhead_after_first'])}) "
            f"| {pct(real['random']['overhead'])} ({pct(real['random']['overhead_after_first'])}) |"
        )
    lines += [
        "",
        f"Ratios are the chosen configuration's exhaustive-table throughput over the optimum's, after {results[0]['small']['budget'] if results else 14} "
        "trials (30% of the space). The 5 seeds per tuner run through `autotune.study.run_study` itself (ask, "
        "known-good queue, de-duplication, constraints) with an executor that replays the exhaustive measurements, so "
        "both tuners see identical numbers and the difference is search quality, not machine noise. The seed-0 "
        "columns ran for real (autotune through `RayExecutor(1)`, random search in-process) and are scored the same "
        "way. autotune's queue starts with the defaults and the space's known-good configuration; random search's "
        "starts with the defaults only. Overheads in parentheses: after the first trial (for Ray, the first trial "
        "also imports ONNX Runtime, the quantizer and Polygraphy in it).",
        "",
        "![results](results.png)",
        "",
        "## Goals",
        "",
    ]
    reach_rows = ", ".join(f"{m} {v:.3f}" for m, v, _ in g["g1_reach"])
    lines.append(
        f"1. **autotune ≥ 95% of the exhaustive optimum within 30% of the exhaustive trial count (median of 5 "
        f"seeds)**: {'met' if g['g1_reach_met'] else 'NOT met'} ({reach_rows})."
    )
    rand_rows = ", ".join(f"{m} {a:.3f} vs {b:.3f}{' (tie)' if tie else ''}" for m, a, b, _, tie in g["g1_random"])
    lines.append(
        f"   **Beats random search at equal budget on most models**: {'met' if g['g1_random_met'] else 'NOT met'} "
        f"(autotune vs random, median ratio to the optimum: {rand_rows})."
    )
    olive_rows = ", ".join(
        f"{m} {fmt(ratio, 3)}× (error {fmt(ea, 2)} vs {fmt(eo, 2)})" for m, ratio, ea, eo, _ in g["g2"]
    )
    lines.append(
        f"2. **autotune at least as fast as Olive at equal budget, at equal or better accuracy, on every "
        f"model**: {'met' if g['g2_met'] else 'NOT met'} (autotune ÷ Olive, paired: {olive_rows})."
    )
    lines.append(
        f"3. **Orchestration overhead under 5% of study wall time**: {'met' if g['g3_met'] else 'NOT met'} "
        f"(worst in-process {pct(g['overhead_inproc_max'])}, worst Ray {pct(g['overhead_ray_max'])})."
    )
    lines += ["", "## Notes", ""] + [f"- {note}" for note in meta["notes"]] + [""]
    text = "\n".join(lines)
    path.write_text(text)
    return text


NOTES = [
    "Olive usability: `olive tune-session-params -m model.onnx` builds dummy data of shape (1, 1) for the input "
    "named `input` unless `--data_config` is given, so it fails on every model here (images, token ids, dynamic "
    "dims). It is driven by a workflow config (bench/peers.py) that states input names, shapes and dtypes. Olive "
    "0.13 also needs the evaluator's `type` set explicitly (`OnnxEvaluator`): with it absent, the workflow dies "
    "with `AttributeError: 'NoneType' object has no attribute 'lower'` while resolving resources. autotune reads "
    "names, dtypes and dynamic dims from the model and needs nothing but `--shape` for the OCR detector's "
    "dynamic H and W.",
    "Olive 0.13's budget: `sampler_config.max_samples` is ignored by its search strategy (it walks the whole "
    "32-point space); the strategy-level `max_iter` (set to budget − 1, as it checks after each step) is what "
    "holds it to the budget; the *points* column counts the search points it really ran, from its footprints.",
    "Olive's pass searches session options only (threads, execution mode, graph optimization level) at the batch "
    "size of its data (1 here); autotune also searches batch size, graph passes and INT8. The *autotune batch 1* "
    "column is the like-for-like comparison; the *autotune* column is what each tool delivers for throughput.",
    "Olive's error is measured by the same verifier as autotune's (its choice is re-run as an autotune "
    "configuration: same model, same session options).",
    "Random search on the full space is not run: the full space (passes × precision × threads × batch) has "
    "no measurable optimum on this machine's budget, so the tuner-vs-random and tuner-vs-optimum comparisons use the "
    "enumerable space, as the issue allows.",
    "Orchestration overhead counts everything outside `run_trial` (Optuna ask/tell on SQLite, TPE, "
    "de-duplication, for Ray also task dispatch and the forked trial child); Ray's cluster start-up (once per "
    "benchmark) is not in it.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 models, 12-trial budget (under 15 minutes)")
    parser.add_argument("--models", nargs="*", help=f"subset of {', '.join(MODELS)}")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md and the plot from results.json")
    args = parser.parse_args(argv)
    if args.report_only:
        saved = json.loads((BENCH / "results.json").read_text())
        meta = saved["meta"] | {"notes": NOTES}
        mode = QUICK if "QUICK" in meta["command"] or "--quick" in meta["command"] else FULL
        write_plot(saved["results"], BENCH / "results.png")
        print(write_results(saved["results"], mode, meta, BENCH / "RESULTS.md"))
        return 0
    mode = QUICK if args.quick else FULL
    if args.models:
        unknown = [m for m in args.models if m not in MODELS]
        if unknown:
            parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
        mode = replace(mode, models=tuple(args.models))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from autotune.export import host_facts
    from autotune.study import quiet_optuna
    from autotune.workers import RayExecutor

    quiet_optuna()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", flush=True)

    OUT.mkdir(parents=True, exist_ok=True)
    for model in mode.models:  # export (or copy) every model first: no export time inside a study
        MODELS[model][0]()
    ray_started = time.monotonic()
    ray_executor = RayExecutor(1)
    log(f"Ray started in {time.monotonic() - ray_started:.1f} s")
    results = []
    try:
        for model in mode.models:
            results.append(bench_model(model, mode, ray_executor, log))
            (BENCH / "results.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        ray_executor.close()
    command = "make bench" + (" QUICK=1" if args.quick else "")
    if args.models:
        command = f"python bench/run_all.py {'--quick ' if args.quick else ''}--models {' '.join(args.models)}"
    meta = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": host_facts(),
        "versions": versions(),
        "total_s": time.monotonic() - started,
        "notes": NOTES,
    }
    (BENCH / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    write_plot(results, BENCH / "results.png")
    text = write_results(results, mode, meta, BENCH / "RESULTS.md")
    print(text)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
