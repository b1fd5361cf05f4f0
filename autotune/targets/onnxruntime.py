"""ONNX Runtime target: tunes session options (and, through the pipeline, the graph).

The CPU execution provider runs everywhere; the CUDA provider is offered where
`onnxruntime-gpu` is installed and a GPU is visible, and is then preferred (the environment
variable AUTOTUNE_ORT_PROVIDER=cpu|cuda forces one). On CUDA, sessions run through I/O
binding on device-resident buffers, so host<->device copies stay out of the timed region
(set AUTOTUNE_ORT_END_TO_END=1 to time them too), and CUDA graph capture replays from
fixed bound buffers.
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
import onnx
import onnxruntime as ort

from autotune.errors import BuildError, first_line
from autotune.targets._onnxruntime_options import (
    EXECUTION_MODES,
    GRAPH_OPTIMIZATION_LEVELS,
    _preload_cuda_dlls,
    cuda_provider_options,
    session_options,
)
from autotune.targets._onnxruntime_profile import profile_onnxruntime
from autotune.targets.base import Built, Config, Feeds, Session, Target, TunedInputs
from autotune.targets.cuda_timing import visible_gpu

# Knobs that change what a session does; they (with the model bytes) define the digest.
SESSION_KNOBS = (
    "graph_optimization_level",
    "execution_mode",
    "intra_op_threads",
    "inter_op_threads",
    "intra_op_spinning",
)
# The session knobs that still change what runs once ONNX Runtime has optimized the graph
# (graph_optimization_level is then reflected in the optimized model itself).
RUNTIME_KNOBS = ("execution_mode", "intra_op_threads", "inter_op_threads", "intra_op_spinning")
# The CPU build writes ONNX Runtime's optimized graph here (trial workdir; never exported).
OPTIMIZED_MODEL_FILE = "ort_optimized.onnx"
# CUDA execution provider knobs (its provider options); defaults are the provider's own.
CUDA_KNOBS = ("cudnn_conv_algo_search", "use_tf32", "cuda_graph", "prefer_nhwc")
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
PROVIDER_ENV = "AUTOTUNE_ORT_PROVIDER"  # "cpu" | "cuda": force a provider instead of probing
END_TO_END_ENV = "AUTOTUNE_ORT_END_TO_END"  # "1": time host->device->host copies too


def _cpu_count() -> int | None:
    """Cores this process is pinned to, when pinned to fewer than the machine has."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    pinned = len(os.sched_getaffinity(0))
    return pinned if pinned < (os.cpu_count() or pinned) else None


def cuda_provider_reason() -> str | None:
    """None when the CUDA execution provider can run here, else why not.

    Never initializes CUDA in this process (Ray workers are forked from it later): the
    provider list is compiled in, and the GPU is probed in a child process.
    """
    forced = os.environ.get(PROVIDER_ENV, "").lower()
    if forced == "cpu":
        return f"{PROVIDER_ENV}=cpu"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this ONNX Runtime has no CUDA execution provider (pip install onnxruntime-gpu)"
    if visible_gpu().get("count", 0) < 1:
        return "no GPU is visible"
    return None


def use_cuda() -> bool:
    """Whether the onnxruntime target runs on the CUDA execution provider here."""
    return cuda_provider_reason() is None


def _cuda_session(model_path: Path, config: Config, *, probe: bool = False) -> Any:
    """An InferenceSession on the CUDA provider; BuildError when it cannot be created or
    ONNX Runtime silently fell back to the CPU.

    Args:
        probe (bool): a quick session (heuristic conv search, no CUDA graph) to learn output
            shapes. Default: False.
    """
    _preload_cuda_dlls()
    if probe:
        config = {k: v for k, v in config.items() if k != "cuda_graph"} | {"cudnn_conv_algo_search": "HEURISTIC"}
    providers = [("CUDAExecutionProvider", cuda_provider_options(config)), "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(model_path), session_options(config), providers=providers)
    except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
        raise BuildError(f"ONNX Runtime could not create a CUDA session: {first_line(exc, 400)}") from None
    if "CUDAExecutionProvider" not in session.get_providers():
        raise BuildError("ONNX Runtime fell back to the CPU: the CUDA execution provider did not load")
    return session


_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


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


class OnnxRuntimeCudaSession(Session):
    """An `InferenceSession` on the CUDA provider, run through I/O binding.

    Inputs are copied to device buffers once per `feeds`; outputs are bound on the device
    (preallocated at fixed addresses under CUDA graph capture, whose first run captures).

    Args:
        session: the ONNX Runtime session.
        cuda_graph (bool): the session was created with `enable_cuda_graph`.
        output_specs (dict | None): output name -> (shape, dtype) at this batch size, needed
            to preallocate outputs under CUDA graph capture. Default: None.
        end_to_end (bool): time host->device input copies and device->host output copies
            too. Default: False.
    """

    def __init__(
        self, session: Any, *, cuda_graph: bool = False,
        output_specs: Mapping[str, tuple[list[int], str]] | None = None, end_to_end: bool = False,
    ) -> None:  # fmt: skip
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self.cuda_graph = cuda_graph
        self.output_specs = dict(output_specs or {})
        self.end_to_end = end_to_end
        self._binding: Any = None
        self._inputs: dict[str, Any] = {}
        self._staged_id: int | None = None

    def _stage(self, feeds: Feeds) -> Any:
        """Binds `feeds` (copied to the device) and the outputs; reuses buffers under CUDA graph."""
        if self._binding is not None and self._staged_id == id(feeds):
            return self._binding
        if self._binding is not None and self.cuda_graph:
            # A captured graph replays from fixed addresses: overwrite the same input buffers.
            for name, array in feeds.items():
                self._inputs[name].update_inplace(np.ascontiguousarray(array))
            self._staged_id = id(feeds)
            return self._binding
        binding = self.session.io_binding()
        self._inputs = {}
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0)
            self._inputs[name] = value
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            if self.cuda_graph:
                shape, dtype = self.output_specs[name]
                binding.bind_ortvalue_output(
                    name, ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype).type, "cuda", 0)
                )
            else:
                binding.bind_output(name, "cuda", 0)
        self._binding, self._staged_id = binding, id(feeds)
        return binding

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        binding = self._stage(feeds)
        self.session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        return dict(zip(self.output_names, outputs, strict=True))

    def timer(self, feeds: Feeds) -> Callable[[], float]:
        binding = self._stage(feeds)
        session = self.session
        if self.end_to_end:
            inputs = self._inputs
            arrays = {name: np.ascontiguousarray(array) for name, array in feeds.items()}

            def time_end_to_end() -> float:
                start = time.perf_counter()
                for name, array in arrays.items():
                    inputs[name].update_inplace(array)
                session.run_with_iobinding(binding)
                binding.copy_outputs_to_cpu()
                return time.perf_counter() - start

            return time_end_to_end

        def time_once() -> float:
            # run_with_iobinding returns once the outputs are ready (it synchronizes them).
            start = time.perf_counter()
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return time.perf_counter() - start

        return time_once

    def close(self) -> None:
        self._binding = None
        self._inputs = {}
        self.session = None


def optimized_graph_bytes(path: Path) -> bytes:
    """The bytes of an optimized model that define what runs: its graph and opset imports.

    Fields that do not change execution (producer, doc strings, metadata, graph and node
    names, shape annotations of intermediate tensors, which a pass's shape inference adds) are
    dropped; tensor names stay (a renamed edge gives another digest, never a wrong match), so a pass that only rewrote what ONNX Runtime rewrites anyway gives the same
    bytes. On a model ONNX cannot parse, the file's bytes.
    """

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - fall back to the raw bytes
        return path.read_bytes()
    graph = model.graph
    graph.name = ""
    graph.doc_string = ""
    del graph.value_info[:]
    for node in graph.node:
        node.ClearField("name")
        node.ClearField("doc_string")
    stripped = onnx.ModelProto(ir_version=model.ir_version, graph=graph)
    stripped.opset_import.extend(sorted(model.opset_import, key=lambda o: (o.domain, o.version)))
    return stripped.SerializeToString(deterministic=True)


def _run_at_tuned_shapes(tuned: TunedInputs, *, io_binding: bool) -> list[str]:
    """The lines of `python.py` after its session (numpy imported above it): the batch and shapes
    tuned, printed, and one run at them (zeros stand in for the user's data). Under CUDA graph
    the run goes through io_binding with device buffers, as the graph needs."""

    inputs = {name: (shape, tuned.dtypes[name]) for name, shape in tuned.shapes.items()}
    lines = [
        "",
        f"BATCH_SIZE = {tuned.batch_size}  # the batch this configuration was tuned and measured at",
        f"INPUTS = {inputs!r}  # name: (shape, dtype) at that batch",
        'print(f"tuned for batch {BATCH_SIZE}: " + ", ".join(f"{n} {s} {d}" for n, (s, d) in INPUTS.items()))',
        "# Your data goes here, at these shapes; zeros stand in for it.",
        "feeds = {name: np.zeros(shape, dtype) for name, (shape, dtype) in INPUTS.items()}",
    ]
    if io_binding:
        lines += [
            "binding = session.io_binding()",
            "for name, array in feeds.items():",
            '    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))',
            "for output in session.get_outputs():",
            '    binding.bind_output(output.name, "cuda")',
            "session.run_with_iobinding(binding)",
            "outputs = binding.copy_outputs_to_cpu()",
        ]
    else:
        lines.append("outputs = session.run(None, feeds)")
    lines.append(
        'print("outputs: " + ", ".join(f"{o.name} {list(v.shape)}" for o, v in zip(session.get_outputs(), outputs)))'
    )
    return lines


class OnnxRuntimeTarget(Target):
    """Tunes ONNX Runtime session options on the CUDA execution provider where it can run,
    else on the CPU execution provider.

    The provider is chosen when the class is first asked (`use_cuda()`, cached per process);
    AUTOTUNE_ORT_PROVIDER=cpu|cuda forces one.
    """

    name = "onnxruntime"
    knob_names = frozenset(SESSION_KNOBS + CUDA_KNOBS)
    precisions = ("fp32", "int8")
    quantization_scheme = "asymmetric_u8"  # ORT's CPU kernels: uint8 activations, int8 weights
    auto_rank = 10  # --target auto's choice where TensorRT cannot run

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.cuda = use_cuda()
        if self.cuda:
            # fp16 casts every op whose ONNX schema allows it: the CUDA provider has fp16
            # kernels for them. No bf16: the CUDA provider (1.31) has no bf16 kernel for
            # common ops (BatchNormalization), nor has the CPU provider, so a bf16-cast CNN
            # cannot create a session ("Provider type for BatchNormalization node ... is not
            # set"); and the CUDA kernel table cannot be listed to cast only what runs
            # (get_all_opkernel_def segfaults loading the TensorRT provider library).
            self.precisions = ("fp32", "fp16")
            self.precision_kernels = "onnx_schema"
        else:
            self.precision_kernels = "onnxruntime_cpu"
            # The CPU provider has dynamic INT8 kernels (DynamicQuantizeLinear, MatMulInteger).
            self.quantization_modes = ("static", "dynamic")

    @classmethod
    def needs_gpu(cls, options: Any) -> bool:
        """One GPU per trial when the CUDA provider is used and candidates are measured."""
        return use_cuda() and not options.build_only

    @classmethod
    def knobs_named_by(cls, reason: str) -> dict[str, Any]:
        """A CUDA graph that cannot be captured ("This session cannot use the graph capture
        feature as requested by the user as all compute graph nodes have not been partitioned to
        the CUDAExecutionProvider") fails whatever else the configuration holds: a node of the
        model has no CUDA kernel (YOLOv8n, runs 5 and 7 on an H100: three recipe trials failed so
        before the two-failure rule held)."""
        return {"cuda_graph": True} if "cannot use the graph capture feature" in reason else {}

    @classmethod
    def probe_first(cls) -> list[dict[str, Any]]:
        """A CUDA graph (`knobs_named_by`): one trial with it shows whether the model can be captured."""
        return [{"cuda_graph": True}]

    @classmethod
    def default_space_path(cls) -> Path:
        """`search_spaces/onnxruntime-cuda.yaml` on the CUDA provider, else onnxruntime.yaml."""
        path = super().default_space_path()
        return path.with_name("onnxruntime-cuda.yaml") if use_cuda() else path

    @classmethod
    def unavailable_reason(cls, build_only: bool = False) -> str | None:
        return None  # ONNX Runtime is a dependency of autotune (imported above); its CPU provider always runs

    def layer_profile(self, built: Built, model_path: Path, config: Config, feeds: Feeds) -> dict[str, Any]:
        """ONNX Runtime's profiler over warm runs of the model on this target's provider, per node
        (`_onnxruntime_profile.profile_onnxruntime`)."""
        return profile_onnxruntime(model_path, config, feeds, cuda=self.cuda)

    def describe(self) -> str:
        if self.cuda:
            gpu = visible_gpu()
            return f"ONNX Runtime {ort.__version__}, CUDAExecutionProvider, {gpu.get('name', 'GPU')}"
        return f"ONNX Runtime {ort.__version__}, CPUExecutionProvider, {os.cpu_count()} cores"

    def supported_choices(self, knob: str, choices: Sequence[Any]) -> list[Any]:
        if knob == "graph_optimization_level":
            return [c for c in choices if c in GRAPH_OPTIMIZATION_LEVELS]
        if knob == "execution_mode":
            return [c for c in choices if c in EXECUTION_MODES]
        if knob == "cudnn_conv_algo_search":
            return [c for c in choices if c in CONV_ALGO_SEARCH] if self.cuda else []
        if knob in CUDA_KNOBS and not self.cuda:
            return []
        return super().supported_choices(knob, choices)

    def build(
        self, model_path: Path, config: Config, workdir: Path, input_shapes: Mapping[str, Sequence[int]]
    ) -> Built:
        start = time.perf_counter()
        info: dict[str, Any] = {}
        optimized: Path | None = None
        if self.cuda:
            info.update(self._cuda_build(model_path, config, input_shapes))
        else:
            optimized = Path(workdir) / OPTIMIZED_MODEL_FILE
            optimized.unlink(missing_ok=True)
            saving = session_options(config)
            saving.optimized_model_filepath = str(optimized)
            # Saving can fail where running does not (a model over protobuf's 2 GB): then the
            # session is created again without it and the digest is of the input model.
            for options in (saving, session_options(config)):
                try:
                    ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
                    break
                except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
                    error = exc
                    optimized.unlink(missing_ok=True)
            else:
                raise BuildError(f"ONNX Runtime could not create a session: {first_line(error, 400)}") from None
        if optimized is not None and optimized.is_file():
            # What runs is ONNX Runtime's optimized graph: two configurations it optimizes to
            # the same graph (a pass ORT applies anyway) share one measurement.
            digest = hashlib.sha256(optimized_graph_bytes(optimized))
            knobs: tuple[str, ...] = RUNTIME_KNOBS
            info["digest_of"] = OPTIMIZED_MODEL_FILE
        else:
            digest = hashlib.sha256(model_path.read_bytes())
            knobs = SESSION_KNOBS + CUDA_KNOBS if self.cuda else SESSION_KNOBS
        digest.update(json.dumps({k: config.get(k) for k in knobs}, sort_keys=True).encode())
        digest.update(json.dumps({k: list(v) for k, v in input_shapes.items()}, sort_keys=True).encode())
        return Built(
            artifact=model_path,
            info={
                "build_time_s": time.perf_counter() - start,
                "model_size_bytes": model_path.stat().st_size,
                "provider": "CUDAExecutionProvider" if self.cuda else "CPUExecutionProvider",
                **info,
            },
            digest=digest.hexdigest(),
        )

    def _cuda_build(
        self, model_path: Path, config: Config, input_shapes: Mapping[str, Sequence[int]]
    ) -> dict[str, Any]:
        """Checks the model loads on the CUDA provider; under CUDA graph capture, learns the
        output shapes (one run of a quick probe session on zeros) to preallocate them."""
        session = _cuda_session(model_path, config, probe=bool(config.get("cuda_graph")))
        info: dict[str, Any] = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        info["gpu"] = visible_gpu().get("name", "")
        if config.get("cuda_graph"):
            feeds: dict[str, np.ndarray] = {}
            for spec in session.get_inputs():
                dtype = _ORT_TO_NUMPY.get(spec.type, np.float32)
                shape = [int(d) for d in input_shapes.get(spec.name, [])]
                feeds[spec.name] = np.zeros(shape, dtype=dtype)
            try:
                outputs = session.run(None, feeds)
            except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
                raise BuildError(
                    f"ONNX Runtime could not run the probe for CUDA graph: {first_line(exc, 400)}"
                ) from None
            info["output_specs"] = {
                o.name: [list(out.shape), str(out.dtype)] for o, out in zip(session.get_outputs(), outputs, strict=True)
            }
        del session
        return info

    def open(self, built: Built, config: Config) -> Session:
        if self.cuda:
            session = _cuda_session(built.artifact, config)
            specs = {name: (shape, dtype) for name, (shape, dtype) in built.info.get("output_specs", {}).items()}
            return OnnxRuntimeCudaSession(
                session, cuda_graph=bool(config.get("cuda_graph")), output_specs=specs,
                end_to_end=os.environ.get(END_TO_END_ENV) == "1",
            )  # fmt: skip
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
        if self.cuda:
            lines.append(f"cuda = {cuda_provider_options(config)!r}")
            providers = '[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]'
            if config.get("cuda_graph"):
                lines.append("# CUDA graph: run through session.io_binding() with fixed device buffers")
        else:
            providers = '["CPUExecutionProvider"]'
        lines.append(f'session = ort.InferenceSession("{built.artifact.name}", so, providers={providers})')
        if built.tuned is not None:
            lines = [f"# Tuned and measured at {built.tuned.describe()}: run it there.", "import numpy as np", *lines]
            lines += _run_at_tuned_shapes(built.tuned, io_binding=self.cuda and bool(config.get("cuda_graph")))
        return {"python": "\n".join(lines)}
