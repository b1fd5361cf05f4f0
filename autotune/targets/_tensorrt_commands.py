"""The commands that rebuild a trial's engine outside autotune, with no TensorRT import.

`deploy_commands` writes a `trtexec` line (`tensorrt_rtx` for TensorRT-RTX), a line that times
the exported engine with it, and a `polygraphy convert` line from the builder settings a trial used (`tensorrt.builder_settings`)
and what its IBuilderConfig read back; `postprocess_script` is the Polygraphy config script for
the settings `polygraphy convert` has no flag for. The paths are those the target's `export`
writes: model.onnx (the transformed model), engine.plan, timing.cache, trt_config_postprocess.py.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.targets import _tensorrt_knobs

ENGINE_FILE = "engine.plan"
TIMING_CACHE_FILE = "timing.cache"
POSTPROCESS_SCRIPT_FILE = "trt_config_postprocess.py"
# One engine is built, measured and exported. It is built DETAILED (the per-layer table, with the
# fused ONNX nodes and tactics, is only printed for a DETAILED build) and timed with its execution
# context's NVTX verbosity lowered to LAYER_NAMES_ONLY (DETAILED adds enqueue latency): the
# exported commands rebuild at the first and time at the second.
BUILD_PROFILING_VERBOSITY = "DETAILED"
TIMED_NVTX_VERBOSITY = "LAYER_NAMES_ONLY"

# Per TensorRT module: the trtexec binary, and how `polygraphy convert` is told to build with it.
TRTEXEC = {"tensorrt": "trtexec", "tensorrt_rtx": "tensorrt_rtx"}
POLYGRAPHY_ENV = {"tensorrt": "", "tensorrt_rtx": "POLYGRAPHY_USE_TENSORRT_RTX=1 "}


def trtexec_shape_spec(profile: Mapping[str, Sequence[Sequence[int]]], index: int) -> str:
    """`name:1x3x32x32,other:...` for one of min (0), opt (1), max (2).

    trtexec (sampleOptions.cpp `getShapesBuild`) splits the value on every ',' first, then
    each pair on ':'; a name wrapped in single quotes may contain ':' ("Input names can be
    wrapped with escaped single quotes (ex: 'Input:0')"). Names are quoted only when they
    need it, so ordinary commands stay as trtexec's documentation writes them.

    Raises:
        ValueError: a name has ',' or a single quote, which trtexec cannot parse back.
    """
    pairs = []
    for name, dims in profile.items():
        if "," in name or "'" in name:
            raise ValueError(f"trtexec cannot express input name {name!r} in a shape spec (it splits on ',')")
        quoted = f"'{name}'" if ":" in name else name
        pairs.append(f"{quoted}:{'x'.join(str(int(d)) for d in dims[index])}")
    return ",".join(pairs)


def deploy_commands(
    settings: Mapping[str, Any],
    read_back: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    module_name: str,
    weak_typing: bool = True,
) -> dict[str, str]:
    """{trtexec name: line, "<trtexec name> timing": line, "polygraphy": line}: the first and the
    last rebuild the engine of `settings`; the timing line times the exported engine file itself
    as the trial timed it (`trtexec_timing_args`).

    Args:
        settings (Mapping): the trial's builder settings (`tensorrt.builder_settings`).
        read_back (Mapping): what its IBuilderConfig held ({} when unknown).
        config (Mapping): the trial's configuration (its runtime knob `cuda_graph`).
        module_name (str): "tensorrt" or "tensorrt_rtx".
        weak_typing (bool): the TensorRT that built it has the weak-typing builder flags
            (`BuilderFlag.FP16`: 10.x). False: trtexec 11.x, where every network is strongly
            typed (--stronglyTyped is a deprecated no-op) and timing uses a CUDA graph unless
            --noCudaGraph (--useCudaGraph is a deprecated no-op). Default: True.
    """
    _tensorrt_knobs.check_settings(settings)
    tool = TRTEXEC[module_name]
    try:
        trtexec = shlex.join(trtexec_args(settings, config, module_name=module_name, weak_typing=weak_typing))
        timing = shlex.join(trtexec_timing_args(settings, config, module_name=module_name, weak_typing=weak_typing))
    except ValueError as exc:  # a profile trtexec's option syntax cannot express
        trtexec = timing = f"# no {tool} command: {exc}; use the polygraphy command"
    polygraphy = POLYGRAPHY_ENV[module_name] + shlex.join(polygraphy_args(settings, read_back, module_name=module_name))
    return {tool: trtexec, f"{tool} timing": timing, "polygraphy": polygraphy}


def _graph_by_default(module_name: str, weak_typing: bool) -> bool:
    # trtexec 11.x (the release without weak typing) captures a CUDA graph unless told not to;
    # 10.x and the tensorrt_rtx tool time without one unless --useCudaGraph.
    return module_name == "tensorrt" and not weak_typing


def trtexec_args(
    settings: Mapping[str, Any], config: Mapping[str, Any], *, module_name: str, weak_typing: bool = True
) -> list[str]:
    """The trtexec (or tensorrt_rtx) line that rebuilds the engine, at the build's profiling
    verbosity, and only builds it (--skipInference: trtexec would time at that verbosity too,
    which is not how the trial timed); ValueError where a shape spec cannot be said."""
    args = [TRTEXEC[module_name], "--onnx=model.onnx", f"--saveEngine={ENGINE_FILE}"]
    for knob in _tensorrt_knobs.KNOBS:
        args += knob.trtexec(settings, weak_typing=weak_typing)
    profile = settings.get("profile")
    if profile:
        for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(f"{flag}={trtexec_shape_spec(profile, index)}")
    verbosity = str(settings.get("profiling_verbosity", BUILD_PROFILING_VERBOSITY)).lower()
    args += [f"--timingCacheFile={TIMING_CACHE_FILE}", f"--profilingVerbosity={verbosity}", "--skipInference"]
    return args


def trtexec_timing_args(
    settings: Mapping[str, Any], config: Mapping[str, Any], *, module_name: str, weak_typing: bool = True
) -> list[str]:
    """The trtexec (or tensorrt_rtx) line that times the exported engine as the trial did: the
    engine file itself (--loadEngine), at the trial's input shapes, with the execution context's
    NVTX verbosity at `TIMED_NVTX_VERBOSITY` (trtexec sets it from --profilingVerbosity,
    sampleOptions.cpp: "Set nvtxVerbosity to be the same as build-time profilingVerbosity"), inputs
    already on the device (--noDataTransfers) and the trial's CUDA-graph state."""
    args = [TRTEXEC[module_name], f"--loadEngine={ENGINE_FILE}"]
    profile = settings.get("profile")
    if profile:
        args.append(f"--shapes={trtexec_shape_spec(profile, 1)}")
    args += [f"--profilingVerbosity={TIMED_NVTX_VERBOSITY.lower()}", "--noDataTransfers"]
    graph = bool(config.get("cuda_graph"))
    if _graph_by_default(module_name, weak_typing):
        if not graph:
            args.append("--noCudaGraph")  # --useCudaGraph is a deprecated no-op there
    elif graph:
        args.append("--useCudaGraph")
    return args


def polygraphy_args(settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
    """The `polygraphy convert` argument list (without the environment TensorRT-RTX needs)."""
    args = ["polygraphy", "convert", "model.onnx", "-o", ENGINE_FILE]
    for knob in _tensorrt_knobs.KNOBS:
        args += knob.polygraphy(settings, read_back, module_name=module_name)
    profile = settings.get("profile")
    if profile:
        for flag, index in (("--trt-min-shapes", 0), ("--trt-opt-shapes", 1), ("--trt-max-shapes", 2)):
            args += [flag, *(f"{name}:{dims[index]}".replace(" ", "") for name, dims in profile.items())]
    if postprocess_script(settings, module_name, read_back):
        args += ["--trt-config-postprocess-script", f"{POSTPROCESS_SCRIPT_FILE}:postprocess_config"]
    args += [
        "--load-timing-cache",
        TIMING_CACHE_FILE,
        "--save-timing-cache",
        TIMING_CACHE_FILE,
        "--profiling-verbosity",
        str(settings.get("profiling_verbosity", BUILD_PROFILING_VERBOSITY)).lower(),
    ]
    return args


def postprocess_script(
    settings: Mapping[str, Any], module_name: str = "tensorrt", read_back: Mapping[str, Any] | None = None
) -> str:
    """A Polygraphy --trt-config-postprocess-script for settings its CLI has no flag for
    (each knob's `script` lines: tactic-source toggles too, when no read-back gives the full
    list for --tactic-sources); "" when every setting has a flag."""
    lines = [
        line
        for knob in _tensorrt_knobs.KNOBS
        for line in knob.script(settings, read_back or {}, module_name=module_name)
    ]
    if any("trt." in line for line in lines):
        lines.insert(0, f"    import {module_name} as trt\n")
    if not lines:
        return ""
    return (
        '"""Builder settings polygraphy convert has no flag for (written by autotune)."""\n\n\n'
        "def postprocess_config(builder, network, config):\n" + "\n".join(lines) + "\n"
    )
