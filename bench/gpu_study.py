"""GPU figures for the onnxruntime target on the CUDA execution provider (issue 7).

Runs on a machine with onnxruntime-gpu and a GPU (the lent H100; see bench/RESULTS-GPU.md for
the exact device commands):

    python bench/gpu_study.py export                      # models into bench/models/
    python bench/gpu_study.py study NAME MODEL [--shape S] [--trials 30] [--budget 4m]
    python bench/gpu_study.py render                      # bench/gpu_results/ISSUE7.md (issue 7's figures)

`study` tunes MODEL with the README's command (`autotune start MODEL --trials N`, in the
foreground, trials in Ray workers holding one GPU each), then reads the study back and writes
bench/gpu_results/NAME.json: CUDA-EP default latency at batch 1 (trial 0), the tuned latency
at batch 1 with its paired speedup (A/B interleaved in one process), the best throughput over
batch sizes, trials to reach 95% of the best, and the card, driver and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "gpu_results"
sys.path.insert(0, str(ROOT))


def export_models() -> dict[str, str]:
    """The CNN detector (PP-OCRv4 det, trained, carried or from rapidocr) and a MiniLM-sized
    BERT encoder (6 layers, hidden 384, 12 heads, seq 128, random weights) exported here."""
    import torch
    from transformers import BertConfig, BertModel

    sys.path.insert(0, str(HERE))
    from models import _export_torch  # bench/models.py

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
            self.bert = BertModel(config, add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sequence = 128
    bert = _export_torch(
        "minilm_l6_h384",
        Encoder,
        (torch.randint(0, 30522, (1, sequence)), torch.ones(1, sequence, dtype=torch.int64)),
        ["input_ids", "attention_mask"],
        {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}},
    )
    return {"minilm_l6_h384": str(bert)}


def environment() -> dict[str, str]:
    from importlib import metadata

    import onnxruntime as ort

    facts = {"python": platform.python_version(), "onnxruntime": ort.__version__}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout.strip().splitlines()  # fmt: skip
        facts["gpu"], facts["driver"], facts["gpu_memory"] = (s.strip() for s in smi[0].split(","))
        facts["gpus_visible"] = str(len(smi))
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30, check=False).stdout
        facts["cuda_driver_api"] = next((p.split()[0] for p in head.split("CUDA Version:")[1:]), "")
    except Exception as exc:  # noqa: BLE001
        facts["gpu"] = f"unknown ({exc})"
    for dist in ("nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime", "ray", "optuna", "onnx"):
        try:
            facts[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return facts


def run_study(name: str, model: Path, shapes: list[str], trials: int, budget: str, results_dir: Path) -> dict:
    cmd = ["autotune", "start", str(model), "--study", name, "--results-dir", str(results_dir), "--trials",
           str(trials), "--budget", budget, "--foreground", "--trial-timeout", "3m"]  # fmt: skip
    for shape in shapes:
        cmd += ["--shape", shape]
    print("$", " ".join(cmd), flush=True)
    start = time.monotonic()
    code = subprocess.run(cmd, check=False).returncode
    return {"command": " ".join(cmd), "exit_code": code, "wall_s": time.monotonic() - start}


def figures(name: str, results_dir: Path) -> dict:
    """Reads the finished study back and measures the paired speedup of the best batch-1 trial."""
    import optuna

    from autotune.model import load_model_info, synthetic_pool
    from autotune.study import quiet_optuna
    from autotune.trial import PairedRequest, run_paired, transform_model

    quiet_optuna()
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{results_dir / name / 'study.db'}")
    rows = []
    for t in study.trials:
        a = t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name, "config": t.params, "batch_size": a.get("batch_size"),
            "latency_ms_p50": a.get("latency_ms_p50"), "throughput": a.get("throughput"),
            "passed": a.get("passed"), "normalized_error": a.get("normalized_error"), "reason": a.get("reason", ""),
            "stopped_by": a.get("stopped_by"),
        })  # fmt: skip
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["passed"] and r["latency_ms_p50"]]
    default = next(r for r in rows if r["number"] == 0)
    b1 = [r for r in feasible if r["batch_size"] == 1]
    best_b1 = min(b1, key=lambda r: r["latency_ms_p50"])
    best_tp = max(feasible, key=lambda r: r["throughput"])
    reach_lat = min(r["number"] for r in b1 if r["latency_ms_p50"] <= best_b1["latency_ms_p50"] / 0.95) + 1
    reach_tp = min(r["number"] for r in feasible if r["throughput"] >= 0.95 * best_tp["throughput"]) + 1

    info = load_model_info(Path(study.user_attrs["model_path"]))
    overrides = {k: tuple(v) for k, v in study.user_attrs.get("shape_overrides", {}).items()}
    pool = synthetic_pool(info, overrides, 0)
    with tempfile.TemporaryDirectory() as tmp:
        from autotune.targets.onnxruntime import OnnxRuntimeTarget

        kernels = OnnxRuntimeTarget().precision_kernels
        models = []
        for label, row in (("a", default), ("b", best_b1)):
            path = Path(tmp) / f"{label}.onnx"
            transform_model(info.path, row["config"], path, calibration_feeds=[], scheme="asymmetric_u8",
                            kernels=kernels)  # fmt: skip
            models.append(path)
        paired = run_paired(PairedRequest(
            target_name="onnxruntime", target_options=__import__("autotune.targets.base").targets.base.TargetOptions(),
            model_a=models[0], config_a=default["config"], model_b=models[1], config_b=best_b1["config"],
            input_pool=pool, dynamic_batch=info.dynamic_batch, workdir=Path(tmp) / "paired", rounds=21,
        ))  # fmt: skip
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {
        "study": name, "model": str(info.path.name), "trials": len(rows), "states": counts,
        "default_b1": default, "best_b1": best_b1, "best_throughput": best_tp,
        "trials_to_95pct_b1_latency": reach_lat, "trials_to_95pct_throughput": reach_tp,
        "paired_b1": paired, "elapsed_s": study.user_attrs.get("elapsed_s"),
        "pruned_or_failed": [r for r in rows if r["state"] in ("PRUNED", "FAIL")],
    }  # fmt: skip


def render() -> Path:
    # bench/RESULTS-GPU.md is now written by bench/gpu_grid.py (issue 10); these are issue 7's figures.
    out = RESULTS / "ISSUE7.md"
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if not p.name.endswith("-grid.json")]
    lines = [
        "# GPU results: ONNX Runtime CUDA execution provider, tuned end to end",
        "",
        "Written by `bench/gpu_study.py render` from `bench/gpu_results/*.json` (see that script).",
        "",
        "| model | CUDA-EP default, b1 (ms) | tuned, b1 (ms) | paired speedup b1 (p25-p75) | best throughput (samples/s, batch) "
        "| trials to 95% (b1 latency / throughput) | trials (complete/pruned/failed) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        f = run["figures"]
        p = f["paired_b1"]
        s = f["states"]
        lines.append(
            f"| {f['model']} | {f['default_b1']['latency_ms_p50']:.3f} | {f['best_b1']['latency_ms_p50']:.3f} "
            f"| {p['speedup_median']:.2f}x ({p['speedup_p25']:.2f}-{p['speedup_p75']:.2f}) "
            f"| {f['best_throughput']['throughput']:.0f} (b{f['best_throughput']['batch_size']}) "
            f"| {f['trials_to_95pct_b1_latency']} / {f['trials_to_95pct_throughput']} "
            f"| {s.get('COMPLETE', 0)}/{s.get('PRUNED', 0)}/{s.get('FAIL', 0)} |"
        )
    for run in runs:
        f = run["figures"]
        lines += ["", f"## {f['model']}", "", f"- command: `{run['study_run']['command']}`",
                  f"- best batch-1 configuration (trial {f['best_b1']['number']}): `{json.dumps(f['best_b1']['config'])}`",
                  f"- best-throughput configuration (trial {f['best_throughput']['number']}): "
                  f"`{json.dumps(f['best_throughput']['config'])}`",
                  f"- paired A/B (A = trial 0 defaults, B = best b1, 21 interleaved rounds): "
                  f"{p_ms(f['paired_b1'])}"]  # fmt: skip
        for r in f["pruned_or_failed"]:
            lines.append(f"- trial {r['number']} {r['state'].lower()}: {r['reason'][:200]}")
    if runs:
        env = runs[0]["environment"]
        lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in env.items()]
    out.write_text("\n".join(lines) + "\n")
    return out


def p_ms(p: dict) -> str:
    return f"A {p['a_ms_per_sample_median']:.3f} ms/sample, B {p['b_ms_per_sample_median']:.3f} ms/sample"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("export")
    study = sub.add_parser("study")
    study.add_argument("name")
    study.add_argument("model", type=Path)
    study.add_argument("--shape", action="append", default=[])
    study.add_argument("--trials", type=int, default=30)
    study.add_argument("--budget", default="4m")
    study.add_argument("--results-dir", type=Path, default=Path(os.environ.get("RESULTS_DIR", "results")))
    sub.add_parser("render")
    args = parser.parse_args()
    if args.cmd == "export":
        print(json.dumps(export_models()))
    elif args.cmd == "study":
        run = run_study(args.name, args.model, args.shape, args.trials, args.budget, args.results_dir)
        RESULTS.mkdir(exist_ok=True)
        record = {"study_run": run, "environment": environment(), "figures": figures(args.name, args.results_dir)}
        (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2, default=str))
        print(json.dumps(record["figures"], default=str)[:3000])
    else:
        print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
