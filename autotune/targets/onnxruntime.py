"""ONNX Runtime target: tunes session options (and, through the pipeline, the graph).

The CPU execution provider runs everywhere; the CUDA provider is offered where
`onnxruntime-gpu` is installed and a GPU is visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autotune.errors import BuildError
from autotune.targets.base import Built, Config, Feeds, Session, Target

GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
# Knobs that change what a session does; they (with the model bytes) define the digest.
SESSION_KNOBS = (
    "graph_optimization_level",
    "execution_mode",
    "intra_op_threads",
    "inter_op_threads",
    "intra_op_spinning",
)


def session_options(config: Config, cpu_count: int | None = None) -> Any:
    """Builds `onnxruntime.SessionOptions` from a configuration.

    Args:
        config (Mapping): knob values; absent knobs keep ONNX Runtime's defaults.
        cpu_count (int | None): cores this process may use; caps the thread counts so a
            worker pinned to a core set does not oversubscribe. Default: None (no cap).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    level = config.get("graph_optimization_level", "all")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[level])
    mode = config.get("execution_mode", "sequential")
    options.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[mode])
    intra = int(config.get("intra_op_threads", 0))
    inter = int(config.get("inter_op_threads", 0))
    if cpu_count:
        intra = min(intra, cpu_count) if intra else cpu_count
        inter = min(inter, cpu_count) if inter else 0
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    if "intra_op_spinning" in config:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config["intra_op_spinning"] else "0")
    return options


def _cpu_count() -> int | None:
    """Cores this process is pinned to, when pinned to fewer than the machine has."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    pinned = len(os.sched_getaffinity(0))
    return pinned if pinned < (os.cpu_count() or pinned) else None


class OnnxRuntimeSession(Session):
    """An `InferenceSession` on the CPU provider."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outputs, strict=True))

    def timer(self, feeds: Feeds) -> Callable[[], float]:
        run, names = self.session.run, self.output_names

        def time_once() -> float:
            start = time.perf_counter()
            run(names, feeds)
            return time.perf_counter() - start

        return time_once

    def close(self) -> None:
        self.session = None


class OnnxRuntimeTarget(Target):
    """Tunes ONNX Runtime session options on the CPU execution provider."""

    name = "onnxruntime"
    knob_names = frozenset(SESSION_KNOBS)
    precisions = ("fp32", "int8")
    quantization_scheme = "asymmetric_u8"  # ORT's CPU kernels: uint8 activations, int8 weights

    @classmethod
    def unavailable_reason(cls, build_only: bool = False) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "ONNX Runtime is not installed (pip install onnxruntime)"
        return None

    def describe(self) -> str:
        import onnxruntime as ort

        return f"ONNX Runtime {ort.__version__}, CPUExecutionProvider, {os.cpu_count()} cores"

    def supported_choices(self, knob: str, choices: Sequence[Any]) -> list[Any]:
        if knob == "graph_optimization_level":
            return [c for c in choices if c in GRAPH_OPTIMIZATION_LEVELS]
        if knob == "execution_mode":
            return [c for c in choices if c in EXECUTION_MODES]
        return super().supported_choices(knob, choices)

    def build(
        self, model_path: Path, config: Config, workdir: Path, input_shapes: Mapping[str, Sequence[int]]
    ) -> Built:
        import onnxruntime as ort

        start = time.perf_counter()
        try:
            ort.InferenceSession(str(model_path), session_options(config), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BuildError(f"ONNX Runtime could not create a session: {str(exc).strip().splitlines()[0]}") from None
        digest = hashlib.sha256(model_path.read_bytes())
        digest.update(json.dumps({k: config.get(k) for k in SESSION_KNOBS}, sort_keys=True).encode())
        return Built(
            artifact=model_path,
            info={"build_time_s": time.perf_counter() - start, "model_size_bytes": model_path.stat().st_size},
            digest=digest.hexdigest(),
        )

    def open(self, built: Built, config: Config) -> Session:
        import onnxruntime as ort

        options = session_options(config, _cpu_count())
        return OnnxRuntimeSession(
            ort.InferenceSession(str(built.artifact), options, providers=["CPUExecutionProvider"])
        )

    def deploy_commands(self, built: Built, config: Config) -> dict[str, str]:
        options = {k: config[k] for k in SESSION_KNOBS if k in config}
        lines = [
            "import onnxruntime as ort",
            "so = ort.SessionOptions()",
            f"so.graph_optimization_level = ort.GraphOptimizationLevel."
            f"{GRAPH_OPTIMIZATION_LEVELS[options.get('graph_optimization_level', 'all')]}",
            f"so.execution_mode = ort.ExecutionMode.{EXECUTION_MODES[options.get('execution_mode', 'sequential')]}",
            f"so.intra_op_num_threads = {int(options.get('intra_op_threads', 0))}",
            f"so.inter_op_num_threads = {int(options.get('inter_op_threads', 0))}",
        ]
        if "intra_op_spinning" in options:
            flag = "1" if options["intra_op_spinning"] else "0"
            lines.append(f'so.add_session_config_entry("session.intra_op.allow_spinning", "{flag}")')
        lines.append(f'session = ort.InferenceSession("{built.artifact.name}", so, providers=["CPUExecutionProvider"])')
        return {"python": "\n".join(lines)}
