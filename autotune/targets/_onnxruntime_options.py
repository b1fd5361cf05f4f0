"""ONNX Runtime's session and CUDA provider options from a configuration, shared by the target
(`autotune.targets.onnxruntime`) and its profiler (`_onnxruntime_profile`)."""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

from autotune.targets.base import Config

GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


def session_options(config: Config, cpu_count: int | None = None) -> Any:
    """Builds `onnxruntime.SessionOptions` from a configuration.

    Args:
        config (Mapping): knob values; absent knobs keep ONNX Runtime's defaults.
        cpu_count (int | None): cores this process may use; caps the thread counts so a
            worker pinned to a core set does not oversubscribe. Default: None (no cap).
    """

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


def cuda_provider_options(config: Config, device_id: int = 0) -> dict[str, str]:
    """The CUDA execution provider's options for a configuration (absent knobs: its defaults)."""
    options = {"device_id": str(device_id)}
    if "cudnn_conv_algo_search" in config:
        options["cudnn_conv_algo_search"] = str(config["cudnn_conv_algo_search"])
    if "use_tf32" in config:
        options["use_tf32"] = "1" if config["use_tf32"] else "0"
    if config.get("cuda_graph"):
        options["enable_cuda_graph"] = "1"
    if "prefer_nhwc" in config:
        options["prefer_nhwc"] = "1" if config["prefer_nhwc"] else "0"
    return options


_DLLS_PRELOADED = False


def _preload_cuda_dlls() -> None:
    """onnxruntime-gpu finds cuDNN/cuBLAS of the nvidia-* wheels only once preloaded."""
    global _DLLS_PRELOADED
    if _DLLS_PRELOADED:
        return

    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - the system's libraries may still be found
            pass
    _DLLS_PRELOADED = True
