"""Where the time goes on two CPU models: the defaults against the study's answer (issue 16).

    .venv/bin/python bench/profile_table.py [--trials N] [--render]

For each model a short study on the ONNX Runtime CPU target with the default space
(`autotune start MODEL --foreground`, in this process); then the defaults at batch 1 and the
batch-1 answer (or, where the defaults stayed the answer, the finalist that lost the paired
comparison) are profiled with ONNX Runtime's profiler (`autotune.profile.profile_study`), and
this script tabulates the stored `profile.json`: time by op class, the GEMM-class share before and
after, the top nodes and the diagnoses. The models: the bundled `examples/example.onnx` (generated, with the seed's
patterns) and the trained PP-OCRv4 text recognizer from the `rapidocr-onnxruntime` wheel
(`bench/models.py`; dynamic H and W, fixed with `--shape`).

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
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import models as bench_models  # noqa: E402

from autotune.profile import CLASS_TITLES, OP_CLASSES, PROFILE_FILE, status_phrase  # noqa: E402

OUT = BENCH / "out" / "profile"
TABLE = BENCH / "PROFILE.md"
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
    from autotune.report import stored_answers

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
    import optuna

    from autotune.study import quiet_optuna

    quiet_optuna()
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{OUT / name / 'study.db'}")
    return study, json.loads((OUT / name / PROFILE_FILE).read_text())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def model_section(name: str, study: Any, data: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    from autotune.report import config_summary, default_trial, headline

    defaults, best = data["defaults"], data["best"] or data["defaults"]
    zero = default_trial(study)
    role = meta.get("role", "the answer")
    lines = [f"## {name}", ""]
    lines += [f"- model: `{Path(study.user_attrs['model_path']).name}`; {defaults['source']}, {defaults['runs']} runs"]
    wall_s = meta.get("wall_s")
    lines += [
        f"- study: {study.user_attrs.get('n_trials')} trials" + (f", {wall_s:.0f} s with finalize" if wall_s else "")
    ]
    lines += [f"- {line.replace('**', '')}" for line in headline(study)]
    lines += [
        f"- compared: trial {defaults['trial']} (defaults, batch {defaults['batch_size']}) with {role}: "
        f"{config_summary(best['config'], zero.params if zero else {})}, batch {best['batch_size']}"
    ]
    lines += ["", "| class | defaults ms | share | compared ms | share |", "|---|---|---|---|---|"]
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
        f"GEMM-class share: **{_pct(defaults['gemm_share'])} -> {_pct(best['gemm_share'])}**",
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
        lines.append(f"- {item['title']}{state}: {nodes or '-'}; {search}")
    if not data["diagnoses"]:
        lines.append("- none")
    return lines + [""]


def render(metas: dict[str, dict[str, Any]]) -> str:
    sections, rows = [], []
    for name in MODELS:
        study, data = load(name)
        defaults, best = data["defaults"], data["best"] or data["defaults"]
        rows.append(
            f"| {name} | CPU, ONNX Runtime {defaults['source'].split()[2]} | {metas.get(name, {}).get('role', '?')} | "
            f"{_pct(defaults['gemm_share'])} | {_pct(best['gemm_share'])} | "
            f"{_pct(defaults['by_class_ms']['data_movement'] / defaults['total_ms'])} -> "
            f"{_pct(best['by_class_ms']['data_movement'] / best['total_ms'])} | {len(data['diagnoses'])} |"
        )
        sections += model_section(name, study, data, metas.get(name, {}))
    head = [
        "# Where the time goes: defaults vs the answer (issue 16)",
        "",
        "`.venv/bin/python bench/profile_table.py` (never run in CI). Each model: a short study on the ONNX",
        "Runtime CPU target with the default space, then `autotune.profile.profile_study` (what finalize and",
        "`autotune profile --trial N` run) profiles the defaults at batch 1 and the batch-1 answer (where the",
        "defaults stayed the answer: the finalist that lost the paired comparison, to show what its knobs",
        "changed) once each with ONNX Runtime's profiler, outside every timed measurement. Node times are",
        "means per run, summed per node; shares are of that sum. Diagnoses name the nodes of the original",
        "model (unnamed nodes as `node_of_<output>`, as TensorRT's parser names them).",
        "",
        f"Host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs); "
        f"written {datetime.now(timezone.utc).isoformat(timespec='minutes')}.",
        "",
        "| model | device | compared with the defaults | GEMM share, defaults | GEMM share, compared | data movement | diagnoses |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "| (GPU model) | H100, ONNX Runtime CUDA provider | - | not measured | not measured | - | - |",
        "",
        "**GPU row: not measured.** The lent H100 was out of reach in this session, so the CUDA",
        "provider's profile (per-kernel device times, which need an ONNX Runtime built with",
        "`--enable_cuda_profiling`; the PyPI `onnxruntime-gpu` wheel gives host-side launch times per node,",
        "and `profile.json` says so) and TensorRT's IProfiler per-layer times are written but untested",
        "on a GPU. Run `autotune profile STUDY` on a finished CUDA-provider study to fill it in.",
        "",
    ]
    return "\n".join(head + sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per study (default 10)")
    parser.add_argument("--render", action="store_true", help="rewrite PROFILE.md from the stored studies")
    args = parser.parse_args()
    metas: dict[str, dict[str, Any]] = {}
    if not args.render:
        for name in MODELS:
            wall_s = tune(name, args.trials)
            metas[name] = {"wall_s": wall_s, "role": profile(name)}
            print(f"{name}: {wall_s:.0f} s; compared with {metas[name]['role']}", flush=True)
        (OUT / "runs.json").write_text(json.dumps(metas))
    elif (OUT / "runs.json").is_file():
        metas = json.loads((OUT / "runs.json").read_text())
    TABLE.write_text(render(metas))
    print(TABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
