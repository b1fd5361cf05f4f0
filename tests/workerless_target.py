"""A real ONNX Runtime target whose workers cannot be had: `needs_gpu`, asked only where a study
makes its executor (never while `start` validates), raises. A test's way to make a daemon fail
after `start` validated everything, as an unreachable Ray cluster or a full machine does.

Loaded as the plugin target "tests.workerless_target:WorkerlessTarget".
"""

from __future__ import annotations

from autotune.targets.onnxruntime import OnnxRuntimeTarget


class WorkerlessTarget(OnnxRuntimeTarget):
    name = "workerless"

    @classmethod
    def needs_gpu(cls, options=None):
        raise RuntimeError("no worker can be had for this target (a test double)")
