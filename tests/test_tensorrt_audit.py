"""Issue 17's audit of the TensorRT target, one test per item, without TensorRT itself.

What needs the real TensorRT 10.x / 11.x Python bindings (enums, attributes, docstrings) is
in test_trt_api.py; here are the translations and runtime decisions that need no module, or
only TensorRT-RTX's enums. `FakeCudaRuntime` stands in for cuda-python's runtime, which
cannot run without a GPU.
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from autotune.errors import BuildError
from autotune.targets import _tensorrt_build, _tensorrt_runtime, cuda_timing, tensorrt
from autotune.targets._tensorrt_commands import trtexec_shape_spec
from autotune.targets._tensorrt_log import inspector_layers
from autotune.targets.base import Built, TargetOptions
from autotune.targets.tensorrt import TensorRTTarget, builder_settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "trt_api" / "fixtures"


def _built(settings: dict, version: str) -> Built:
    """A build record as that TensorRT writes it: 11.x has no weak-typing flags."""
    info = {"settings": settings, "builder_config": {}, "trt_version": version, "weak_typing": version < "11"}
    return Built(artifact=Path("engine.plan"), info=info)


def _target() -> TensorRTTarget:
    return TensorRTTarget(TargetOptions(build_only=True), capabilities={})


# 1 ----------------------------------------------------------------- build routes


def test_build_routes_are_knob_tokens_from_the_json_knob_database():
    text = (FIXTURES / "all_build_routes.json").read_text()
    knobs = _tensorrt_build.parse_build_routes(text)
    assert knobs["-conv_use_long_w"] == {"values": ["on", "off"], "default": "on"}
    assert knobs["-kgen:max_regs"]["values"] == []  # unbounded: never enumerated
    routes = _tensorrt_build.one_off_build_routes(knobs)
    assert routes == ["-conv_use_long_w=off", "-kgen:codegen:cuda_tile=0", "-kgen:codegen:cuda_tile=2"]

    config = SimpleNamespace(all_build_routes=text)
    caps = _tensorrt_build.capabilities_of(SimpleNamespace(__version__="11.4.0.106"), config)
    caps["config_attributes"] = ["build_route"]
    choices = TensorRTTarget(TargetOptions(build_only=True), capabilities=caps).supported_choices(
        "build_route", ["default", "*"]
    )
    assert choices == ["default", *routes]
    assert not any(c in "{}[]," or c.startswith(("{", '"')) for c in choices)


def test_a_build_route_tensorrt_does_not_keep_fails_the_build():
    class IgnoringConfig:  # the 11.x setter logs an unknown knob and keeps the old route
        build_route = ""

        def __setattr__(self, name, value):
            pass

    with pytest.raises(RuntimeError, match="did not accept build_route '-nope=1'"):
        _tensorrt_build.set_build_route(IgnoringConfig(), "-nope=1")
    kept = SimpleNamespace(build_route="")
    _tensorrt_build.set_build_route(kept, "-conv_use_long_w=off")
    assert kept.build_route == "-conv_use_long_w=off"


# 2 ----------------------------------------------------------------- max_aux_streams


def test_the_heuristic_aux_stream_choice_is_never_passed_to_tensorrt():
    settings = builder_settings({"max_aux_streams": -1}, flavor="tensorrt")
    assert settings["max_aux_streams"] is None
    commands = _target().deploy_commands(_built(settings, "11.4.0.106"), {"max_aux_streams": -1})
    assert "maxAuxStreams" not in commands["trtexec"] and "max-aux-streams" not in commands["polygraphy"]
    assert builder_settings({"max_aux_streams": 0}, flavor="tensorrt")["max_aux_streams"] == 0


# 3 ----------------------------------------------------------------- Polygraphy floor


def test_polygraphy_older_than_the_floor_is_refused_with_the_fix(monkeypatch):
    floor = next(
        Requirement(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if r.startswith("polygraphy")
    )
    assert floor.specifier == f">={tensorrt.MIN_POLYGRAPHY}"
    assert Version(tensorrt.MIN_POLYGRAPHY) >= Version("0.49.26")  # the first with backend.tensorrt_rtx
    monkeypatch.setattr(tensorrt, "_distribution_version", lambda name: "0.49.20")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(name=name))  # all installed
    reason = TensorRTTarget.unavailable_reason(build_only=True)
    assert reason is not None and "polygraphy>=0.49.26" in reason and "0.49.20" in reason


# 4 ----------------------------------------------------------------- NVTX verbosity


def test_the_timed_context_runs_at_layer_names_only_nvtx_verbosity():
    import tensorrt_rtx as trt  # real ProfilingVerbosity enum (a dev dependency)

    context = SimpleNamespace(nvtx_verbosity=trt.ProfilingVerbosity.DETAILED)
    _tensorrt_runtime.quiet_nvtx(trt, context)
    assert context.nvtx_verbosity == trt.ProfilingVerbosity.LAYER_NAMES_ONLY


# 5 ----------------------------------------------------------------- misleading flags


def test_int8_and_fp8_flags_are_neither_offered_nor_built():
    caps = {"builder_flags": ["FP16", "BF16", "INT8", "FP8", "TF32"], "datatypes": ["HALF", "INT8", "FP8"]}
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities=caps)
    kept = target.supported_choices("precision", ["fp16_flag", "int8_flag", "fp8_flag", "int8", "fp8"])
    assert kept == ["fp16_flag", "int8", "fp8"]
    for precision in ("int8_flag", "fp8_flag"):
        with pytest.raises(BuildError, match="Q/DQ"):
            builder_settings({"precision": precision}, flavor="tensorrt")


# 6 ----------------------------------------------------------------- trtexec on 11


def test_trtexec_11_command_sets_the_build_route_and_the_cuda_graph_state():
    settings = builder_settings({"build_route": "-conv_use_long_w=off"}, flavor="tensorrt")
    no_graph_11 = _target().deploy_commands(_built(settings, "11.4.0.106"), {"cuda_graph": False})
    assert "--setBuildRoute=-conv_use_long_w=off" in shlex.split(no_graph_11["trtexec"])
    assert "--noCudaGraph" in shlex.split(no_graph_11["trtexec timing"])  # 11 captures a graph unless told not to
    graph_11 = _target().deploy_commands(_built(settings, "11.4.0.106"), {"cuda_graph": True})
    assert "CudaGraph" not in graph_11["trtexec timing"]  # --useCudaGraph is a deprecated no-op on 11
    on_10 = _target().deploy_commands(_built(builder_settings({}, flavor="tensorrt"), "10.16.1.11"), {})
    assert "CudaGraph" not in on_10["trtexec timing"]  # 10.x: no graph unless --useCudaGraph
    graph_10 = _target().deploy_commands(
        _built(builder_settings({}, flavor="tensorrt"), "10.16.1.11"), {"cuda_graph": True}
    )
    assert "--useCudaGraph" in shlex.split(graph_10["trtexec timing"])


def test_trtexec_11_commands_pass_no_deprecated_flag():
    settings = builder_settings({"precision": "fp16"}, flavor="tensorrt")  # graph-typed: strongly typed
    assert settings["strongly_typed"]
    for graph in (False, True):
        on_11 = _target().deploy_commands(_built(settings, "11.4.0.106"), {"cuda_graph": graph})
        words = shlex.split(on_11["trtexec"]) + shlex.split(on_11["trtexec timing"])
        assert "--stronglyTyped" not in words and "--useCudaGraph" not in words
    on_10 = _target().deploy_commands(_built(settings, "10.16.1.11"), {})
    assert "--stronglyTyped" in shlex.split(on_10["trtexec"])  # 10.x networks are weakly typed by default


def test_which_trtexec_flags_apply_follows_the_builder_flags_not_the_version_string():
    settings = builder_settings({"precision": "fp16"}, flavor="tensorrt")
    unrecorded = Built(artifact=Path("engine.plan"), info={"settings": settings, "trt_version": "10.16.1.11"})
    without_fp16 = TensorRTTarget(TargetOptions(build_only=True), capabilities={"builder_flags": ["TF32", "REFIT"]})
    assert "--stronglyTyped" not in without_fp16.deploy_commands(unrecorded, {})["trtexec"]
    with_fp16 = TensorRTTarget(TargetOptions(build_only=True), capabilities={"builder_flags": ["FP16", "TF32"]})
    unrecorded.info["trt_version"] = "11.4.0.106"
    assert "--stronglyTyped" in with_fp16.deploy_commands(unrecorded, {})["trtexec"]


# 7 ----------------------------------------------------------------- CUDA graph capture


class FakeCudaRuntime:
    """Stands in for cuda-python's `cuda.bindings.runtime` (needs a GPU); records calls."""

    cudaError_t = SimpleNamespace(cudaSuccess=0)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=2)
    INVALIDATED = 901

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.capturing = False

    def _ok(self, name, *values):
        self.calls.append(name)
        return (0, *values)

    def cudaEventCreate(self):
        return self._ok("cudaEventCreate", object())

    def cudaStreamSynchronize(self, stream):
        return self._ok("cudaStreamSynchronize")

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = True
        return self._ok("cudaStreamBeginCapture")

    def cudaStreamEndCapture(self, stream):
        self.calls.append("cudaStreamEndCapture")
        self.capturing = False
        return (self.INVALIDATED, "partial-graph") if self.broken else (0, "graph")

    def cudaGraphInstantiate(self, graph, flags):
        return self._ok("cudaGraphInstantiate", "exec")

    def cudaGraphDestroy(self, graph):
        return self._ok(f"cudaGraphDestroy({graph})")

    def cudaGetLastError(self):
        return self._ok("cudaGetLastError")

    def cudaGetErrorName(self, err):
        return (0, b"cudaErrorStreamCaptureInvalidated")

    def cudaEventRecord(self, event, stream):
        return self._ok("cudaEventRecord")

    def cudaEventSynchronize(self, event):
        return self._ok("cudaEventSynchronize")

    def cudaEventElapsedTime(self, start, end):
        return self._ok("cudaEventElapsedTime", 2.0)

    def cudaGraphLaunch(self, graph_exec, stream):
        return self._ok("cudaGraphLaunch")


def test_a_failed_graph_capture_reports_the_enqueue_error_and_times_without_a_graph():
    rt = FakeCudaRuntime()
    rt.broken = True
    enqueued = []

    def enqueue(stream):
        if rt.capturing:
            rt.broken = True
            raise RuntimeError("execute_async_v3 failed: an op cannot be captured")
        enqueued.append(stream)

    timer = cuda_timing.CudaEventTimer(enqueue, "stream", use_cuda_graph=True, runtime=rt)
    assert "execute_async_v3 failed" in timer.graph_fallback_reason
    assert "Invalidated" not in timer.graph_fallback_reason
    assert "cudaGraphDestroy(partial-graph)" in rt.calls  # the partial graph is not leaked
    assert timer() == pytest.approx(2e-3)
    assert len(enqueued) == 2 and "cudaGraphLaunch" not in rt.calls  # warm-up, then a plain run

    healthy = FakeCudaRuntime()
    healthy.broken = False
    graph_timer = cuda_timing.CudaEventTimer(lambda s: None, "stream", use_cuda_graph=True, runtime=healthy)
    graph_timer()
    assert graph_timer.graph_fallback_reason is None and "cudaGraphLaunch" in healthy.calls


# 8 ----------------------------------------------------------------- engines the runtime can run


class _Engine:
    """An ICudaEngine's I/O description (the runtime needs a GPU to deserialize a real one)."""

    def __init__(self, trt, tensors):
        self.trt, self.tensors = trt, tensors
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def _t(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if self._t(name)[1] == "in" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return getattr(self.trt.DataType, self._t(name)[2])

    def get_tensor_location(self, name):
        return getattr(self.trt.TensorLocation, self._t(name)[3])

    def is_shape_inference_io(self, name):
        return self._t(name)[4]


def test_shape_tensors_live_on_the_host_and_bf16_fp8_io_has_a_numpy_type():
    import tensorrt_rtx as trt  # real DataType / TensorLocation enums (a dev dependency)

    engine = _Engine(
        trt,
        [
            ("x", "in", "BF16", "DEVICE", False),
            ("target_shape", "in", "INT64", "HOST", True),
            ("scale", "in", "FP8", "DEVICE", False),
            ("boxes", "out", "FLOAT", "DEVICE", False),
        ],
    )
    plan = {t["name"]: t for t in _tensorrt_runtime.io_tensors(trt, engine)}
    assert plan["target_shape"]["on_host"] and not plan["x"]["on_host"]
    assert plan["x"]["dtype"].name == "bfloat16" and plan["scale"]["dtype"].name == "float8_e4m3fn"
    assert np.ones(2, dtype=plan["x"]["dtype"]).astype(np.float32).tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="'packed'.*INT4"):
        _tensorrt_runtime.numpy_dtype(trt.DataType.INT4, "packed")


def test_outputs_with_data_dependent_shapes_are_recognised():
    assert _tensorrt_runtime.has_data_dependent_shape((-1, 4))  # NonZero / NMS before enqueue
    assert not _tensorrt_runtime.has_data_dependent_shape((8, 10))
    assert not _tensorrt_runtime.has_data_dependent_shape(())


# 9 ----------------------------------------------------------------- engine inspector


@pytest.mark.parametrize("schema", ["10x", "11x"])
def test_layer_precisions_are_read_from_both_inspector_schemas(schema):
    layers = inspector_layers(json.loads((FIXTURES / f"inspector_{schema}.json").read_text()))
    assert [layer["onnx_nodes"] for layer in layers] == [["conv0", "relu0"], ["fc"]]
    assert [layer["stream"] for layer in layers] == [0, 1]
    from autotune.targets._tensorrt_profile import _layer_precision

    assert [_layer_precision(layer) for layer in layers] == ["fp16", "fp32"]


# 10 ---------------------------------------------------------------- cuda-python


def test_an_unrelated_cuda_package_is_not_taken_for_cuda_python(tmp_path, monkeypatch):
    (tmp_path / "cuda" / "pathfinder").mkdir(parents=True)  # cuda-pathfinder: a `cuda` namespace
    (tmp_path / "cuda" / "pathfinder" / "__init__.py").write_text("")
    # Only this directory and the standard library: the cuda-python installed here is hidden.
    monkeypatch.setattr(sys, "path", [str(tmp_path), *(p for p in sys.path if "-packages" not in p)])
    for name in [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    assert importlib.util.find_spec("cuda") is not None  # what the old check asked
    assert not cuda_timing.cuda_runtime_available()
    (tmp_path / "cuda" / "bindings").mkdir()
    (tmp_path / "cuda" / "bindings" / "__init__.py").write_text("")
    (tmp_path / "cuda" / "bindings" / "runtime.py").write_text("")
    importlib.invalidate_caches()
    assert cuda_timing.cuda_runtime_available()


def test_each_tensorrt_extra_pins_cuda_python_to_its_cuda_major():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    checked = 0
    for name in ("tensorrt", "tensorrt-cu13", "tensorrt-rtx"):
        reqs = [Requirement(r) for r in extras[name]]
        trt = next(r for r in reqs if r.name.startswith("tensorrt"))
        cuda_major = int(trt.name.rsplit("-cu", 1)[1])
        cuda = next(r for r in reqs if r.name == "cuda-python")
        assert cuda.specifier.contains(f"{cuda_major}.9.0"), name
        assert not cuda.specifier.contains(f"{cuda_major + 1}.0.0"), name
        assert not cuda.specifier.contains(f"{cuda_major - 1}.9.0"), name
        checked += 1
    assert checked == 3


# 11 ---------------------------------------------------------------- input names


def _trtexec_parse_shapes(value: str) -> dict[str, list[int]]:
    """trtexec's own parsing of a shape spec (sampleOptions.cpp getShapesBuild,
    splitNameAndValue, removeSingleQuotationMarks): split on ','; a quoted name may hold ':'."""
    shapes = {}
    for pair in value.split(","):
        if pair.startswith("'"):
            name, _, rest = pair[1:].partition("'")
            dims = rest.lstrip(":")
        else:
            name, _, dims = pair.partition(":")
        shapes[name] = [int(d) for d in dims.split("x")]
    return shapes


def test_input_names_with_colons_survive_both_commands():
    from polygraphy.tools.args.util import util as args_util

    profile = {"input:0": [[1, 3], [4, 3], [8, 3]], "mask": [[1, 7], [4, 7], [8, 7]]}
    assert _trtexec_parse_shapes(trtexec_shape_spec(profile, 1)) == {"input:0": [4, 3], "mask": [4, 7]}
    settings = builder_settings({}, flavor="tensorrt", profile=profile)
    poly = shlex.split(_target().deploy_commands(_built(settings, "11.4.0.106"), {})["polygraphy"])
    opt = poly[poly.index("--trt-opt-shapes") + 1 : poly.index("--trt-max-shapes")]
    meta = args_util.parse_meta(opt, includes_dtype=False)  # Polygraphy's own parser
    assert {name: list(m.shape) for name, m in meta.items()} == {"input:0": [4, 3], "mask": [4, 7]}


def test_an_input_name_trtexec_cannot_parse_gets_no_trtexec_command():
    profile = {"a,b": [[1, 3], [4, 3], [8, 3]]}
    with pytest.raises(ValueError, match="splits on ','"):
        trtexec_shape_spec(profile, 0)
    settings = builder_settings({}, flavor="tensorrt", profile=profile)
    commands = _target().deploy_commands(_built(settings, "11.4.0.106"), {})
    assert commands["trtexec"].startswith("# no trtexec command") and "polygraphy" in commands["trtexec"]


class _Context:
    """An IExecutionContext's binding calls, recorded (a real one needs a GPU)."""

    def __init__(self, output_shapes):
        self.output_shapes = output_shapes
        self.addresses, self.allocators, self.input_shapes = {}, {}, {}

    def set_input_shape(self, name, shape):
        self.input_shapes[name] = tuple(shape)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def get_tensor_shape(self, name):
        return self.output_shapes[name]

    def set_output_allocator(self, name, allocator):
        self.allocators[name] = allocator


def test_staging_binds_host_shape_tensors_and_gives_data_dependent_outputs_an_allocator(monkeypatch):
    import tensorrt_rtx as trt  # real enums and IOutputAllocator base class (a dev dependency)

    rt = FakeCudaRuntime()
    mallocs = []
    rt.cudaMalloc = lambda n: (mallocs.append(n), (0, 0x1000 + len(mallocs)))[1]
    rt.cudaMemcpyAsync = lambda *a: (0,)
    rt.cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    monkeypatch.setattr(_tensorrt_runtime, "cudart", lambda: rt)
    monkeypatch.setattr(cuda_timing, "cudart", lambda: rt)

    engine = _Engine(
        trt,
        [
            ("x", "in", "FLOAT", "DEVICE", False),
            ("target_shape", "in", "INT64", "HOST", True),
            ("indices", "out", "INT64", "DEVICE", False),  # NonZero: (-1, 2) until enqueue
            ("y", "out", "FLOAT", "DEVICE", False),
        ],
    )
    session = object.__new__(_tensorrt_runtime.TensorRTSession)
    session._trt, session.engine, session.stream = trt, engine, "stream"
    session.context = _Context({"indices": (-1, 2), "y": (4, 10)})
    session._tensors = {t["name"]: t for t in _tensorrt_runtime.io_tensors(trt, engine)}
    session.inputs, session.outputs = ["x", "target_shape"], ["indices", "y"]
    session._buffers, session._host_inputs, session._allocator = {}, {}, None

    feeds = {"x": np.ones((4, 3), np.float32), "target_shape": np.array([4, 10], np.int64)}
    specs = session._stage(feeds)
    ctx = session.context
    shape_array = session._host_inputs["target_shape"]
    assert ctx.addresses["target_shape"] == shape_array.ctypes.data  # host memory, not a device pointer
    assert shape_array.tolist() == [4, 10]
    assert "indices" in ctx.allocators and "indices" not in ctx.addresses
    assert isinstance(ctx.allocators["indices"], trt.IOutputAllocator)
    assert specs["y"] == ((4, 10), np.dtype(np.float32))
    assert sorted(mallocs) == [4 * 3 * 4, 4 * 10 * 4]  # x and y only: no 1-byte buffer for indices
    ptr = ctx.allocators["indices"].reallocate_output("indices", 0, 96, 256)  # TensorRT's call at enqueue
    assert ptr and mallocs[-1] == 96


def test_cuda_python_of_another_cuda_major_than_tensorrt_is_refused(monkeypatch):
    installed = {"tensorrt-cu12-bindings": "10.16.1.11", "cuda-bindings": "13.5.0"}
    monkeypatch.setattr(tensorrt, "_distribution_version", installed.get)
    reason = tensorrt.cuda_python_mismatch("tensorrt")
    assert "cuda-python 13.5.0 is for CUDA 13" in reason and "'cuda-python>=12.0,<13'" in reason
    installed["cuda-bindings"] = "12.9.4"
    assert tensorrt.cuda_python_mismatch("tensorrt") is None
    installed.update({"tensorrt-rtx-cu13": "1.7.1.116"})  # RTX wheels are CUDA 13
    assert "built for CUDA 13" in tensorrt.cuda_python_mismatch("tensorrt_rtx")
    assert tensorrt.cuda_python_mismatch("tensorrt") is None  # still cu12 + 12.9
