"""Does autotune's search beat random search on models it was not developed against? (issue 10, CPU)

    .venv/bin/python bench/search_cpu.py [--quick]          (--render: rewrite SEARCH.md from the JSON)

Three trained models with dynamic dims, shipped in the `rapidocr-onnxruntime` wheel (bench/models.py):
the PP-OCRv4 text detector, the PP-OCRv4 recognizer and the PP-OCR direction classifier. For each
model and seed, on the ONNX Runtime CPU target and the full default space
(search_spaces/onnxruntime.yaml), at the same `--trials`:

1. autotune as a user runs it: `autotune start MODEL --foreground ...` (in-process, through
   `autotune.cli.main`): trial 0, the known-good recipes, the one-knob sweep, then TPE; finalize
   picks one answer per batch, paired against the defaults at that batch, judged against the
   study's A/A control.
2. Random search through the same study loop (`StudySpec.sampler="random"`, the same
   de-duplication, failure rules and finalize): trial 0 (the defaults) and then Optuna's
   RandomSampler. No known-good recipes and no sweep: those are part of autotune's method
   (`seed_queue` would enqueue the sweep for any sampler; marking the study seeded stops it).
3. Each study's stored answer is read back (`answers`, `best_trial`, `aa_control`) and its wasted
   records are counted (repeats, ruled out, shared measurements, repeated failures).
4. The two searchers are compared by pairing their answers against each other, interleaved, in
   one process (`autotune.trial.run_paired`, the procedure finalize uses): the batch-1 answers,
   and the study answers (best throughput). Never through each study's own noisy numbers.
5. An A/A row per model: the defaults paired against themselves by the same procedure.

Writes bench/SEARCH.md and bench/search_cpu.json; scratch studies in bench/out/search_cpu/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
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

OUT = BENCH / "out" / "search_cpu"
RESULTS_JSON = BENCH / "search_cpu.json"
SEARCH_MD = BENCH / "SEARCH.md"
TUNERS = ("autotune", "random")


@dataclass(frozen=True)
class Mode:
    """How much work one run does."""

    name: str
    models: tuple[str, ...]
    trials: int  # --trials of every study (counted trials)
    seeds: tuple[int, ...]
    max_measure_s: float  # --max-measure-s of every study
    det_shape: str  # the detector's --shape (its H and W are dynamic)
    pair_rounds: int  # rounds of the cross-searcher and A/A pairs (finalize uses 21)
    limit_min: float | None  # no further (model, seed) is started past this (seed 0 always runs)


QUICK = Mode("quick", ("ppocr_cls", "ppocr_v4_rec", "ppocr_v4_det"), 6, (0,), 0.3, "x:1,3,160,160", 11, None)
FULL = Mode("full", ("ppocr_cls", "ppocr_v4_rec", "ppocr_v4_det"), 16, (0, 1, 2), 0.5, "x:1,3,320,320", 21, 37.0)

# name -> (path of the trained model, --shape)
MODEL_FILES = {
    "ppocr_v4_det": bench_models.ppocr_v4_det,
    "ppocr_v4_rec": bench_models.ppocr_v4_rec,
    "ppocr_cls": bench_models.ppocr_cls,
}
SHAPES = {"ppocr_v4_rec": "x:1,3,48,320", "ppocr_cls": "x:1,3,48,192"}


def shape_of(model: str, mode: Mode) -> str:
    return mode.det_shape if model == "ppocr_v4_det" else SHAPES[model]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- studies


def start_argv(model: str, tuner: str, seed: int, mode: Mode) -> list[str]:
    """`autotune start` arguments of one study (the random study is built from the same ones)."""
    return [
        "start",
        str(MODEL_FILES[model]()),
        "--study",
        f"{tuner}-s{seed}",
        "--results-dir",
        str(OUT / model),
        "--target",
        "onnxruntime",
        "--trials",
        str(mode.trials),
        "--seed",
        str(seed),
        "--shape",
        shape_of(model, mode),
        "--max-measure-s",
        str(mode.max_measure_s),
    ]


def load_study(study_dir: Path, name: str) -> Any:
    import optuna

    from autotune.study import make_storage, storage_url

    return optuna.load_study(study_name=name, storage=make_storage(storage_url(study_dir)))


def run_autotune(argv: list[str]) -> tuple[int, str]:
    """`autotune start --foreground` in this process; returns its exit code and printed output."""
    from autotune.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main([*argv, "--foreground"])
    return code, buffer.getvalue()


def run_random(argv: list[str]) -> None:
    """The same study through `run_study` with Optuna's RandomSampler: trial 0 (the defaults),
    then random configurations; no known-good recipes, no sweep; then `finalize`."""
    from autotune.finalize import finalize
    from autotune.spec import parse_start, prepare_start, write_inputs
    from autotune.study import compute_references, open_study, run_study
    from autotune.workers import InProcessExecutor

    spec, _ = prepare_start(parse_start(argv[1:]))  # the same command line, without `start`
    spec = replace(spec, sampler="random", known_good=[])
    refs = compute_references(spec)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    write_inputs(spec)
    study = open_study(spec, create=True)
    study.enqueue_trial(spec.space.default_config())
    study.set_user_attr("sweep_keys", [])
    study.set_user_attr("seeded", True)  # seed_queue would enqueue autotune's sweep
    study = run_study(spec, InProcessExecutor(), references=refs)
    finalize(study)


# ---------------------------------------------------------------- reading a study back


def summarize_study(study: Any, wall_s: float) -> dict[str, Any]:
    """What finalize stored, and where the study spent records that taught it nothing."""
    import optuna

    from autotune.rules import failure_class
    from autotune.study import finished_count

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    attrs = study.user_attrs
    seen_classes: dict[str, list[int]] = {}
    repeated_failures = []
    rows = []
    for t in trials:
        a = t.user_attrs
        flags = [k for k in ("duplicate_of", "ruled_out", "shared_measurement_with_trial") if k in a]
        reason = str(a.get("reason", ""))
        if t.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED) and not flags:
            cls = failure_class(reason)
            if cls is not None:
                if cls in seen_classes:
                    repeated_failures.append({"trial": t.number, "class": cls, "earlier": list(seen_classes[cls])})
                seen_classes.setdefault(cls, []).append(t.number)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "batch_size": a.get("batch_size"),
                "throughput": a.get("throughput"),
                "ms_per_sample": (a["latency_ms_p50"] / max(int(a.get("batch_size", 1)), 1))
                if "latency_ms_p50" in a
                else None,
                "normalized_error": a.get("normalized_error"),
                "feasible": all(c <= 0 for c in a.get("constraints", [1.0])) if t.state.name == "COMPLETE" else False,
                "reason": reason[:300] or None,
                "duplicate_of": a.get("duplicate_of"),
                "ruled_out": a.get("ruled_out"),
                "shared_measurement_with_trial": a.get("shared_measurement_with_trial"),
                "digest": a.get("digest"),
                "sweep": a.get("config_key") in set(attrs.get("sweep_keys", [])),
            }
        )
    counted = finished_count(study)
    finished = [r for r in rows if r["state"] in ("COMPLETE", "FAIL", "PRUNED")]
    answers = attrs.get("answers") or {}
    best = attrs.get("best_trial")
    best_answer = next((a for a in answers.values() if a["trial"] == best), None)
    if best_answer is None and answers and best is not None:  # best is the defaults at some batch
        best_answer = max(answers.values(), key=lambda a: a.get("samples_per_s", 0.0))
    return {
        "wall_s": wall_s,
        "search_s": attrs.get("elapsed_s"),
        "load_after": loadavg(),
        "records": len(finished),
        "counted": counted,
        "extra_records": len(finished) - counted,
        "queued_never_run": sum(1 for r in rows if r["state"] == "WAITING"),
        "duplicates": sum(1 for r in rows if r["duplicate_of"] is not None),
        "ruled_out": sum(1 for r in rows if r["ruled_out"]),
        "shared": sum(1 for r in rows if r["shared_measurement_with_trial"] is not None),
        "failed": sum(1 for r in rows if r["state"] == "FAIL"),
        "pruned": sum(1 for r in rows if r["state"] == "PRUNED" and not r["ruled_out"] and r["duplicate_of"] is None),
        "infeasible": sum(1 for r in rows if r["state"] == "COMPLETE" and not r["feasible"]),
        "repeated_failures": repeated_failures,
        "rules": attrs.get("rules", []),
        "dropped_knobs": attrs.get("dropped_knobs", {}),
        "sweep_combined": attrs.get("sweep_combined"),
        "drift": attrs.get("drift", []),
        "aa_control": attrs.get("aa_control"),
        "answers": answers,
        "best_trial": best,
        "best_batch": attrs.get("best_batch"),
        "best_answer": best_answer,
        "trials": rows,
    }


# ---------------------------------------------------------------- pairing two studies' answers


def trial_model(study: Any, trial: Any) -> Path:
    from autotune.study import regenerate_model
    from autotune.trial import MODEL_FILE

    path = Path(study.user_attrs["study_dir"]) / "trials" / str(trial.number) / MODEL_FILE
    return path if path.exists() else regenerate_model(study, trial, path.parent)


def config_of(study: Any, trial: Any) -> dict[str, Any]:
    """The trial's knobs, with its batch size explicit (the defaults trial may leave it implicit)."""
    config = dict(trial.params)
    config["batch_size"] = int(trial.user_attrs.get("batch_size", config.get("batch_size", 1)))
    return config


def pair(study_a: Any, trial_a: Any, study_b: Any, trial_b: Any, rounds: int, workdir: Path) -> dict[str, Any]:
    """Throughput of B over A (per sample), paired in adjacent order-alternating blocks."""
    from autotune.finalize import paired_round_s
    from autotune.targets.base import TargetOptions
    from autotune.trial import PairedRequest, run_paired

    study_dir = Path(study_a.user_attrs["study_dir"])
    with np.load(study_dir / "inputs.npz") as data:
        pool = {k: data[k] for k in data.files}
    request = PairedRequest(
        target_name=study_a.user_attrs["target"],
        target_options=TargetOptions(cache_dir=study_dir),
        model_a=trial_model(study_a, trial_a),
        config_a=config_of(study_a, trial_a),
        model_b=trial_model(study_b, trial_b),
        config_b=config_of(study_b, trial_b),
        input_pool=pool,
        dynamic_batch=bool(study_a.user_attrs.get("dynamic_batch")),
        workdir=workdir,
        rounds=rounds,
        round_s=paired_round_s(study_a),
    )
    started = time.monotonic()
    try:
        result = run_paired(request)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "median": result["speedup_median"],
        "p25": result["speedup_p25"],
        "p75": result["speedup_p75"],
        "rounds": result["rounds"],
        "a_ms_per_sample": result["a_ms_per_sample_median"],
        "b_ms_per_sample": result["b_ms_per_sample_median"],
        "wall_s": time.monotonic() - started,
        "load_after": loadavg(),
    }


def same_artifact(trial_a: Any, trial_b: Any) -> bool:
    """Same knobs, or the same digest (the same graph after ONNX Runtime's optimization, same
    thread and execution-mode options): measuring them against each other is an A/A."""
    from autotune.space import config_key

    da, db = trial_a.user_attrs.get("digest"), trial_b.user_attrs.get("digest")
    same_batch = int(trial_a.user_attrs.get("batch_size", 1)) == int(trial_b.user_attrs.get("batch_size", 1))
    return same_batch and (
        (da is not None and da == db) or config_key(dict(trial_a.params)) == config_key(dict(trial_b.params))
    )


def answer_trial(study: Any, which: str) -> Any | None:
    """The batch-1 answer ("batch1") or the study's answer ("best") as a FrozenTrial."""
    from autotune.report import trial_by_number

    if which == "batch1":
        answer = (study.user_attrs.get("answers") or {}).get("1")
        return trial_by_number(study, answer["trial"]) if answer else None
    return trial_by_number(study, study.user_attrs.get("best_trial"))


def cross_pairs(model: str, seed: int, rounds: int) -> dict[str, Any]:
    """autotune's answers against random search's, same seed (same inputs), B = autotune."""
    studies = {tuner: load_study(OUT / model / f"{tuner}-s{seed}", f"{tuner}-s{seed}") for tuner in TUNERS}
    out: dict[str, Any] = {}
    for which in ("batch1", "best"):
        ta, tr = answer_trial(studies["autotune"], which), answer_trial(studies["random"], which)
        if ta is None or tr is None:
            out[which] = {"skipped": "no answer"}
            continue
        entry: dict[str, Any] = {
            "autotune_trial": ta.number,
            "random_trial": tr.number,
            "autotune_config": config_of(studies["autotune"], ta),
            "random_config": config_of(studies["random"], tr),
        }
        if same_artifact(ta, tr):
            entry |= {"identical": True, "median": 1.0, "p25": 1.0, "p75": 1.0}
        else:
            entry |= pair(studies["random"], tr, studies["autotune"], ta, rounds, OUT / model / "pair")
        out[which] = entry
    return out


def aa_row(model: str, seed: int, rounds: int) -> dict[str, Any]:
    """The defaults (autotune study's trial 0) paired against themselves by the same procedure."""
    from autotune.answer import default_trial

    study = load_study(OUT / model / f"autotune-s{seed}", f"autotune-s{seed}")
    zero = default_trial(study)
    return pair(study, zero, study, zero, rounds, OUT / model / "pair")


# ---------------------------------------------------------------- the run


def versions() -> dict[str, str]:
    from autotune.export import library_versions

    return library_versions(("rapidocr-onnxruntime",))


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "autotune", "search_spaces"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except OSError:
        return "unknown"
    return head.strip() + (" + uncommitted changes under autotune/ or search_spaces/" if dirty.strip() else "")


def run_unit(model: str, seed: int, mode: Mode, log: Any) -> dict[str, Any]:
    """Both searchers on one model and seed, then their answers paired against each other."""
    per_seed: dict[str, Any] = {}
    for tuner in TUNERS:
        shutil.rmtree(OUT / model / f"{tuner}-s{seed}", ignore_errors=True)
        argv = start_argv(model, tuner, seed, mode)
        log(f"[{model} s{seed}] {tuner}: {mode.trials} trials (load {loadavg()})")
        t0 = time.monotonic()
        if tuner == "autotune":
            code, printed = run_autotune(argv)
            if code != 0:
                raise RuntimeError(f"autotune start exited {code}:\n{printed[-3000:]}")
        else:
            run_random(argv)
        wall = time.monotonic() - t0
        study = load_study(OUT / model / f"{tuner}-s{seed}", f"{tuner}-s{seed}")
        per_seed[tuner] = summarize_study(study, wall)
        b1 = per_seed[tuner]["answers"].get("1", {})
        log(
            f"[{model} s{seed}] {tuner}: {wall:.0f} s, {per_seed[tuner]['records']} records for "
            f"{per_seed[tuner]['counted']} counted; batch 1 {b1.get('verdict')}; best trial "
            f"{per_seed[tuner]['best_trial']} (batch {per_seed[tuner]['best_batch']})"
        )
    log(f"[{model} s{seed}] pairing autotune's answers against random search's")
    per_seed["pairs"] = cross_pairs(model, seed, mode.pair_rounds)
    for which, d in per_seed["pairs"].items():
        log(f"[{model} s{seed}] {which}: autotune / random = {iqr(d)}")
    return per_seed


def run_all(mode: Mode, log: Any, limit_s: float | None) -> dict[str, Any]:
    """Seed-major (every model at seed 0, then seed 1, ...), so that a run cut by `limit_s`
    still covers every model. A (model, seed) is started only when the last one of that
    model, plus the A/A rows still to measure, fits in what is left of `limit_s`."""
    started = time.monotonic()
    results: dict[str, Any] = {}
    unit_s: dict[str, float] = {}
    for model in mode.models:
        MODEL_FILES[model]()  # copy the model out of the wheel before any timing
        results[model] = {"shape": shape_of(model, mode), "seeds": {}, "skipped_seeds": []}
    aa_reserve_s = 30.0 * len(mode.models)
    for seed in mode.seeds:
        for model in mode.models:
            elapsed = time.monotonic() - started
            if (
                limit_s is not None
                and seed != mode.seeds[0]
                and elapsed + unit_s.get(model, 0) + aa_reserve_s > limit_s
            ):
                log(f"[{model} s{seed}] skipped: {elapsed / 60:.1f} min spent, a unit takes {unit_s[model]:.0f} s")
                results[model]["skipped_seeds"].append(seed)
                continue
            t0 = time.monotonic()
            results[model]["seeds"][str(seed)] = run_unit(model, seed, mode, log)
            unit_s[model] = time.monotonic() - t0
            RESULTS_JSON.write_text(json.dumps({"partial": True, "results": results}, indent=1, default=str))
    for model in mode.models:
        log(f"[{model}] A/A: defaults against themselves")
        results[model]["aa"] = aa_row(model, mode.seeds[0], mode.pair_rounds)
        log(f"[{model}] A/A = {iqr(results[model]['aa'])}")
        for seed in mode.seeds:  # the databases stay; the trial files go
            for tuner in TUNERS:
                shutil.rmtree(OUT / model / f"{tuner}-s{seed}" / "trials", ignore_errors=True)
                shutil.rmtree(OUT / model / f"{tuner}-s{seed}" / "artifacts", ignore_errors=True)
    return results


# ---------------------------------------------------------------- SEARCH.md


def iqr(d: dict[str, Any] | None) -> str:
    if not d or d.get("median") is None:
        return "–"
    if d.get("identical"):
        return "1 (same artifact)"
    return f"{d['median']:.3f} ({d['p25']:.3f}–{d['p75']:.3f})"


def speedup_text(answer: dict[str, Any] | None) -> str:
    if not answer:
        return "–"
    s = answer.get("speedup")
    verdict = {"faster": "faster", "no measurable difference": "no diff", "slower": "slower", "defaults": "defaults"}
    v = verdict.get(answer.get("verdict"), answer.get("verdict"))
    if not s:
        return v
    return f"{s['median']:.3f} ({s['p25']:.3f}–{s['p75']:.3f}) {v}"


def describe_config(config: dict[str, Any]) -> str:
    defaults = {
        "graph_optimization_level": "all",
        "execution_mode": "sequential",
        "intra_op_threads": 0,
        "intra_op_spinning": True,
        "batch_size": 1,
        "precision": "fp32",
    }
    parts = []
    for k, v in config.items():
        if k.startswith("pass.") and v:
            parts.append(k[5:])
        elif k == "inter_op_threads" and config.get("execution_mode") != "parallel":
            continue
        elif k == "calibration_method" and config.get("precision") != "int8":
            continue
        elif not k.startswith("pass.") and defaults.get(k, object()) != v:
            short = {
                "graph_optimization_level": "opt",
                "execution_mode": "exec",
                "intra_op_threads": "intra",
                "inter_op_threads": "inter",
                "intra_op_spinning": "spin",
                "batch_size": "b",
                "calibration_method": "calib",
            }.get(k, k)
            parts.append(f"{short}={v}")
    return ", ".join(parts) or "defaults"


def wins(values: list[float], lo: list[float], hi: list[float], aa: dict[str, Any]) -> tuple[int, int, int]:
    """(autotune wins, random wins, no measurable difference) by the A/A interval rule."""
    a = r = n = 0
    for m, p25, p75 in zip(values, lo, hi, strict=True):
        if p25 > aa["p75"] and m > 1:
            a += 1
        elif p75 < aa["p25"] and m < 1:
            r += 1
        else:
            n += 1
    return a, r, n


def render(data: dict[str, Any]) -> str:
    meta, results = data["meta"], data["results"]
    mode = meta["mode"]
    lines = [
        "# Search quality on unseen trained models: autotune vs random search (CPU)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} in {meta['total_s'] / 60:.1f} min "
        f'(issue 10 "How it is proven", CPU part; issue 18 item 5). Raw numbers: `bench/search_cpu.json`.',
        "",
        f"**Machine**: {meta['host']['cpu']}, {meta['host']['cpu_count']} cores, {meta['host']['os']}; shared with "
        f"other jobs. Load average (1, 5, 15 min) at the start {meta['load_start']}, at the end {meta['load_end']} "
        f"(per study and per pair in the JSON). autotune code: {meta['git']}.",
        "",
        "**Versions**: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        f"**Models**: trained weights from the `rapidocr-onnxruntime` wheel, dynamic dims fixed by `--shape`: the "
        f"PP-OCRv4 text detector at `{results.get('ppocr_v4_det', {}).get('shape', '–')}` (a 640x640 input makes "
        "its batch-8 runs ~0.5 s each, too slow for this budget on 2 cores), the PP-OCRv4 recognizer at "
        "`x:1,3,48,320` and the PP-OCR direction classifier at `x:1,3,48,192`. None is in the test suite or the "
        "example autotune was developed on; the detector is also in `make bench` (bench/RESULTS.md) and the other "
        "two served bench/NOISE.md to calibrate the paired measurement, not to tune the search. All three have a "
        "dynamic batch dim, so `batch_size` (1, 2, 4, 8) is in the space.",
        "",
        f"**Settings**: ONNX Runtime CPU, full default space `search_spaces/onnxruntime.yaml`, `--trials "
        f"{mode['trials']}` (counted trials), seeds {mode['seeds']}, `--max-measure-s {mode['max_measure_s']}`, "
        f"default accuracy gate (scale, 1e-2 of each output's range, cosine ≥ 0.99) on seeded synthetic inputs "
        f"(the seed also seeds the inputs; both searchers of a seed see the same ones). Each study is finalized "
        f"as `autotune start` finalizes (21 paired rounds per candidate); the cross-searcher and A/A pairs below "
        f"use {mode['pair_rounds']} rounds of the same procedure (`autotune.trial.run_paired`).",
        "",
        "- **autotune**: `autotune start MODEL --foreground --target onnxruntime --trials N --seed S --shape ... "
        "--max-measure-s ...` through `autotune.cli.main`: trial 0 (defaults), the space's known-good recipes, "
        "the one-knob sweep (at most half of N), the combined sweep winners, then multi-objective TPE.",
        '- **random**: the same `StudySpec` with `sampler="random"` through `run_study` and `finalize`: trial 0 '
        "(defaults), then Optuna's RandomSampler. It keeps the study loop's de-duplication and failure rules "
        "(so repeats do not count for it either) but gets no known-good recipes and no sweep. (bench/run_all.py's "
        "random studies do get the sweep: `seed_queue` enqueues it whatever the sampler; here the study is marked "
        "seeded so that the baseline is random search proper.)",
        "",
        "## 1. autotune vs random search, paired against each other",
        "",
        "Ratio = autotune's answer's throughput per sample ÷ random search's, paired in adjacent, order-alternating "
        "blocks (median of per-round ratios, IQR in parentheses); above 1 autotune's answer is faster. *batch 1*: "
        "each study's batch-1 answer (the defaults when its verdict was not \"faster\"); *best*: each study's answer "
        "(`best_trial`: the highest paired throughput among the per-batch answers, possibly at different batches). "
        '"same artifact": both answers are the same configuration (or the same ONNX Runtime-optimized graph with '
        "the same options), not measured. The A/A row is the defaults paired against themselves: a ratio whose "
        "IQR overlaps the A/A IQR is no measurable difference.",
        "",
        "| model | row | seed | batch 1: autotune ÷ random | best: autotune ÷ random | autotune's best | random's best |",
        "|---|---|---|---|---|---|---|",
    ]
    tally = {"batch1": [0, 0, 0], "best": [0, 0, 0]}
    for model, entry in results.items():
        aa = entry.get("aa")
        lines.append(
            f"| {model} | **A/A** (defaults ÷ defaults) | {mode['seeds'][0]} | {iqr(aa)} | {iqr(aa)} | – | – |"
        )
        for seed, s in entry["seeds"].items():
            p = s["pairs"]
            cfg = {w: p[w] for w in ("best",) if "autotune_config" in p.get(w, {})}
            lines.append(
                f"| {model} | autotune vs random | {seed} | {iqr(p.get('batch1'))} | {iqr(p.get('best'))} | "
                f"{describe_config(cfg['best']['autotune_config']) if cfg else '–'} | "
                f"{describe_config(cfg['best']['random_config']) if cfg else '–'} |"
            )
            for which in ("batch1", "best"):
                d = p.get(which, {})
                if aa and d.get("median") is not None:
                    a, r, n = wins([d["median"]], [d["p25"]], [d["p75"]], aa)
                    tally[which] = [x + y for x, y in zip(tally[which], (a, r, n), strict=True)]
    lines += [
        "",
        f"Tally over models × seeds (IQR clear of the model's A/A IQR): batch 1 — autotune faster "
        f"{tally['batch1'][0]}, random faster {tally['batch1'][1]}, no measurable difference {tally['batch1'][2]}; "
        f"best — autotune faster {tally['best'][0]}, random faster {tally['best'][1]}, no measurable difference "
        f"{tally['best'][2]}.",
        "",
        "## 2. Each study's own answer (what finalize stored)",
        "",
        "Speedups are finalize's paired measurement of the answer's best finalist against the defaults at the same "
        "batch (median, IQR, verdict); *A/A* is the study's own control (`aa_control`). A verdict other than "
        '"faster" means the defaults at that batch are the answer. *best* is `best_trial`\'s batch and its '
        "speedup over the defaults at that batch.",
        "",
        "| model | seed | tuner | study A/A | batch 1 vs defaults | best: batch, vs defaults at that batch | best config | wall (search) s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in results.items():
        for seed, s in entry["seeds"].items():
            for tuner in TUNERS:
                st = s[tuner]
                aa = st.get("aa_control") or {}
                aa_text = f"{aa['median']:.3f} ({aa['p25']:.3f}–{aa['p75']:.3f})" if aa else "–"
                best = st.get("best_answer") or {}
                best_cfg = next((t["params"] for t in st["trials"] if t["number"] == st["best_trial"]), {})
                lines.append(
                    f"| {model} | {seed} | {tuner} | {aa_text} | {speedup_text(st['answers'].get('1'))} | "
                    f"b{best.get('batch_size', '–')}: {speedup_text(best)} | {describe_config(best_cfg)} | "
                    f"{st['wall_s']:.0f} ({st['search_s'] or 0:.0f}) |"
                )
    lines += [
        "",
        "## 3. Wasted records",
        "",
        "*records*: Optuna trials the study created; *counted*: those that count toward `--trials`. The difference "
        "(*extra*) is records that taught nothing new: *dup* (`duplicate_of`: a configuration already tried), "
        "*ruled out* (`ruled_out`: a failure rule matched), *shared* (`shared_measurement_with_trial`: the same "
        "artifact as an earlier trial). *failed/pruned*: trials that ran and failed or were pruned (too slow); "
        "*repeat failures*: those whose failure class (autotune.rules.failure_class) an earlier failure of the "
        "same study already had. *infeasible*: measured but over the accuracy gate.",
        "",
        "| model | seed | tuner | records | counted | extra | dup | ruled out | shared | failed | pruned | repeat failures | infeasible | rules learned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in results.items():
        for seed, s in entry["seeds"].items():
            for tuner in TUNERS:
                st = s[tuner]
                rules = (
                    "; ".join(
                        f"{', '.join(f'{k}={v}' for k, v in r['knobs'].items()) or '(none)'}"
                        f"{'' if r['enforced'] else ' (not enforced)'}"
                        for r in st["rules"]
                    )
                    or "–"
                )
                lines.append(
                    f"| {model} | {seed} | {tuner} | {st['records']} | {st['counted']} | {st['extra_records']} | "
                    f"{st['duplicates']} | {st['ruled_out']} | {st['shared']} | {st['failed']} | {st['pruned']} | "
                    f"{len(st['repeated_failures'])} | {st['infeasible']} | {rules} |"
                )
    odd = []
    for model, entry in results.items():
        for seed, s in entry["seeds"].items():
            for tuner in TUNERS:
                st = s[tuner]
                zero_params = next((t["params"] for t in st["trials"] if t["number"] == 0), {})
                for batch, a in sorted(st["answers"].items(), key=lambda kv: int(kv[0])):
                    params = next((t["params"] for t in st["trials"] if t["number"] == a["trial"]), {})
                    is_defaults = {k: v for k, v in params.items() if k != "batch_size"} == {
                        k: v for k, v in zero_params.items() if k != "batch_size"
                    }
                    if a["verdict"] != "faster" and not is_defaults:
                        sp = a.get("speedup") or {}
                        odd.append(
                            f"| {model} | {seed} | {tuner} | {batch} | {a['trial']} | {a['verdict']} | "
                            f"{sp.get('median', float('nan')):.3f} ({sp.get('p25', float('nan')):.3f}–"
                            f"{sp.get('p75', float('nan')):.3f}) | {'yes' if a['trial'] == st['best_trial'] else 'no'} |"
                        )
    if odd:
        lines += [
            "",
            'Per-batch answers that are *not* the defaults although their verdict is not "faster" (finalize '
            "keeps the paired winner when the defaults at that batch were never measured as a trial):",
            "",
            "| model | seed | tuner | batch | answer trial | verdict | paired vs defaults | is the study's best_trial |",
            "|---|---|---|---|---|---|---|---|",
            *odd,
        ]
    skipped = {m: e.get("skipped_seeds") for m, e in results.items() if e.get("skipped_seeds")}
    if skipped:
        lines += ["", f"Seeds not run (time limit): {skipped}."]
    lines += ["", "## 4. Reading", ""]
    lines += [f"- {note}" for note in data.get("notes", [])] or ["- (no notes)"]
    lines += [
        "",
        f"Regenerate: `.venv/bin/python bench/search_cpu.py` (full, ~{meta['total_s'] / 60:.0f} min here) or "
        "`--quick` (one seed, tiny detector input, 6 trials); `--render` rewrites this file from the JSON.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 6 trials, detector at 160x160")
    parser.add_argument("--render", action="store_true", help="rewrite SEARCH.md from search_cpu.json")
    parser.add_argument("--models", nargs="+", choices=list(MODEL_FILES), help="a subset of the models")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the mode's seeds")
    parser.add_argument("--trials", type=int, help="override the mode's --trials")
    parser.add_argument(
        "--limit-min", type=float, help="start no (model, seed) that would end past this many minutes (full: 37)"
    )
    args = parser.parse_args()
    if args.render:
        SEARCH_MD.write_text(render(json.loads(RESULTS_JSON.read_text())))
        return 0
    mode = QUICK if args.quick else FULL
    if args.models:
        mode = replace(mode, models=tuple(m for m in mode.models if m in args.models))
    if args.seeds:
        mode = replace(mode, seeds=tuple(args.seeds))
    if args.trials:
        mode = replace(mode, trials=args.trials)
    if args.limit_min is not None:
        mode = replace(mode, limit_min=args.limit_min)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from autotune.export import host_facts
    from autotune.study import quiet_optuna

    quiet_optuna()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", flush=True)

    load_start = loadavg()
    code_at_start = git_state()  # other people commit while a long run goes on
    results = run_all(mode, log, None if mode.limit_min is None else 60 * mode.limit_min)
    meta = {
        "command": ".venv/bin/python " + " ".join(["bench/search_cpu.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": host_facts(),
        "python": platform.python_version(),
        "versions": versions(),
        "git": code_at_start,
        "mode": {k: (list(v) if isinstance(v, tuple) else v) for k, v in mode.__dict__.items()},
        "load_start": load_start,
        "load_end": loadavg(),
        "total_s": time.monotonic() - started,
    }
    data = {"meta": meta, "results": results, "notes": []}  # notes are written after reading the numbers
    RESULTS_JSON.write_text(json.dumps(data, indent=1, default=str))
    SEARCH_MD.write_text(render(data))
    log(f"done: {SEARCH_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
