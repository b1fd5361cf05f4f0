"""Probes, on the GPU machine, which ONNX Runtime CUDA kernels exist in fp16/bf16.

Each probe runs in a child process, so a crash inside ONNX Runtime (listing the CUDA kernel
registry once segfaulted in-process) is reported as a return code instead of killing the caller:

    python bench/gpu_probe.py OUT.json
"""

from __future__ import annotations

import json
import subprocess
import sys

LIST_KERNELS = r"""
import json, sys
import onnxruntime as ort
if sys.argv[1] == "preload":
    ort.preload_dlls()
from onnxruntime.capi import onnxruntime_pybind11_state as state
table = {}
for kernel in state.get_all_opkernel_def():
    if kernel.provider == "CUDAExecutionProvider" and kernel.domain in ("", "ai.onnx"):
        types = sorted({t for ts in kernel.type_constraints.values() for t in ts})
        table.setdefault(kernel.op_name, []).append([list(kernel.version_range), types])
print(json.dumps(table))
"""


def main() -> int:
    report = {}
    for mode in ("preload", "plain"):
        proc = subprocess.run([sys.executable, "-c", LIST_KERNELS, mode], capture_output=True, text=True, timeout=120)
        entry: dict = {"returncode": proc.returncode, "stderr": proc.stderr[-1500:]}
        if proc.returncode == 0:
            table = json.loads(proc.stdout.strip().splitlines()[-1])
            entry["ops"] = len(table)
            for low in ("tensor(float16)", "tensor(bfloat16)"):
                entry[low] = sorted(op for op, defs in table.items() if any(low in t for _, t in defs))
            entry["table"] = table
        report[mode] = entry
        print(mode, {k: (v if not isinstance(v, (list, dict)) else len(v)) for k, v in entry.items()})
    with open(sys.argv[1], "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
