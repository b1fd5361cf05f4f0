"""ONNX Runtime's per-node profile of a candidate (`OnnxRuntimeTarget.layer_profile`).

Its built-in profiler (`SessionOptions.enable_profiling`, `end_profiling()` JSON) over a few warm
runs; per node on the CPU. On the CUDA provider the "Node" events time the kernel *launches*
(asynchronous), so device times come from its "Kernel" events, which only an ONNX Runtime built
with `--enable_cuda_profiling` writes; without them the profile says that its node times are
host-side.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from autotune.targets._onnxruntime_options import _preload_cuda_dlls, cuda_provider_options, session_options
from autotune.targets.layer_profile import (
    MAX_RUNS,
    MIN_PROFILE_S,
    MIN_RUNS,
    PRECISION_NAMES,
    WARMUP_RUNS,
    ProfileError,
    finish_profile,
    op_class,
)


def _ort_precision(args: Mapping[str, Any]) -> str:
    """The precision a node computed in, from its input types: the lowest float/int8 type."""
    seen = []
    for spec in args.get("input_type_shape", []) or []:
        if isinstance(spec, dict):
            seen += [PRECISION_NAMES.get(str(k), str(k)) for k in spec]
    for wanted in ("int8", "uint8", "fp8", "fp16", "bf16", "fp32"):
        if wanted in seen:
            return "int8" if wanted == "uint8" else wanted
    outputs = [str(k) for s in args.get("output_type_shape", []) or [] if isinstance(s, dict) for k in s]
    return PRECISION_NAMES.get(outputs[0], outputs[0]) if outputs else (seen[0] if seen else "")


def parse_ort_profile(events: Sequence[Mapping[str, Any]], *, warmup_runs: int = 0) -> dict[str, Any]:
    """Per-node mean time per run from an ONNX Runtime profile (the `end_profiling()` JSON).

    Node events (`cat == "Node"`, names ending `_kernel_time`) are assigned to the run
    (`model_run` session event) they fall in; the first `warmup_runs` runs are left out. When the
    profile has "Kernel" events (a CUDA build with `--enable_cuda_profiling`), each kernel's
    device time is charged to its node (its `parent_name`, else the node event before it) and
    node times are the sum of their kernels'.

    Returns:
        {"runs": profiled runs, "run_ms": mean model_run time, "timing": "node" | "kernel",
        "nodes": [{name, op_type, class, precision, provider, time_ms}]}
    """
    runs = sorted(
        (float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    kept = runs[warmup_runs:] if len(runs) > warmup_runs else runs
    start = kept[0][0] if kept else float("-inf")

    def in_kept(ts: float) -> bool:
        return any(a <= ts <= b for a, b in kept) if kept else True

    ordered = sorted(events, key=lambda e: float(e.get("ts", 0)))
    nodes: dict[str, dict[str, Any]] = {}
    kernel_us: dict[str, float] = {}
    last_node: str | None = None
    for event in ordered:
        ts = float(event.get("ts", 0))
        cat, name, args = event.get("cat"), str(event.get("name", "")), event.get("args") or {}
        if cat == "Node" and name.endswith("_kernel_time"):
            node_name = name[: -len("_kernel_time")]
            last_node = node_name
            if ts < start or not in_kept(ts):
                continue
            entry = nodes.setdefault(
                node_name,
                {
                    "name": node_name,
                    "op_type": str(args.get("op_name", "")),
                    "precision": _ort_precision(args),
                    "provider": str(args.get("provider", "")),
                    "host_us": 0.0,
                },
            )
            entry["host_us"] += float(event.get("dur", 0))
        elif cat == "Kernel":
            parent = str(args.get("parent_name", "") or last_node or "")
            parent = parent[: -len("_kernel_time")] if parent.endswith("_kernel_time") else parent
            if ts >= start and parent:
                kernel_us[parent] = kernel_us.get(parent, 0.0) + float(event.get("dur", 0))
    count = max(len(kept), 1)
    timing = "kernel" if kernel_us else "node"
    out = []
    for entry in nodes.values():
        micros = kernel_us.get(entry["name"], 0.0) if kernel_us else entry["host_us"]
        out.append(
            {
                "name": entry["name"],
                "op_type": entry["op_type"],
                "class": op_class(entry["op_type"]),
                "precision": entry["precision"],
                "provider": entry["provider"],
                "time_ms": micros / count / 1e3,
            }
        )
    run_ms = sum(b - a for a, b in kept) / count / 1e3 if kept else None
    return {"runs": len(kept), "run_ms": run_ms, "timing": timing, "nodes": out}


def profile_onnxruntime(
    model_path: Path,
    config: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray],
    *,
    cuda: bool = False,
    min_runs: int = MIN_RUNS,
    min_s: float = MIN_PROFILE_S,
) -> dict[str, Any]:
    """Profiles one configuration with ONNX Runtime's profiler over warm runs.

    Args:
        model_path (Path): the model after the configuration's passes and precision.
        config (Mapping): the configuration (session knobs; CUDA provider knobs on CUDA).
        feeds (Mapping): inputs at the configuration's batch.
        cuda (bool): run on the CUDA execution provider (without CUDA graph capture, whose
            replays the profiler cannot see). Default: False.
        min_runs (int): profiled runs at least (after `WARMUP_RUNS`). Default: `MIN_RUNS`.
        min_s (float): and at least this long. Default: `MIN_PROFILE_S`.

    Raises:
        ProfileError: the session cannot be created or run.
    """

    graph = cuda and bool(config.get("cuda_graph"))
    config = {k: v for k, v in config.items() if k != "cuda_graph"}
    with tempfile.TemporaryDirectory(prefix="autotune-profile-") as tmp:
        options = session_options(config)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        if cuda:
            _preload_cuda_dlls()
            providers: list[Any] = [("CUDAExecutionProvider", cuda_provider_options(config)), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(model_path), options, providers=providers)
            if cuda and "CUDAExecutionProvider" not in session.get_providers():
                raise ProfileError("ONNX Runtime fell back to the CPU: the CUDA execution provider did not load")
            for _ in range(WARMUP_RUNS):
                session.run(None, dict(feeds))
            runs, started = 0, time.perf_counter()
            while runs < MAX_RUNS and (runs < min_runs or time.perf_counter() - started < min_s):
                session.run(None, dict(feeds))
                runs += 1
            path = session.end_profiling()
        except ProfileError:
            raise
        except Exception as exc:  # noqa: BLE001 - any ORT failure is this configuration's
            raise ProfileError(f"ONNX Runtime could not profile {model_path.name}: {str(exc).strip()[:300]}") from None
        events = json.loads(Path(path).read_text())
    parsed = parse_ort_profile(events, warmup_runs=WARMUP_RUNS)
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    if cuda and parsed["timing"] == "node":
        note = (
            "node times are host-side launch times: this ONNX Runtime was not built with "
            "--enable_cuda_profiling, so the profile has no per-kernel device times"
        )
    elif cuda:
        note = "per-kernel device times (CUPTI), charged to the node that launched each kernel"
    else:
        note = "per-node times on the CPU"
    if cuda:
        # Not what the timed runs did: say so beside the numbers (bench/PROFILE.md's GPU rows).
        note += "; inputs and outputs on the host (the timed runs bind device buffers)"
        if graph:
            note += "; run without the configuration's CUDA graph (the profiler cannot see graph replays)"
    facts = {
        "source": f"ONNX Runtime {ort.__version__} profiler, {provider}",
        "provider": provider,
        "runs": parsed["runs"],
        "run_ms": parsed["run_ms"],
        "timing": parsed["timing"],
        "note": note,
    }
    return finish_profile(parsed["nodes"], facts)
