"""TensorRT's per-layer profile of an engine (`TensorRTTarget.layer_profile`).

The layer table the target recorded at build (names, types, precisions, fused ONNX nodes),
always; per-layer times through TensorRT's `IProfiler` (`report_layer_time`) only where a GPU
runs the engine, else the profile says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from autotune.targets._tensorrt_runtime import TensorRTSession
from autotune.targets.cuda_timing import cudart, visible_gpu
from autotune.targets.layer_profile import MIN_RUNS, PRECISION_NAMES, WARMUP_RUNS, finish_profile, op_class

# TensorRT layer types (engine inspector / build log), by class, for layers that fused no ONNX
# node whose op type is known.
TRT_LAYER_CLASSES = {
    "convolution": "gemm",
    "deconvolution": "gemm",
    "gemm": "gemm",
    "matrixmultiply": "gemm",
    "fullyconnected": "gemm",
    "softmax": "attention",
    "attention": "attention",
    "normalization": "normalization",
    "pointwise": "elementwise",
    "elementwise": "elementwise",
    "activation": "elementwise",
    "scale": "elementwise",
    "reformat": "data_movement",
    "shuffle": "data_movement",
    "slice": "data_movement",
    "concatenation": "data_movement",
    "gather": "data_movement",
    "copy": "data_movement",
    "move": "data_movement",
}
# When a TensorRT layer fused ONNX nodes of several classes, it takes the first class here.
CLASS_PRIORITY = ("gemm", "attention", "normalization", "other", "elementwise", "data_movement")


def _onnx_op_types(model: onnx.ModelProto | None) -> dict[str, str]:
    """ONNX node name -> op type; unnamed nodes under TensorRT's parser name `node_of_<output>`."""
    if model is None:
        return {}
    types = {}
    for node in model.graph.node:
        if node.name:
            types[node.name] = node.op_type
        if node.output:
            types.setdefault(f"node_of_{node.output[0]}", node.op_type)
    return types


def _layer_class(layer: Mapping[str, Any], op_types: Mapping[str, str]) -> str:
    classes = {op_class(op_types[n]) for n in layer.get("onnx_nodes", []) if n in op_types}
    for wanted in CLASS_PRIORITY:
        if wanted in classes:
            return wanted
    kind = f"{layer.get('type', '')} {layer.get('name', '')}".lower()
    for key, cls in TRT_LAYER_CLASSES.items():
        if key in kind:
            return cls
    return "other"


def _layer_precision(layer: Mapping[str, Any]) -> str:
    names = [PRECISION_NAMES.get(str(d), str(d).lower()) for d in layer.get("datatypes", [])]
    for wanted in ("int8", "fp8", "fp16", "bf16", "fp32"):
        if wanted in names:
            return wanted
    return names[0] if names else ""


def profile_tensorrt(
    layers: Sequence[Mapping[str, Any]],
    *,
    model: onnx.ModelProto | None = None,
    engine_path: Path | None = None,
    module_name: str = "tensorrt",
    feeds: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The engine's layers (from the build) with their class and precision; per-layer times
    through `IProfiler` when a GPU can run the engine, else untimed with the reason.

    Args:
        layers (Sequence): the layer table the target recorded (`Built.info["layers"]`).
        model (onnx.ModelProto | None): the ONNX model the engine was built from, to know the
            op types of the fused nodes. Default: None.
        engine_path (Path | None): the engine, to time its layers. Default: None (untimed).
        module_name (str): "tensorrt" or "tensorrt_rtx". Default: "tensorrt".
        feeds (Mapping | None): inputs at the engine's batch, to time it. Default: None.
    """
    op_types = _onnx_op_types(model)
    nodes: list[dict[str, Any]] = [
        {
            "name": str(layer.get("name", "")),
            "op_type": str(layer.get("type", "")),
            "class": _layer_class(layer, op_types),
            "precision": _layer_precision(layer),
            "onnx_nodes": list(layer.get("onnx_nodes", [])),
            "tactic": str(layer.get("tactic", "")),
            "time_ms": None,
        }
        for layer in layers
    ]
    facts: dict[str, Any] = {"source": f"{module_name} layer table from the build log", "runs": 0, "run_ms": None}
    reason: str | None = "no engine to time"
    if engine_path is not None and feeds is not None:
        reason = gpu_timing_unavailable(module_name)
    if reason is None and engine_path is not None and feeds is not None:
        try:
            times = time_engine_layers(Path(engine_path), module_name, feeds)
        except Exception as exc:  # noqa: BLE001 - untimed layers are still a profile
            reason = f"IProfiler timing failed: {str(exc).strip()[:200]}"
        else:
            for node in nodes:
                node["time_ms"] = times.pop(node["name"], 0.0)
            for name, ms in times.items():  # reported layers the build log did not list (reformats)
                kind = _layer_class({"name": name}, op_types)
                nodes.append({"name": name, "op_type": "", "class": kind, "precision": "", "onnx_nodes": [],
                              "tactic": "", "time_ms": ms})  # fmt: skip
            facts.update({"source": f"{module_name} IProfiler per-layer times", "runs": MIN_RUNS, "timing": "layer"})
    if reason is not None:
        facts.update(
            {
                "timing": None,
                "note": f"per-layer times need a GPU that runs this engine ({reason}); "
                "layer names, types, precisions and fused ONNX nodes from the build",
            }
        )
    else:
        facts["note"] = "per-layer device times from IProfiler (report_layer_time), synchronous runs"
    return finish_profile(nodes, facts)


def gpu_timing_unavailable(module_name: str) -> str | None:
    """None when a GPU here can run an engine of `module_name` for IProfiler, else why not."""
    if visible_gpu().get("count", 0) < 1:
        return "no GPU is visible"
    try:
        importlib.import_module(module_name)
        cudart()
    except Exception as exc:  # noqa: BLE001
        return f"cannot load the runtime: {exc}"
    return None


def time_engine_layers(
    engine_path: Path, module_name: str, feeds: Mapping[str, np.ndarray], runs: int = MIN_RUNS
) -> dict[str, float]:
    """Mean per-layer milliseconds of `runs` synchronous executions under an `IProfiler`
    (`TensorRTSession.layer_times_ms`), after `WARMUP_RUNS` unprofiled ones. Needs a GPU and
    cuda-python."""
    session = TensorRTSession(engine_path, module_name)
    try:
        session._stage(dict(feeds))
        for _ in range(WARMUP_RUNS):
            session._execute(session.stream)
        return session.layer_times_ms(dict(feeds), runs)
    finally:
        session.close()
