"""bench/PRECISION.md, calibration table: full INT8 per calibration method, with and without the
output's post-processing in float, judged on held-out real samples under three 1% gates.

Quantizes with `autotune.passes.precision.quantize_qdq` directly (ONNX Runtime CPU's scheme,
asymmetric_u8), `float_output_tail` off and on, for each calibration method; prints the held-out
error under the max-error gate, the task gate (`precision_metrics.TASK_GATES`) and the cosine.

    .venv/bin/python bench/precision_calibration.py yolox_det minmax entropy percentile
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from precision_metrics import TASK_GATES  # noqa: E402

from autotune.calibration import split_samples  # noqa: E402
from autotune.model import load_model_info  # noqa: E402
from autotune.passes.precision import output_tail, prepare_for_quantization, quantize_qdq  # noqa: E402
from autotune.sensitivity import _run  # noqa: E402
from autotune.verify import Tolerance, compare_outputs  # noqa: E402


def main() -> None:
    name, methods = sys.argv[1], sys.argv[2:] or ["minmax", "entropy", "percentile"]
    logging.getLogger().setLevel(logging.ERROR)
    model_path = ROOT / "models" / f"{name}.onnx"
    with np.load(ROOT / "models" / f"{name}_inputs.npz") as data:
        split = split_samples({key: data[key] for key in data.files}, load_model_info(model_path))
    prepared = prepare_for_quantization(onnx.load(str(model_path)), "int8")
    reference = _run(prepared, split.verification_pool)
    gates = {"max": Tolerance(max_error=0.01), "task": Tolerance(metric=TASK_GATES[name])}
    print(f"{name}: output post-processing = {len(output_tail(prepared))} nodes", flush=True)
    for method in methods:
        for float_tail in (False, True):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                quantized = quantize_qdq(prepared, "int8", calibration_feeds=split.calibration_feeds,
                                         scheme="asymmetric_u8", calibration_method=method,
                                         float_output_tail=float_tail)  # fmt: skip
            quantize_s = time.perf_counter() - t0
            outputs = _run(quantized, split.verification_pool)
            max_error, task = (compare_outputs(outputs, reference, gate) for gate in gates.values())
            print(
                f"| {name} | {method} | {'float' if float_tail else 'int8'} "
                f"| {max_error.normalized_error:.3g} {'pass' if max_error.passed else 'FAIL'} "
                f"| {task.normalized_error:.3g} {'pass' if task.passed else 'FAIL'} ({task.metric.detail}) "
                f"| {max_error.min_cosine_similarity:.4f} | {quantize_s:.0f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
