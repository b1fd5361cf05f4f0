"""Test double: the ONNX Runtime CPU target, claiming to need a GPU.

The study and finalize route its work as they route a GPU target's (Ray tasks with
`num_gpus=1`), on a machine without a GPU: it runs on the CPU like `onnxruntime`. Every build
made for one of finalize's paired measurements (workdir `<study>/paired/...`) appends a line to
`<study>/paired-builds.log`: its pid, its parent's command line and CUDA_VISIBLE_DEVICES, so a
test can tell where the measurement ran.
"""

from __future__ import annotations

import os
from pathlib import Path

from autotune.targets.onnxruntime import OnnxRuntimeTarget

PAIRED_LOG = "paired-builds.log"


class CpuTargetClaimingGpu(OnnxRuntimeTarget):
    name = "cpu-claiming-gpu"

    @classmethod
    def needs_gpu(cls, options):
        return not options.build_only

    def build(self, model_path, config, workdir, input_shapes):
        workdir = Path(workdir)
        if "paired" in workdir.parts:
            study_dir = workdir.parents[len(workdir.parts) - workdir.parts.index("paired") - 1]
            parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            with open(study_dir / PAIRED_LOG, "a") as log:
                log.write(f"{os.getpid()}\t{parent.strip()}\t{os.environ.get('CUDA_VISIBLE_DEVICES', '')}\n")
        return super().build(model_path, config, workdir, input_shapes)
