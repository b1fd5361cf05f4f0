"""Runs in a subprocess with one version's real `tensorrt_bindings` importable (see
bindings.py); prints one JSON line of facts read from the module and from autotune's code
applied to it. Modes: report (everything the API tests check), polygraphy (does the
Polygraphy on sys.path survive TensorRT 11's IBuilderConfig).
"""

from __future__ import annotations

import json
import sys

import tensorrt_bindings

sys.modules["tensorrt"] = tensorrt_bindings  # what the `tensorrt` wheel's package re-exports
trt = tensorrt_bindings

# Runtime and profiling surface the runtime and autotune.profile use.
RUNTIME_API = [
    "IExecutionContext.execute_async_v3",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.nvtx_verbosity",
    "IExecutionContext.set_output_allocator",
    "IOutputAllocator",
    "ICudaEngine.is_shape_inference_io",
    "ICudaEngine.get_tensor_location",
    "TensorLocation.HOST",
    "ProfilingVerbosity.LAYER_NAMES_ONLY",
    "ProfilingVerbosity.DETAILED",
]
PROFILING_API = [
    "IProfiler",
    "IExecutionContext.profiler",
    "IExecutionContext.report_to_profiler",
    "IExecutionContext.enqueue_emits_profile",
    "ICudaEngine.create_engine_inspector",
    "EngineInspector.get_engine_information",
    "EngineInspector.execution_context",
    "LayerInformationFormat.JSON",
]


def _doc_line(cls, attr: str) -> str:
    for line in (cls.__doc__ or "").splitlines():
        if f":ivar {attr}:" in line:
            return line.strip()
    return ""


def report() -> dict:
    from autotune.space import load_space
    from autotune.targets import _tensorrt_build, _tensorrt_runtime
    from autotune.targets.base import Built, TargetOptions
    from autotune.targets.tensorrt import TensorRTTarget, builder_settings

    caps = _tensorrt_build.capabilities_of(trt)
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities=caps)
    space = load_space(target.default_space_path(), target)
    offered = {}
    for knob in space.knobs:
        if knob.type == "bool":
            offered[knob.name] = [False, True]
        elif knob.type == "int":
            offered[knob.name] = list(range(int(knob.low), int(knob.high) + 1))
        else:
            offered[knob.name] = list(knob.choices)
    dtypes = {}
    for name, value in trt.DataType.__members__.items():
        try:
            dtypes[name] = _tensorrt_runtime.numpy_dtype(value, name).name
        except TypeError:
            dtypes[name] = "packed"
    config = {"precision": "tf32", "builder_optimization_level": 5, "max_aux_streams": -1, "cuda_graph": False}
    if "tactic.JIT_CONVOLUTIONS" in offered:
        config["tactic.JIT_CONVOLUTIONS"] = False
    if "tiling_optimization_level" in offered:
        config["tiling_optimization_level"] = "FAST"
    if "workspace_limit_mib" in offered:
        config["workspace_limit_mib"] = 256
    profile = {"input:0": [[1, 3, 32, 32], [8, 3, 32, 32], [8, 3, 32, 32]]}
    settings = builder_settings(config, flavor="tensorrt", profile=profile)
    if "build_route" in caps["config_attributes"]:
        settings["build_route"] = "-conv_use_long_w=off"  # a route as all_build_routes would offer
    built = Built(
        artifact="engine.plan", info={"settings": settings, "builder_config": {}, "trt_version": trt.__version__}
    )
    all_on = _tensorrt_build.tactic_bitmask(trt, 0, {name: True for name in trt.TacticSource.__members__})
    from autotune.targets._tensorrt_commands import postprocess_script

    class Config:  # only what the script touches; a real IBuilderConfig needs a builder
        sources = all_on
        build_route = ""

        def get_tactic_sources(self):
            return self.sources

        def set_tactic_sources(self, value):
            self.sources = value

    namespace: dict = {}
    exec(postprocess_script(settings, "tensorrt", {}), namespace)
    config_after = Config()
    namespace["postprocess_config"](None, None, config_after)
    return {
        "version": trt.__version__,
        "script_tactic_sources": _tensorrt_build.tactic_names(trt, config_after.sources),
        "capabilities": caps,
        "knob_api": {
            knob: {n: _tensorrt_build.has_api(trt, n) for n in names}
            for knob, names in _tensorrt_build.KNOB_API.items()
        },
        "runtime_api": {n: _tensorrt_build.has_api(trt, n) for n in RUNTIME_API},
        "profiling_api": {n: _tensorrt_build.has_api(trt, n) for n in PROFILING_API},
        "tactic_values": {name: int(value) for name, value in trt.TacticSource.__members__.items()},
        "tactic_without_jit": _tensorrt_build.tactic_names(
            trt, _tensorrt_build.tactic_bitmask(trt, all_on, {"JIT_CONVOLUTIONS": False})
        ),
        "offered": offered,
        "dtypes": dtypes,
        "docs": {
            "build_route": _doc_line(trt.IBuilderConfig, "build_route"),
            "all_build_routes": _doc_line(trt.IBuilderConfig, "all_build_routes"),
            "nvtx_verbosity": _doc_line(trt.IExecutionContext, "nvtx_verbosity"),
        },
        "int8_calibrator": hasattr(trt.IBuilderConfig, "int8_calibrator"),
        "commands": target.deploy_commands(built, config),
    }


def polygraphy() -> dict:
    """Runs Polygraphy's build-time calibrator hook (EngineBytesFromNetwork calls it on every
    build) on a config that has exactly the attributes of this version's IBuilderConfig."""
    import polygraphy
    from polygraphy.backend.trt import util as trt_util

    allowed = set(dir(trt.IBuilderConfig))

    class ConfigSurface:
        def __getattr__(self, name):
            if name not in allowed:
                raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
            return None

    try:
        trt_util.try_setup_polygraphy_calibrator(ConfigSurface(), network=None)
        error = None
    except AttributeError as exc:
        error = str(exc)
    import importlib.util

    return {
        "polygraphy": polygraphy.__version__,
        "error": error,
        "has_rtx_backend": importlib.util.find_spec("polygraphy.backend.tensorrt_rtx") is not None,
    }


if __name__ == "__main__":
    print(json.dumps({"report": report, "polygraphy": polygraphy}[sys.argv[1]]()))
