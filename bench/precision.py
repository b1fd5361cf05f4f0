"""bench/PRECISION.md: FP32 defaults vs full INT8 vs repaired mixed INT8, on real data.

For each model: its real samples are split (`autotune.calibration.split_samples`: calibration
never sees a verification sample), then ONNX Runtime CPU candidates are built:
  fp32                   the onnxruntime space's trial-0 defaults (no passes, FP32)
  int8 METHOD            the whole graph quantized (the target's asymmetric_u8 scheme; the output's
                         post-processing stays float), calibrated with METHOD
  non_gemm METHOD        int8 with keep_float_layers=non_gemm: only Conv/Gemm/MatMul in INT8 (--non-gemm)
  repaired(GATE) METHOD  int8 with keep_float_layers=auto: the fewest most-sensitive layers kept
                         in FP32 so that GATE passes on calibration data
  speed-repaired(GATE) METHOD  keep_float_layers=non_gemm_auto: full INT8, else non_gemm, else that
                         with the fewest most-sensitive Conv/Gemm/MatMul float (--repairs)
  gemm-repaired(GATE) METHOD   keep_float_layers=gemm_auto: full INT8 but the fewest most-sensitive
                         Conv/Gemm/MatMul float (--repairs)
GATE is "max" (autotune's default: max abs error of each output field over its range, 1%) or
"task" (the model's task gate at 1%, `precision_metrics.TASK_GATES`: top-1 agreement, character
error rate, detections, text mask), "cosine" (cosine similarity >= 0.99 alone) or "posthoc"
(the detectors' second task gate, `precision_metrics.POSTHOC_GATES`, chosen after the first failed). Every
candidate's error is reported under the max-error and task gates and as cosine similarity, on
the held-out verification samples; speed is
`autotune.measure.paired_speedup` of each INT8 candidate against fp32, interleaved, same run.
With --tensorrt-rtx, the repaired layers are also quantized with the symmetric (TensorRT)
scheme and built with TensorRT-RTX on CPU; the engine's layer table gives the precisions.

    .venv/bin/python bench/precision.py --models ppocr_v4_rec yolox_det --methods minmax percentile \
        --gates task max --out bench/out/precision-gates
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from precision_metrics import POSTHOC_GATES, TASK_GATES, truth_cer  # noqa: E402  (bench/ is this script's directory)

from autotune.calibration import split_samples  # noqa: E402
from autotune.measure import paired_speedup  # noqa: E402
from autotune.model import load_model_info  # noqa: E402
from autotune.space import load_space  # noqa: E402
from autotune.targets import target_class  # noqa: E402
from autotune.targets.base import TargetOptions  # noqa: E402
from autotune.trial import transform_model  # noqa: E402
from autotune.verify import Tolerance, compare_outputs  # noqa: E402

GATE = Tolerance(max_error=1e-2)


def gates_for(name: str) -> dict[str, Tolerance]:
    """The 1% gates: autotune's default max-error gate, the model's task gate, and cosine
    similarity >= 0.99 alone (`--min-cosine 0.99` with no max-error limit)."""
    return {
        "max": GATE,
        "task": Tolerance(metric=TASK_GATES[name]),
        "cosine": Tolerance(max_error=float("inf"), min_cosine=0.99),
        **({"posthoc": Tolerance(metric=POSTHOC_GATES[name])} if name in POSTHOC_GATES else {}),
    }


MODELS = ROOT / "models"


def inputs_for(name: str) -> Path:
    path = MODELS / f"{name}_inputs.npz"
    if not path.exists():
        raise SystemExit(f"{path}: no real inputs (run bench/precision_inputs.py for the OCR crops)")
    return path


def held_out_texts(name: str, pool: dict) -> tuple[list[str], list[str]] | None:
    """(the true texts of the held-out samples, the charset) where the inputs were rendered from
    known text (ddddocr_rec's captcha lines); None otherwise."""
    path = MODELS / f"{name}_texts.json"
    if name != "ddddocr_rec" or not path.exists():
        return None
    from models import ddddocr_charset

    from autotune.calibration import VERIFY_EVERY

    texts = json.loads(path.read_text())
    count = len(next(iter(pool.values())))
    if len(texts) != count:
        raise SystemExit(f"{path}: {len(texts)} texts for {count} samples (run bench/precision_inputs.py again)")
    # split_samples holds out every VERIFY_EVERY-th sample from the second on (batch dim dynamic)
    return texts[1::VERIFY_EVERY], ddddocr_charset()


def measure(
    name: str,
    rounds: int,
    round_s: float,
    tensorrt_rtx: bool,
    out: Path,
    methods: list[str] = ("minmax",),
    gates: list[str] = ("max",),
    non_gemm: bool = False,
    repairs: list[str] = ("auto",),
) -> dict:
    model_path = MODELS / f"{name}.onnx"
    info = load_model_info(model_path)
    with np.load(inputs_for(name)) as data:
        pool = {key: data[key] for key in data.files}
    split = split_samples(pool, info)
    verification = split.verification_pool
    target = target_class("onnxruntime")(TargetOptions())
    space = load_space(ROOT.parent / "autotune" / "search_spaces" / "onnxruntime.yaml", target)
    defaults = space.default_config()
    defaults.pop("batch_size", None)
    judges = gates_for(name)
    candidates: dict[str, tuple[dict, Tolerance]] = {"fp32": (defaults, GATE)}
    for method in methods:
        int8 = {**defaults, "precision": "int8", "calibration_method": method}
        candidates[f"int8 {method}"] = (int8, GATE)
        if non_gemm:
            candidates[f"non_gemm {method}"] = ({**int8, "keep_float_layers": "non_gemm"}, GATE)
        for gate in [gate for gate in gates if gate in judges]:
            for repair in repairs:
                label = {"auto": "repaired", "non_gemm_auto": "speed-repaired", "gemm_auto": "gemm-repaired"}[repair]
                candidates[f"{label}({gate}) {method}"] = ({**int8, "keep_float_layers": repair}, judges[gate])
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    reference = dict(zip([o.name for o in session.get_outputs()], session.run(None, verification), strict=True))
    truth = held_out_texts(name, pool)
    row: dict = {"model": name, **split.sizes(), "candidates": {}}
    sessions, timers = {}, {}
    for label, (config, gate) in candidates.items():
        workdir = out / name / label.replace(" ", "_").replace("(", "-").replace(")", "")
        workdir.mkdir(parents=True, exist_ok=True)
        details: dict = {}
        t0 = time.perf_counter()
        transform_model(model_path, config, workdir / "model.onnx", calibration_feeds=split.calibration_feeds,
                        scheme=target.quantization_scheme, tolerance=gate, precision_details=details,
                        sensitivity_cache=out / name / "sensitivity-cache")  # fmt: skip
        transform_s = time.perf_counter() - t0
        shapes = {k: list(v.shape) for k, v in verification.items()}
        built = target.build(workdir / "model.onnx", config, workdir, shapes)
        sessions[label] = target.open(built, config)
        outputs = sessions[label].infer(verification)
        held_out = {judge: compare_outputs(outputs, reference, tolerance) for judge, tolerance in judges.items()}
        posthoc = held_out.get("posthoc")
        timers[label] = sessions[label].timer(verification)
        row["candidates"][label] = {
            "config": config,
            "transform_s": round(transform_s, 1),
            "normalized_error": held_out["max"].normalized_error,
            "passed": held_out["max"].passed,
            "min_cosine": held_out["max"].min_cosine_similarity,
            "task_error": held_out["task"].normalized_error,
            "task_passed": held_out["task"].passed,
            "task_detail": held_out["task"].metric.detail if held_out["task"].metric else "",
            **(
                {
                    "posthoc_error": posthoc.normalized_error,
                    "posthoc_passed": posthoc.passed,
                    "posthoc_detail": posthoc.metric.detail if posthoc.metric else "",
                }
                if posthoc
                else {}
            ),  # fmt: skip
            **({"truth": truth_cer(outputs, *truth)} if truth else {}),
            "kept_float": details.get("kept_float", []),
            "kept_float_gemm": details.get("kept_float_gemm"),
            "quantized_layers": details.get("quantized_layers"),
            "top_offenders": details.get("sensitivity", [])[:5],
            "repair_checks": details.get("repair_checks"),
            "repair_passed": details.get("repair_passed"),
        }
        print(name, label, f"max-error {held_out['max'].normalized_error:.4g}",
              "passes" if held_out["max"].passed else "fails",
              f"cosine {held_out['max'].min_cosine_similarity:.5f}",
              f"task {held_out['task'].normalized_error:.4g}", "passes" if held_out["task"].passed else "fails",
              f"({row['candidates'][label]['task_detail']})",
              *([f"posthoc {posthoc.normalized_error:.4g}", "passes" if posthoc.passed else "fails",
                 f"({row['candidates'][label]['posthoc_detail']})"] if posthoc else []),
              *([f"CER vs true text {t['cer']:.4f}, case-folded {t['cer_nocase']:.4f}"
                 for t in [row["candidates"][label]["truth"]]] if truth else []),
              f"kept float {len(details.get('kept_float', []))}/{details.get('quantized_layers')}",
              *([f"(GEMM layers float: {len(details['kept_float_gemm'])})"] if "kept_float_gemm" in details else []),
              f"({transform_s:.0f} s)", flush=True)  # fmt: skip
    for label in [label for label in candidates if label != "fp32"]:
        paired = paired_speedup(timers["fp32"], timers[label], rounds=rounds, round_s=round_s)
        row["candidates"][label]["speedup_vs_fp32"] = paired.as_dict()
        print(name, label, f"speedup {paired.speedup_median:.3f} [{paired.speedup_p25:.3f}, {paired.speedup_p75:.3f}]",
              f"{paired.a_ms_per_sample_median:.1f} -> {paired.b_ms_per_sample_median:.1f} ms", flush=True)  # fmt: skip
    for session in sessions.values():
        session.close()
    if tensorrt_rtx:
        for label in [label for label in candidates if label.startswith("repaired")]:
            kept = row["candidates"][label]["kept_float"]
            row.setdefault("tensorrt_rtx", {})[label] = build_tensorrt_rtx(model_path, split, kept, out / name / "trt")
    return row


def build_tensorrt_rtx(model_path: Path, split, kept: list[str], workdir: Path) -> dict:
    """The repaired layer set, symmetric Q/DQ (TensorRT's scheme), built with TensorRT-RTX on CPU:
    the engine's layers by output datatype, and the datatypes of the layers that hold kept nodes."""
    import onnx

    from autotune.passes.precision import apply_precision, prepare_for_quantization
    from autotune.sensitivity import keep_float

    workdir.mkdir(parents=True, exist_ok=True)
    target = target_class("tensorrt-rtx")(TargetOptions(build_only=True))
    prepared = prepare_for_quantization(onnx.load(str(model_path)), "int8")
    quantized = apply_precision(prepared, "int8", calibration_feeds=split.calibration_feeds, keep_float=kept)
    if kept:
        quantized = keep_float(quantized, prepared, kept, fused=True)
    path = workdir / "model.onnx"
    onnx.save(quantized, str(path))
    # one sample's shape: the engine is built for the batch a deployment would run
    shapes = {k: [1, *v.shape[1:]] for k, v in split.verification_pool.items()}
    t0 = time.perf_counter()
    try:
        built = target.build(path, {"precision": "int8"}, workdir, shapes)
    except Exception as exc:  # noqa: BLE001 - a failed build is a result here
        return {"built": False, "reason": str(exc).splitlines()[0][:300], "kept_float": len(kept)}
    layers = built.info.get("layers", [])
    kept_set = set(kept)
    of_kept = [layer for layer in layers if kept_set & set(layer.get("onnx_nodes", []))]
    return {
        "built": True,
        "build_s": round(time.perf_counter() - t0, 1),
        "kept_float": len(kept),
        "layer_count": len(layers),
        "layers_by_output_datatype": _by_output_datatype(layers),
        "layers_holding_kept_nodes": _by_output_datatype(of_kept),
    }


def tensorrt_rtx_of_run(name: str, out: Path) -> dict:
    """TensorRT-RTX builds of every INT8 candidate of a finished run (`out`/NAME.json), each with
    the layers that candidate kept float."""
    row = json.loads((out / f"{name}.json").read_text())
    model_path = MODELS / f"{name}.onnx"
    with np.load(inputs_for(name)) as data:
        split = split_samples({key: data[key] for key in data.files}, load_model_info(model_path))
    builds = {}
    for label, candidate in row["candidates"].items():
        if label == "fp32":
            continue
        workdir = out / name / "trt" / label.replace(" ", "_").replace("(", "-").replace(")", "")
        builds[label] = build_tensorrt_rtx(model_path, split, candidate["kept_float"], workdir)
        print(name, label, json.dumps(builds[label]), flush=True)
    return builds


def tensorrt_rtx_mixed(name: str, keep: int, out: Path) -> dict:
    """INT8 (symmetric, TensorRT's scheme) with the `keep` most sensitive layers in float, built
    with TensorRT-RTX: what its layer table says runs in INT8 and in float."""
    import onnx

    from autotune.sensitivity import quantize_mixed

    model_path = MODELS / f"{name}.onnx"
    info = load_model_info(model_path)
    with np.load(inputs_for(name)) as data:
        split = split_samples({key: data[key] for key in data.files}, info)
    model, details = quantize_mixed(onnx.load(str(model_path)), "int8", calibration_feeds=split.calibration_feeds,
                                    scheme="symmetric", keep=keep)  # fmt: skip
    workdir = out / name / f"trt_keep{keep}"
    workdir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(workdir / "model.onnx"))
    target = target_class("tensorrt-rtx")(TargetOptions(build_only=True))
    shapes = {k: list(v.shape) for k, v in split.verification_pool.items()}
    try:
        built = target.build(workdir / "model.onnx", {"precision": "int8"}, workdir, shapes)
    except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
        return {"built": False, "reason": str(exc).splitlines()[0][:300], "kept_float": details["kept_float"]}
    layers = built.info.get("layers", [])
    kept = set(details["kept_float"])
    float_kept = [
        {"layer": layer["name"][:60], "datatypes": layer.get("datatypes")}
        for layer in layers
        if kept & set(layer.get("onnx_nodes", []))
    ]
    return {
        "built": True,
        "keep": keep,
        "quantized_layers": details["quantized_layers"],
        "kept_float": details["kept_float"],
        "layer_count": len(layers),
        "layers_by_output_datatype": _by_output_datatype(layers),
        "engine_layers_of_kept_nodes": float_kept[:8],
    }


def _by_output_datatype(layers: list[dict]) -> dict[str, int]:
    """Engine layers counted by their outputs' datatypes ("Float+Int8" for a mixed one)."""
    return dict(Counter("+".join(sorted(set(layer.get("datatypes", [])))) or "?" for layer in layers))


def markdown(out: Path) -> str:
    """The results table of bench/PRECISION.md from the per-model JSON files under `out`."""
    lines = [
        "| model | candidate | kept float | max-error gate (1%) | task gate (1%) | cosine | second task gate (1%) "
        "| speed vs FP32 defaults, paired median [p25, p75] | ms/sample FP32 -> candidate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.json")):
        row = json.loads(path.read_text())
        if "candidates" not in row:
            continue
        for label, c in row["candidates"].items():
            speed = c.get("speedup_vs_fp32")
            kept = "-" if label == "fp32" else f"{len(c['kept_float'])}/{c['quantized_layers']}"
            if c.get("kept_float_gemm") is not None:
                kept += f" ({len(c['kept_float_gemm'])} GEMM)"
            posthoc = (
                f"{c['posthoc_error']:.3g} {'pass' if c['posthoc_passed'] else 'FAIL'}" if "posthoc_error" in c else ""
            )
            lines.append(
                f"| {row['model']} | {label} | {kept} "
                f"| {c['normalized_error']:.3g} {'pass' if c['passed'] else 'FAIL'} "
                f"| {c['task_error']:.3g} {'pass' if c['task_passed'] else 'FAIL'} "
                f"| {c['min_cosine']:.4f} | {posthoc} "
                + (
                    f"| {speed['speedup_median']:.2f}x [{speed['speedup_p25']:.2f}, {speed['speedup_p75']:.2f}] "
                    f"| {speed['a_ms_per_sample_median']:.0f} -> {speed['b_ms_per_sample_median']:.0f} |"
                    if speed
                    else "| 1 | |"
                )
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ppocr_v4_det", "yolox_det", "ppocr_cls"])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--round-s", type=float, default=0.5)
    parser.add_argument("--methods", nargs="+", default=["minmax"], help="calibration methods of the INT8 candidates")
    parser.add_argument(
        "--gates", nargs="+", default=["max"], choices=["max", "task", "cosine", "posthoc"], help="gates to repair to"
    )
    parser.add_argument("--non-gemm", action="store_true", help="also int8 with every layer but Conv/Gemm/MatMul float")
    parser.add_argument(
        "--repairs", nargs="+", default=["auto"], choices=["auto", "non_gemm_auto", "gemm_auto"],
        help="keep_float_layers repairs: auto (repaired), non_gemm_auto (speed-repaired), gemm_auto (gemm-repaired)",
    )  # fmt: skip
    parser.add_argument("--tensorrt-rtx", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "precision")
    parser.add_argument(
        "--tensorrt-rtx-keep", type=int, help="only build TensorRT-RTX INT8 with this many layers float"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table of the JSON files under --out")
    parser.add_argument(
        "--tensorrt-rtx-of-run", action="store_true",
        help="build every INT8 candidate of the run under --out with TensorRT-RTX (its kept layers float)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.markdown:
        print(markdown(args.out))
        return
    if args.tensorrt_rtx_of_run:
        for name in args.models:
            builds = tensorrt_rtx_of_run(name, args.out)
            (args.out / f"{name}_tensorrt_rtx.json").write_text(json.dumps(builds, indent=2))
        return
    if args.tensorrt_rtx_keep is not None:
        rows = [tensorrt_rtx_mixed(name, args.tensorrt_rtx_keep, args.out) | {"model": name} for name in args.models]
        (args.out / f"tensorrt_rtx_keep{args.tensorrt_rtx_keep}.json").write_text(
            json.dumps(rows, indent=2, default=str)
        )
        print(json.dumps(rows, indent=1, default=str))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:  # one file per model, written as soon as it is measured
        row = measure(
            name,
            args.rounds,
            args.round_s,
            args.tensorrt_rtx,
            args.out,
            args.methods,
            args.gates,
            args.non_gemm,
            args.repairs,
        )
        (args.out / f"{name}.json").write_text(json.dumps(row, indent=2, default=str))
        print(f"wrote {args.out / f'{name}.json'}", flush=True)


if __name__ == "__main__":
    main()
