"""Where the time goes on six CPU models and the stored GPU profiles: the defaults against the
study's answer (issues 16 and 30).

    .venv/bin/python bench/profile_table.py [--trials N] [--repeats N] [--models NAME ...] [--render]
        [--gpu-profiles DIR | --no-gpu]

For each model a short study on the ONNX Runtime CPU target with the default space
(`autotune start MODEL --foreground`, in this process); then the defaults at batch 1 and the
batch-1 answer (or, where the defaults stayed the answer, the finalist that lost the paired
comparison) are profiled with ONNX Runtime's profiler (`autotune.profile.profile_study`), and
this script tabulates the stored `profile.json`: time by op class, the GEMM-class share before and
after, the top nodes and the diagnoses, beside ONNX Runtime's own profiler run in the same
rounds (`ort_reference`, interleaved through `profile_study`'s `after_each`). The models (`MODELS`):
the bundled `examples/example.onnx` (generated, with the seed's patterns) and five trained ones:
the PP-OCRv4 recognizer (opset 12), detector and the PP-OCR classifier (opset 11) from the
`rapidocr-onnxruntime` wheel, ddddocr's YOLOX captcha detector and YOLOv8n with 16 real views of a
photograph (`bench/models/`).

The GPU rows are never measured here: they are rendered from a device run's stored files
(`--gpu-profiles`, default bench/gpu_results/run4/, as `bench/gpu_device.sh` brings them back):
`MODEL-profile.json` (the study's profile.json), `MODEL-study.json` (its study) and `grid-setup.txt`
(the device's GPU and ONNX Runtime).

Writes bench/PROFILE.md; scratch studies in bench/out/profile/ (`--render` rewrites the table
from them without tuning again).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import models as bench_models  # noqa: E402
import study_records  # noqa: E402

from autotune.diagnoses import status_phrase  # noqa: E402
from autotune.profile import CLASS_TITLES, OP_CLASSES, PROFILE_FILE, PROFILE_REPEATS  # noqa: E402

OUT = BENCH / "out" / "profile"
TABLE = BENCH / "PROFILE.md"
GPU_PROFILES = BENCH / "gpu_results" / "run4"
MAX_MEASURE_S = "0.3"

SPACE = BENCH / "spaces" / "onnxruntime_profile.yaml"
TRAINED = ROOT / ".venv" / "trained-models"  # tests/trained_models.py's cache (pip-downloaded wheels)
# ONNX Runtime's own profiler, for reference: one plain session per round, as many runs as
# autotune's profile of the round takes (at least MIN_RUNS and MIN_PROFILE_S, after warm-up).
REFERENCE_WARMUP_RUNS = 5
YOLOV8N = BENCH / "models" / "yolov8n.onnx"  # bench/accuracy.py's gpu_models(): dynamic batch, opset 22

# name -> (model path factory, flags). All but `example` are trained models the project was not
# developed against (issue 30); ppocr_v4_rec and ppocr_cls are opset 12 and 11; yolov8n (the
# issue's detector) runs on 16 real views of a photograph (8 calibrate INT8, 8 verify).
MODELS = {
    "example": (lambda: ROOT / "examples" / "example.onnx", []),
    "ppocr_v4_rec": (bench_models.ppocr_v4_rec, ["--shape", "x:1,3,48,320"]),
    "ppocr_det": (lambda: TRAINED / "ppocr_det.onnx", ["--shape", "x:1,3,320,320"]),
    "ppocr_cls": (lambda: TRAINED / "ppocr_cls.onnx", ["--shape", "x:1,3,48,192"]),
    "yolox_captcha": (lambda: TRAINED / "yolox_captcha.onnx", []),
    "yolov8n": (lambda: YOLOV8N, ["--inputs", str(BENCH / "models" / "yolov8n_inputs.npz")]),
}


def tune(name: str, trials: int) -> float:
    """Runs the study of `name` from scratch; returns its wall time in seconds."""
    from autotune.cli import main

    factory, shape = MODELS[name]
    shutil.rmtree(OUT / name, ignore_errors=True)
    argv = ["start", str(factory()), "--foreground", "--study", name, "--results-dir", str(OUT), "--target"]
    argv += ["onnxruntime", "--trials", str(trials), "--max-measure-s", MAX_MEASURE_S, "--space", str(SPACE), *shape]
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"{name}: autotune start exited {code}")
    return time.monotonic() - started


def compared_trial(study: Any) -> tuple[int | None, str]:
    """What the defaults are compared with: the batch-1 answer (the latency headline, paired
    against the defaults at batch 1), or, where the defaults stayed the answer, the finalist
    that lost the paired comparison (to show what its knobs changed)."""
    from autotune.answer import stored_answers

    answer = stored_answers(study).get(1)
    if answer is None:
        return None, "the answer"
    if answer.verdict == "faster":
        return answer.trial, f"the batch-1 answer (trial {answer.trial}, {answer.speedup.median:.3f}x paired)"
    if answer.paired_winner is not None:
        ratio = f"{answer.speedup.median:.3f}x paired, {answer.verdict}" if answer.speedup else answer.verdict
        return answer.paired_winner, f"the best batch-1 finalist (trial {answer.paired_winner}, {ratio})"
    return answer.trial, "the batch-1 answer (the defaults)"


def profile(name: str, repeats: int) -> dict[str, Any]:
    """Profiles the defaults against `compared_trial` `repeats` times each (rewrites the study's
    profile.json), with ONNX Runtime's own profiler (`ort_reference`) run after each of
    autotune's profiles, in the same rounds: defaults, reference of the defaults, compared,
    reference of the compared, defaults, ... so that a slow spell of the shared host lands on
    both. Returns the role, each side's reference rounds and autotune's own profiling seconds."""
    from autotune.profile import profile_study

    study, _ = load(name)
    number, role = compared_trial(study)
    rounds: dict[str, list[dict[str, Any]]] = {"defaults": [], "best": []}
    reference_s = 0.0

    def reference(key: str, trial: Any) -> None:
        nonlocal reference_s
        started = time.monotonic()
        rounds[key].append(ort_reference(study, trial.number))
        reference_s += time.monotonic() - started

    started = time.monotonic()
    profile_study(study, number, repeats=repeats, after_each=reference)
    profile_s = time.monotonic() - started - reference_s
    compared = rounds["best"] or rounds["defaults"]  # the defaults stayed the answer: one configuration
    return {
        "role": role,
        "reference": {"defaults": combine_reference(rounds["defaults"]), "compared": combine_reference(compared)},
        "profile_s": profile_s,
        "profile_allowance_s": profile_allowance_s(study),
    }


def profile_allowance_s(study: Any) -> float | None:
    """The seconds `finalize_estimate_s` keeps for the profile (two batch-1 pairings), where the
    study has only batch-1 finalists (the bench's space has no batch knob); else None."""
    from autotune.answer import default_trial
    from autotune.finalize import WRITE_RESERVE_S, finalists_by_batch, finalize_estimate_s

    zero = default_trial(study)
    plan = finalists_by_batch(study, zero) if zero is not None else {}
    if zero is None or set(plan) - {1}:
        return None
    # estimate = pairing (A/A) + finalists x pairing + 2 x pairing (the profile) + the writing
    pairing_s = (finalize_estimate_s(study) - WRITE_RESERVE_S) / (3 + len(plan.get(1, [])))
    return 2 * pairing_s


def ort_reference(study: Any, trial_number: int) -> dict[str, Any]:
    """ONNX Runtime's own profiler on a trial, apart from autotune's code path: one plain session
    with the trial's session options, `REFERENCE_WARMUP_RUNS` warm-up runs, then as many runs as
    autotune's profile takes (at least `MIN_RUNS` and `MIN_PROFILE_S`), every "Node" event's
    duration summed by op type (autotune's GEMM op set decides what is GEMM-class)."""
    import tempfile

    import onnxruntime as ort

    from autotune.diagnoses import _trial_inputs
    from autotune.profile import GEMM_OPS, MAX_RUNS, MIN_PROFILE_S, MIN_RUNS
    from autotune.targets.onnxruntime import session_options

    trial = next(t for t in study.trials if t.number == trial_number)
    model, config, feeds = _trial_inputs(study, trial)
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(config)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ref")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(REFERENCE_WARMUP_RUNS):
            session.run(None, feeds)
        runs, started = 0, time.perf_counter()
        while runs < MAX_RUNS and (runs < MIN_RUNS or time.perf_counter() - started < MIN_PROFILE_S):
            session.run(None, feeds)
            runs += 1
        events = json.loads(Path(session.end_profiling()).read_text())
    # Event times are relative to the profiler's start: keep the last `runs` model runs.
    starts = sorted(float(e["ts"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first = starts[-runs] if len(starts) >= runs else 0.0
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and float(event["ts"]) >= first:
            op = event["args"].get("op_name", "")
            by_op[op] = by_op.get(op, 0.0) + float(event["dur"])
    total = sum(by_op.values())
    return {
        "trial": trial_number,
        "runs": runs,
        "gemm_share": sum(v for k, v in by_op.items() if k in GEMM_OPS) / total if total else None,
        "ms_per_run": total / runs / 1e3,
    }


def combine_reference(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference's rounds as autotune's: the median GEMM share with its range (low-high)."""
    import numpy as np

    shares = [r["gemm_share"] for r in rounds if r.get("gemm_share") is not None]
    return {
        "trial": rounds[0]["trial"],
        "rounds": len(shares),
        "runs": [r["runs"] for r in rounds],
        "gemm_shares": shares,
        "gemm_share": float(np.median(shares)) if shares else None,
        "low": min(shares) if shares else None,
        "high": max(shares) if shares else None,
    }


def median_outside_chance(n_range: int, n_median: int) -> float:
    """The chance that the median of `n_median` runs (odd) falls outside the range of `n_range`
    others when all are exchangeable (the two profilers measure the same thing): the m smallest
    (or largest) of all the runs, m = (n_median + 1) / 2, are all the median's."""
    from math import comb

    m = (n_median + 1) // 2
    total = n_range + n_median
    return 2 * comb(total - m, n_median - m) / comb(total, n_median)


def load(name: str) -> tuple[Any, dict[str, Any]]:
    return load_stored(OUT / name / "study.db", name, OUT / name / PROFILE_FILE)


def load_stored(db: Path, name: str, profile: Path) -> tuple[Any, dict[str, Any]]:
    """A stored study and its profile.json (never re-run)."""
    import optuna

    from autotune.study import quiet_optuna

    quiet_optuna()
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return study, json.loads(profile.read_text())


def gpu_studies(directory: Path) -> list[str]:
    """The models of a device run's directory with both `MODEL-profile.json` and `MODEL-study.json`
    (the study's records as text: bench/study_records.py)."""
    names = [p.name[: -len("-profile.json")] for p in sorted(directory.glob("*-profile.json"))]
    return [n for n in names if (directory / f"{n}-study.json").is_file()]


def gpu_setup(directory: Path) -> dict[str, str]:
    """The device's GPU name (short: "H200") and the autotune commit, from `grid-setup.txt`."""
    text = (directory / "grid-setup.txt").read_text() if (directory / "grid-setup.txt").is_file() else ""
    gpu = re.search(r"^NVIDIA ([^,\n]+)", text, re.M)
    commit = re.search(r"^autotune from .*: (\w+)", text, re.M)
    return {"gpu": gpu.group(1).strip() if gpu else "GPU", "commit": commit.group(1) if commit else "?"}


def _ort_version(profile: dict[str, Any]) -> str:
    """The ONNX Runtime version in a profile's source ("ONNX Runtime 1.31.1 profiler, ...")."""
    return profile["source"].split()[2]


def gpu_role(study: Any, data: dict[str, Any]) -> str:
    """What a stored GPU profile compares the defaults with: `profile_study`'s default, the
    study's answer (the best throughput) at its batch, with the paired measurement there."""
    from autotune.answer import answer_for_trial

    best = data["best"] or data["defaults"]
    answer = answer_for_trial(study, best["trial"])
    paired = ""
    if answer is not None and answer.speedup is not None:
        paired = f"; {answer.speedup.median:.3f}x paired"
        paired += "" if answer.verdict == "faster" else f", {answer.verdict}"
    return f"{data['best_role']} (trial {best['trial']}, batch {best['batch_size']}{paired})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _gpu_notes(study: Any, data: dict[str, Any]) -> list[str]:
    """What a GPU profile's numbers are (and are not), from the profile and its study."""
    from autotune.answer import answer_for_trial

    defaults, best = data["defaults"], data["best"] or data["defaults"]
    pairs = (("defaults", defaults), ("compared", best))
    share = ", ".join(f"{p['total_ms'] / p['run_ms']:.0%} ({label})" for label, p in pairs if p.get("run_ms"))
    lines = [
        f"- timing: {defaults['note']}; node sum / profiled run: {share} (the run also holds the input and "
        "output copies and the waits for the GPU)"
    ]
    answer = answer_for_trial(study, best["trial"])
    if answer is not None and answer.speedup is not None:
        timed = {
            "defaults": answer.speedup.default_ms_per_sample * answer.batch_size,
            "compared": answer.speedup.best_ms_per_sample * answer.batch_size,
        }
        lines.append(
            "- profiled run vs the study's paired timing, ms per batch of "
            f"{answer.batch_size}: "
            + ", ".join(f"{p['run_ms']:.4g} vs {timed[label]:.4g} ({label})" for label, p in pairs)
            + ": the profile runs `session.run` with host inputs and outputs (the copies are in its run; the "
            "timing binds device buffers), under the profiler, without CUDA graph"
        )
    graph = [label for label, p in pairs if p["config"].get("cuda_graph")]
    if graph:
        lines.append(
            f"- CUDA graph: the {' and '.join(graph)} trial runs with cuda_graph=True, but the profiler cannot see "
            "graph replays, so `profile_onnxruntime` profiles it with CUDA graph off: its node times are per-node "
            "launches that the deployed configuration replays as one graph, and the launch time the graph saves "
            "does not show here"
        )
    else:
        lines.append("- CUDA graph: off in both profiled configurations")
    return lines


def _marker_note(item: dict[str, Any], defaults: dict[str, Any]) -> str:
    """For a pass diagnosis on a GPU profile: which of its named marker nodes (the op the pass
    removes) the defaults' profile still has, by name."""
    from autotune.diagnoses import _MARKER_OPS

    marker = _MARKER_OPS.get(item.get("kind", ""))
    if marker is None or not defaults.get("timed"):
        return ""
    named = [n.split(" ", 1)[1] for n in item.get("nodes", []) if n.startswith(f"{marker} ")]
    if not named:
        return ""
    profiled = {n["name"] for n in defaults["nodes"] if n["op_type"] == marker}
    kept = [n for n in named if n in profiled]
    others = sorted(profiled - set(named))
    text = f"; of the {len(named)} {marker} nodes it names, {len(kept)} in the defaults' profile"
    if others:
        text += f" (it has {len(others)} other: {', '.join(others[:3])})"
    return text


def model_section(name: str, study: Any, data: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    from autotune.answer import default_trial
    from autotune.report import config_summary, headline

    defaults, best = data["defaults"], data["best"] or data["defaults"]
    gpu = defaults.get("provider") == "CUDAExecutionProvider"
    zero = default_trial(study)
    role = meta.get("role", "the answer")
    lines = [f"## {name}" + (f" ({meta['device']})" if gpu else ""), ""]
    runs = f"{defaults['runs']} runs" + (
        f" (compared: {best['runs']})" if gpu and best["runs"] != defaults["runs"] else ""
    )
    lines += [f"- model: `{Path(study.user_attrs['model_path']).name}`; {defaults['source']}, {runs}"]
    if gpu:
        lines += _gpu_notes(study, data)
    wall_s = meta.get("wall_s")
    wall = f", {wall_s:.0f} s with finalize" if wall_s else ""
    if gpu and study.user_attrs.get("elapsed_s"):
        wall = f", {study.user_attrs['elapsed_s']:.0f} s (the study's own wall time)"
    lines += [f"- study: {study.user_attrs.get('n_trials')} trials" + wall]
    lines += [f"- {line.replace('**', '')}" for line in headline(study)]
    # GPU: against the profiled defaults (at the answer's batch), not trial 0's batch.
    against = defaults["config"] if gpu else (zero.params if zero else {})
    lines += [
        f"- compared: trial {defaults['trial']} (defaults, batch {defaults['batch_size']}) with {role}: "
        f"{config_summary(best['config'], against)}, batch {best['batch_size']}"
    ]
    unit = "launch ms" if gpu and defaults.get("timing") == "node" else "ms"
    lines += ["", f"| class | defaults {unit} | share | compared {unit} | share |", "|---|---|---|---|---|"]
    for cls in OP_CLASSES:
        a, b = defaults["by_class_ms"][cls], best["by_class_ms"][cls]
        lines.append(
            f"| {CLASS_TITLES[cls]} | {a:.4g} | {_share_cell(defaults, cls)} | {b:.4g} | {_share_cell(best, cls)} |"
        )
    lines += [
        f"| total (node sum; run) | {defaults['total_ms']:.4g}; {defaults['run_ms']:.4g} | | "
        f"{best['total_ms']:.4g}; {best['run_ms']:.4g} | |",
        "",
        f"GEMM-class share: **{_share_cell(defaults, 'gemm')} -> {_share_cell(best, 'gemm')}**"
        + (" (of host-side launch time)" if unit == "launch ms" else "")
        + _change_note(data),
        "",
        *_reference_lines(meta, data),
        "Top 5 nodes of the compared trial:",
        "",
        "| node | op type | class | precision | ms | share |",
        "|---|---|---|---|---|---|",
    ]
    for node in best["top"][:5]:
        lines.append(
            f"| {node['name'][:60]} | {node['op_type']} | {CLASS_TITLES[node['class']]} | {node['precision']} | "
            f"{node['time_ms']:.4g} | {_pct(node['share'])} |"
        )
    lines += ["", "Diagnoses:", ""]
    for item in data["diagnoses"] or []:
        nodes = ", ".join(item.get("nodes", [])[:4])
        if nodes and item.get("nodes_from"):
            nodes = f"in the graph that ran for {item['nodes_from']}: {nodes}"
        search = status_phrase(item.get("search")) if item.get("search") else item.get("why", "")
        state = "" if item.get("in_best") is None else (" (still there)" if item["in_best"] else " (gone)")
        if item.get("runtime_note"):
            search += f"; {item['runtime_note'][:1].lower()}{item['runtime_note'][1:]}"
        if gpu:
            search += _marker_note(item, defaults)
        lines.append(f"- {item['title']}{state}: {nodes or '-'}; {search}")
    if not data["diagnoses"]:
        lines.append("- none")
    return lines + [""]


def _share_cell(profile: dict[str, Any], cls: str) -> str:
    """A share as the median of the repeats with their range, or the single profile's share."""
    spread = (profile.get("share_spread") or {}).get(cls)
    if spread is not None and (profile.get("repeats") or 1) > 1:
        return f"{spread['median']:.1%} ({spread['low']:.1%}-{spread['high']:.1%})"
    return _pct(profile["by_class_ms"][cls] / profile["total_ms"])


def _change_note(data: dict[str, Any]) -> str:
    change = ((data.get("moved") or {}).get("shares") or {}).get("gemm")
    if change is None or data["best"] is None or data["best"]["trial"] == data["defaults"]["trial"]:
        return ""
    where = (
        "inside the spread of the repeats: no measured difference" if change["within_spread"] else "outside the spread"
    )
    return f"; the change, {change['change'] * 100:+.1f} points, is {where}"


def reference_inside(reference: dict[str, Any] | None, profile: dict[str, Any]) -> bool | None:
    """Whether ONNX Runtime's own median GEMM share lies within autotune's stated spread (its
    range over the interleaved repeats); None where either is missing."""
    spread = (profile.get("share_spread") or {}).get("gemm")
    if not reference or reference.get("gemm_share") is None or spread is None:
        return None
    return bool(spread["low"] <= reference["gemm_share"] <= spread["high"])


def _reference_verdict(reference: dict[str, Any] | None, profile: dict[str, Any]) -> str:
    """ONNX Runtime's own median GEMM share (its range) against autotune's range: inside, or
    outside by how many points."""
    if not reference or reference.get("gemm_share") is None:
        return "not measured"
    ref = reference["gemm_share"]
    own = f"{ref:.1%}" + (f" ({reference['low']:.1%}-{reference['high']:.1%})" if reference.get("rounds") else "")
    spread = (profile.get("share_spread") or {}).get("gemm")
    if spread is None:
        return own
    if reference_inside(reference, profile):
        return f"{own}, inside"
    gap = min(abs(ref - spread["low"]), abs(ref - spread["high"]))
    return f"{own}, **outside by {gap * 100:.1f} points**"


def _reference_lines(meta: dict[str, Any], data: dict[str, Any]) -> list[str]:
    references = meta.get("reference")
    if not references:
        return []
    defaults, best = data["defaults"], data["best"] or data["defaults"]
    pairs = [("defaults", references["defaults"], defaults), ("compared", references["compared"], best)]
    verdicts = [reference_inside(ref, own) for _, ref, own in pairs]
    rounds = references["defaults"].get("rounds", 1)
    chance = median_outside_chance(defaults.get("repeats") or 1, rounds) if rounds % 2 else None
    within = (
        "yes, for both configurations"
        if all(verdicts)
        else "no: "
        + ", ".join(label for (label, _, _), inside in zip(pairs, verdicts, strict=True) if not inside)
        + " outside"
    )
    lines = [
        f"ONNX Runtime's own profiler, interleaved with autotune's profile ({rounds} rounds; each a plain session "
        "with the trial's options, as many runs as autotune's profile, Node events summed by op type): GEMM share "
        f"{_reference_verdict(references['defaults'], defaults)} autotune's range (defaults); "
        f"{_reference_verdict(references['compared'], best)} autotune's range (compared). "
        f"**Within autotune's stated spread: {within}.**"
        + (
            f" (Were both profilers measuring the same share, the reference's median would fall outside "
            f"autotune's range {chance:.0%} of the time.)"
            if chance is not None
            else ""
        ),
        "",
    ]
    if meta.get("profile_s") is not None:
        allowance = meta.get("profile_allowance_s")
        lines += [
            f"autotune's profile took {meta['profile_s']:.1f} s ({2 * (defaults.get('repeats') or 1)} profiles, the "
            "reference's time left out)"
            + (f"; finalize's estimate keeps {allowance:.1f} s for it." if allowance is not None else "."),
            "",
        ]
    return lines


def _row(name: str, device: str, role: str, data: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    defaults, best = data["defaults"], data["best"] or data["defaults"]
    references = (meta or {}).get("reference")
    ref = (
        f"{_reference_verdict(references['defaults'], defaults)}; {_reference_verdict(references['compared'], best)}"
        if references
        else "-"
    )
    return (
        f"| {name} | {device} | {role} | {_share_cell(defaults, 'gemm')} | {_share_cell(best, 'gemm')} | {ref} | "
        f"{_share_cell(defaults, 'data_movement')} -> {_share_cell(best, 'data_movement')} | "
        f"{len(data['diagnoses'])} |"
    )


def gpu_part(directory: Path | None) -> tuple[list[str], list[str], list[str]]:
    """(table rows, paragraph, sections) for the stored GPU profiles in `directory`."""
    names = gpu_studies(directory) if directory is not None and directory.is_dir() else []
    if not names:
        return (
            ["| (GPU model) | ONNX Runtime CUDA provider | - | not measured | not measured | - | - | - |"],
            [
                "**GPU rows: not rendered**"
                + (f" (no `MODEL-profile.json` with its `MODEL-study.json` in {directory})." if directory else "."),
                "",
            ],
            [],
        )
    setup = gpu_setup(directory)
    rows, sections, versions, graph, trials, written = [], [], set(), [], set(), []
    for name in names:
        study = study_records.load(directory / f"{name}-study.json")
        data = json.loads((directory / f"{name}-profile.json").read_text())
        defaults, best = data["defaults"], data["best"] or data["defaults"]
        versions.add(_ort_version(defaults))
        device = f"{setup['gpu']}, ONNX Runtime {_ort_version(defaults)} CUDA provider"
        role = gpu_role(study, data)
        rows.append(_row(name, device, role, data))
        sections += model_section(name, study, data, {"role": role, "device": device})
        trials.add(study.user_attrs.get("n_trials"))
        written.append(data["written"])
        if best["config"].get("cuda_graph"):
            graph.append(name)
    rel = directory.resolve().relative_to(ROOT) if directory.resolve().is_relative_to(ROOT) else directory
    note = data["defaults"]["note"]
    paragraph = [
        f"**GPU rows**: rendered from the stored files in `{rel}/` (nothing re-run here): ONNX Runtime "
        f"{', '.join(sorted(versions))} CUDA provider on one NVIDIA {setup['gpu']}, autotune {setup['commit']}; each "
        f"model a {'/'.join(str(t) for t in sorted(trials))}-trial study run after the grid bench, profiled by "
        f"finalize's `profile_study` ({min(written)[:16]} to {max(written)[:16]} UTC). Read them differently "
        "from the CPU rows:",
        "",
        f"- {note[:1].upper()}{note[1:]} (the PyPI `onnxruntime-gpu` wheel). A GPU row's shares are shares of the "
        "host's time launching each node's work, not of GPU time: the GEMM share says how much of the launching "
        "the convolutions and matrix multiplies take, not how much of the GPU they keep busy.",
        "- Compared with: `profile_study`'s default, the study's answer (its best throughput, at its batch) "
        "against the defaults at that batch, with the paired measurement from the study; not the batch-1 "
        'answer as in the CPU rows. "defaults fail the gate": the defaults at that batch miss the accuracy '
        "gate, and the answer is the fastest configuration that passes it.",
        "- CUDA graph: the profiler cannot see graph replays, so `profile_onnxruntime` drops cuda_graph; "
        + (
            f"the answers of {' and '.join(graph)} run with cuda_graph=True and were profiled without it, so "
            "their node times include the per-node launches the graph replaces and the graph's gain does not show."
            if graph
            else "no answer here uses it."
        ),
        "- Per-kernel device times (CUPTI) need an ONNX Runtime built with `--enable_cuda_profiling`; these rows "
        "cover the CUDA provider only, not TensorRT's per-layer `IProfiler` times.",
        "- Stored before issue 30: each GPU profile is a single run (no spread, no reference column), and its "
        "diagnoses name the model's nodes, not the graph that ran (ppocr_v4_det's BatchNorm line still names "
        "`Conv p2o.Conv.1`, which has no BatchNorm after it); a device run with this code would redo them.",
        "",
    ]
    return rows, paragraph, sections


def render(metas: dict[str, dict[str, Any]], gpu_dir: Path | None) -> str:
    from autotune.profile import spread_statement
    from autotune.profile_render import spread_phrase

    sections, rows, written, host, verdicts, repeats = [], [], [], None, [], set()
    for name in MODELS:
        study, data = load(name)
        written.append(data["written"])
        repeats.add(data["defaults"].get("repeats") or 1)
        verdicts.append(_verdict_line(name, metas.get(name, {}), data))
        host = host or metas.get(name, {}).get("host")
        device = f"CPU, ONNX Runtime {_ort_version(data['defaults'])}"
        rows.append(_row(name, device, metas.get(name, {}).get("role", "?"), data, metas.get(name)))
        sections += model_section(name, study, data, metas.get(name, {}))
    gpu_rows, gpu_paragraph, gpu_sections = gpu_part(gpu_dir)
    when = datetime.fromisoformat(max(written)).isoformat(timespec="minutes")
    head = [
        "# Where the time goes: defaults vs the answer (issues 16 and 30)",
        "",
        "`.venv/bin/python bench/profile_table.py` (never run in CI). Each CPU model: a short study on the ONNX",
        f"Runtime CPU target (`{SPACE.relative_to(ROOT)}`: graph level, INT8 with `keep_float_layers` 0 or",
        "non_gemm, the BatchNorm fold), then `autotune.profile.profile_study` (what finalize and",
        "`autotune profile --trial N` run) profiles the defaults at batch 1 and the batch-1 answer (where the",
        "defaults stayed the answer: the finalist that lost the paired comparison, to show what its knobs",
        f"changed) {'/'.join(str(r) for r in sorted(repeats))} times each, interleaved (defaults, compared, defaults, ...), with",
        "ONNX Runtime's profiler, outside every timed measurement. Node times are medians over the repeats of the",
        "mean per run; each share is the median of the repeats with their range (low-high). **The stated spread**",
        f"is that range: the {spread_phrase(spread_statement(max(repeats)))}. A change between the",
        "defaults and the compared trial whose ranges overlap is inside the spread: no measured difference.",
        "",
        "**ONNX Runtime's own profiler** column: for reference, apart from autotune's code path, one plain",
        "`InferenceSession` with the trial's session options and `enable_profiling`, profiled in the same rounds as",
        "autotune's, interleaved (defaults, reference of the defaults, compared, reference of the compared, ...),",
        f"{REFERENCE_WARMUP_RUNS} warm-up runs then as many runs as autotune's profile, the GEMM share of the summed",
        'Node events; its median over the rounds (its range in brackets) is "inside" when it lies within autotune\'s',
        "range. That comparison is a test with a known false alarm rate: were both profilers measuring the same",
        f"share, the median of {max(repeats)} reference rounds would fall outside the range of {max(repeats)} autotune runs "
        f"{median_outside_chance(max(repeats), max(repeats)):.0%} of the time.",
        "",
        "**ONNX Runtime's own profiler within autotune's stated spread**, per model (GEMM share; defaults, compared):",
        "",
        *verdicts,
        "",
        "Diagnoses are checked against the graph that ran (ONNX Runtime's optimized graph, as its profile lists",
        "it): they name only nodes that ran in the configuration they talk about, under the runtime's names",
        "(an unnamed node as `<OpType>_<index>`), with their median time; a pattern of the model that the",
        "runtime's own optimizations removed is said to be so, with no node named.",
        "",
        f"Host: {host or _host()} (shared with other jobs); CPU profiles written {when}.",
        "",
        "| model | device | compared with the defaults | GEMM share, defaults | GEMM share, compared | ONNX Runtime's own profiler: GEMM share vs autotune's range (defaults; compared) | data movement | diagnoses |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        *gpu_rows,
        "",
        *gpu_paragraph,
    ]
    return "\n".join(head + sections + gpu_sections)


def _verdict_line(name: str, meta: dict[str, Any], data: dict[str, Any]) -> str:
    """One model's answer to "is ONNX Runtime's own profiler within autotune's stated spread"."""
    references = meta.get("reference") or {}
    if not references.get("defaults", {}).get("rounds"):
        return f"- {name}: not measured with an interleaved reference"
    defaults, best = data["defaults"], data["best"] or data["defaults"]
    pairs = (("defaults", references["defaults"], defaults), ("compared", references["compared"], best))
    parts = [f"{label} {_reference_verdict(ref, own)}" for label, ref, own in pairs]
    inside = [reference_inside(ref, own) for _, ref, own in pairs]
    answer = "yes" if all(inside) else "partly" if any(inside) else "no"
    return f"- {name}: **{answer}**: " + "; ".join(parts)


def _host() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per study (default 5)")
    parser.add_argument("--render", action="store_true", help="rewrite PROFILE.md from the stored studies")
    parser.add_argument(
        "--gpu-profiles",
        type=Path,
        default=GPU_PROFILES,
        help=f"a device run's directory of MODEL-profile.json and MODEL-study.json (default {GPU_PROFILES.relative_to(ROOT)})",
    )
    parser.add_argument("--no-gpu", action="store_true", help="leave the GPU rows out (a placeholder row)")
    parser.add_argument("--models", nargs="*", help="tune only these (the others' stored studies are kept)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=PROFILE_REPEATS,
        help=f"profiles of each configuration (default {PROFILE_REPEATS})",
    )
    args = parser.parse_args()
    metas: dict[str, dict[str, Any]] = {}
    if (OUT / "runs.json").is_file():
        metas = json.loads((OUT / "runs.json").read_text())
    if not args.render:
        for name in MODELS:
            if args.models and name not in args.models:
                continue
            wall_s = tune(name, args.trials)
            metas[name] = {"wall_s": wall_s, "host": _host(), **profile(name, args.repeats)}
            print(f"{name}: {wall_s:.0f} s; compared with {metas[name]['role']}", flush=True)
            (OUT / "runs.json").write_text(json.dumps(metas))
    TABLE.write_text(render(metas, None if args.no_gpu else args.gpu_profiles))
    print(TABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
