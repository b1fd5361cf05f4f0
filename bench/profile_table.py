"""Where the time goes on two CPU models and the stored GPU profiles: the defaults against the
study's answer (issue 16).

    .venv/bin/python bench/profile_table.py [--trials N] [--render] [--gpu-profiles DIR | --no-gpu]

For each model a short study on the ONNX Runtime CPU target with the default space
(`autotune start MODEL --foreground`, in this process); then the defaults at batch 1 and the
batch-1 answer (or, where the defaults stayed the answer, the finalist that lost the paired
comparison) are profiled with ONNX Runtime's profiler (`autotune.profile.profile_study`), and
this script tabulates the stored `profile.json`: time by op class, the GEMM-class share before and
after, the top nodes and the diagnoses. The models: the bundled `examples/example.onnx` (generated, with the seed's
patterns) and the trained PP-OCRv4 text recognizer from the `rapidocr-onnxruntime` wheel
(`bench/models.py`; dynamic H and W, fixed with `--shape`).

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

from autotune.profile import CLASS_TITLES, OP_CLASSES, PROFILE_FILE, status_phrase  # noqa: E402

OUT = BENCH / "out" / "profile"
TABLE = BENCH / "PROFILE.md"
GPU_PROFILES = BENCH / "gpu_results" / "run4"
MAX_MEASURE_S = "0.3"

# name -> (model path factory, --shape flags)
MODELS = {
    "example": (lambda: ROOT / "examples" / "example.onnx", []),
    "ppocr_v4_rec": (bench_models.ppocr_v4_rec, ["--shape", "x:1,3,48,320"]),
}


def tune(name: str, trials: int) -> float:
    """Runs the study of `name` from scratch; returns its wall time in seconds."""
    from autotune.cli import main

    factory, shape = MODELS[name]
    shutil.rmtree(OUT / name, ignore_errors=True)
    argv = ["start", str(factory()), "--foreground", "--study", name, "--results-dir", str(OUT), "--target"]
    argv += ["onnxruntime", "--trials", str(trials), "--max-measure-s", MAX_MEASURE_S, *shape]
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


def profile(name: str) -> str:
    """Profiles the defaults against `compared_trial` (rewrites the study's profile.json)."""
    from autotune.profile import profile_study

    study, _ = load(name)
    number, role = compared_trial(study)
    profile_study(study, number)
    return role


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
    from autotune.profile import _MARKER_OPS

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
            f"| {CLASS_TITLES[cls]} | {a:.4g} | {_pct(a / defaults['total_ms'])} | {b:.4g} | "
            f"{_pct(b / best['total_ms'])} |"
        )
    lines += [
        f"| total (node sum; run) | {defaults['total_ms']:.4g}; {defaults['run_ms']:.4g} | | "
        f"{best['total_ms']:.4g}; {best['run_ms']:.4g} | |",
        "",
        f"GEMM-class share: **{_pct(defaults['gemm_share'])} -> {_pct(best['gemm_share'])}**"
        + (" (of host-side launch time)" if unit == "launch ms" else ""),
        "",
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


def _row(name: str, device: str, role: str, data: dict[str, Any]) -> str:
    defaults, best = data["defaults"], data["best"] or data["defaults"]
    return (
        f"| {name} | {device} | {role} | {_pct(defaults['gemm_share'])} | {_pct(best['gemm_share'])} | "
        f"{_pct(defaults['by_class_ms']['data_movement'] / defaults['total_ms'])} -> "
        f"{_pct(best['by_class_ms']['data_movement'] / best['total_ms'])} | {len(data['diagnoses'])} |"
    )


def gpu_part(directory: Path | None) -> tuple[list[str], list[str], list[str]]:
    """(table rows, paragraph, sections) for the stored GPU profiles in `directory`."""
    names = gpu_studies(directory) if directory is not None and directory.is_dir() else []
    if not names:
        return (
            ["| (GPU model) | ONNX Runtime CUDA provider | - | not measured | not measured | - | - |"],
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
        "",
    ]
    return rows, paragraph, sections


def render(metas: dict[str, dict[str, Any]], gpu_dir: Path | None) -> str:
    sections, rows, written, host = [], [], [], None
    for name in MODELS:
        study, data = load(name)
        written.append(data["written"])
        host = host or metas.get(name, {}).get("host")
        device = f"CPU, ONNX Runtime {_ort_version(data['defaults'])}"
        rows.append(_row(name, device, metas.get(name, {}).get("role", "?"), data))
        sections += model_section(name, study, data, metas.get(name, {}))
    gpu_rows, gpu_paragraph, gpu_sections = gpu_part(gpu_dir)
    when = datetime.fromisoformat(max(written)).isoformat(timespec="minutes")
    head = [
        "# Where the time goes: defaults vs the answer (issue 16)",
        "",
        "`.venv/bin/python bench/profile_table.py` (never run in CI). Each CPU model: a short study on the ONNX",
        "Runtime CPU target with the default space, then `autotune.profile.profile_study` (what finalize and",
        "`autotune profile --trial N` run) profiles the defaults at batch 1 and the batch-1 answer (where the",
        "defaults stayed the answer: the finalist that lost the paired comparison, to show what its knobs",
        "changed) once each with ONNX Runtime's profiler, outside every timed measurement. Node times are",
        "means per run, summed per node; shares are of that sum. Diagnoses name the nodes of the original",
        "model (unnamed nodes as `node_of_<output>`, as TensorRT's parser names them).",
        "",
        f"Host: {host or _host()} (shared with other jobs); CPU profiles written {when}.",
        "",
        "| model | device | compared with the defaults | GEMM share, defaults | GEMM share, compared | data movement | diagnoses |",
        "|---|---|---|---|---|---|---|",
        *rows,
        *gpu_rows,
        "",
        *gpu_paragraph,
    ]
    return "\n".join(head + sections + gpu_sections)


def _host() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per study (default 10)")
    parser.add_argument("--render", action="store_true", help="rewrite PROFILE.md from the stored studies")
    parser.add_argument(
        "--gpu-profiles",
        type=Path,
        default=GPU_PROFILES,
        help=f"a device run's directory of MODEL-profile.json and MODEL-study.json (default {GPU_PROFILES.relative_to(ROOT)})",
    )
    parser.add_argument("--no-gpu", action="store_true", help="leave the GPU rows out (a placeholder row)")
    args = parser.parse_args()
    metas: dict[str, dict[str, Any]] = {}
    if not args.render:
        for name in MODELS:
            wall_s = tune(name, args.trials)
            metas[name] = {"wall_s": wall_s, "role": profile(name), "host": _host()}
            print(f"{name}: {wall_s:.0f} s; compared with {metas[name]['role']}", flush=True)
        (OUT / "runs.json").write_text(json.dumps(metas))
    elif (OUT / "runs.json").is_file():
        metas = json.loads((OUT / "runs.json").read_text())
    TABLE.write_text(render(metas, None if args.no_gpu else args.gpu_profiles))
    print(TABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
