"""A TensorRT engine running on the GPU: deserialize, stage device buffers, execute_async_v3.

Only usable where a GPU, the TensorRT runtime and cuda-python exist; imported lazily by
`TensorRTTarget.open`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from autotune.targets._tensorrt_commands import TIMED_NVTX_VERBOSITY
from autotune.targets._tensorrt_log import inspector_layers
from autotune.targets.base import Feeds, Session
from autotune.targets.cuda_timing import check, cuda_event_timer, cudart


def numpy_dtype(datatype: Any, tensor: str = "") -> np.dtype:
    """The numpy dtype of a TensorRT `DataType`, BF16 and FP8 included (`trt.nptype` raises
    for them); ml_dtypes provides those. Sub-byte types (INT4, FP4, E8M0) are packed, with no
    numpy element type.

    Raises:
        TypeError: a packed type, naming the tensor.
    """
    name = getattr(datatype, "name", str(datatype).rsplit(".", 1)[-1])
    if name in ("BF16", "FP8"):
        return np.dtype(ml_dtypes.bfloat16 if name == "BF16" else ml_dtypes.float8_e4m3fn)
    table = {
        "FLOAT": np.float32,
        "HALF": np.float16,
        "INT8": np.int8,
        "INT32": np.int32,
        "INT64": np.int64,
        "BOOL": np.bool_,
        "UINT8": np.uint8,
    }
    if name not in table:
        raise TypeError(f"tensor {tensor!r} has TensorRT type {name}, a packed type this runtime cannot stage")
    return np.dtype(table[name])


def io_tensors(trt: Any, engine: Any) -> list[dict[str, Any]]:
    """Every I/O tensor of an engine: name, is_input, dtype (numpy), on_host.

    on_host: a shape tensor (`is_shape_inference_io`) or any tensor TensorRT places on the
    host (`get_tensor_location` HOST); its address must be host memory, not a device pointer.
    """
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        on_host = engine.get_tensor_location(name) == trt.TensorLocation.HOST
        if hasattr(engine, "is_shape_inference_io"):
            on_host = on_host or bool(engine.is_shape_inference_io(name))
        tensors.append(
            {
                "name": name,
                "is_input": engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                "dtype": numpy_dtype(engine.get_tensor_dtype(name), name),
                "on_host": on_host,
            }
        )
    return tensors


def has_data_dependent_shape(shape: Any) -> bool:
    """-1 in an output shape after every input shape is set: NonZero, NMS and the like."""
    return any(int(d) < 0 for d in shape)


def quiet_nvtx(trt: Any, context: Any) -> None:
    """Lowers the context's NVTX verbosity to LAYER_NAMES_ONLY (TensorRT's build default).

    Engines are built with DETAILED profiling verbosity for the layer table, and an execution
    context starts at its engine's verbosity; TensorRT documents that DETAILED adds latency
    to enqueueV3, which the timing would count.
    """
    if hasattr(context, "nvtx_verbosity"):
        # the exported timing command times at the same (`_tensorrt_commands.trtexec_timing_args`)
        context.nvtx_verbosity = getattr(trt.ProfilingVerbosity, TIMED_NVTX_VERBOSITY)


def _output_allocator(trt: Any) -> Any:
    """An IOutputAllocator for outputs whose size is known only after enqueue (the pattern of
    Polygraphy's TrtRunner, on cuda-python buffers)."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, _DeviceBuffer] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            buf = self.buffers.get(tensor_name)
            if buf is None or buf.nbytes < size:
                if buf is not None:
                    buf.free()
                buf = self.buffers[tensor_name] = _DeviceBuffer(size)
            return int(buf.ptr)

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

        def free(self) -> None:
            for buf in self.buffers.values():
                buf.free()
            self.buffers.clear()

    return OutputAllocator()


class _DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr = check(cudart().cudaMalloc(self.nbytes))

    def free(self) -> None:
        if self.ptr is not None:
            cudart().cudaFree(self.ptr)
            self.ptr = None


_LOG = logging.getLogger(__name__)


class TensorRTSession(Session):
    """Runs a serialized engine with `IExecutionContext.execute_async_v3` on its own stream.

    Args:
        engine_path (Path): the plan file.
        module_name (str): "tensorrt" or "tensorrt_rtx".
        use_cuda_graph (bool): `timer` captures one execution into a CUDA graph. Default: False.
    """

    def __init__(self, engine_path: Path, module_name: str = "tensorrt", use_cuda_graph: bool = False) -> None:
        trt = importlib.import_module(module_name)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"could not deserialize {engine_path} with {module_name}")
        self.context = self.engine.create_execution_context()
        quiet_nvtx(trt, self.context)
        self.use_cuda_graph = use_cuda_graph
        self.cuda_graph_fallback_reason: str | None = None  # why timing ran without a graph
        self.stream = check(cudart().cudaStreamCreate())
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._timers: list[Any] = []
        self._tensors = {t["name"]: t for t in io_tensors(trt, self.engine)}
        self.inputs = [n for n, t in self._tensors.items() if t["is_input"]]
        self.outputs = [n for n, t in self._tensors.items() if not t["is_input"]]
        self._host_inputs: dict[str, np.ndarray] = {}  # shape tensors: TensorRT reads them at enqueue
        self._allocator: Any = None

    def _dtype(self, name: str) -> np.dtype:
        return self._tensors[name]["dtype"]

    def _buffer(self, name: str, nbytes: int) -> _DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._buffers[name] = _DeviceBuffer(nbytes)
        return buf

    def _stage(self, feeds: Feeds) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Copies inputs to the device and binds every I/O tensor address; returns output specs."""
        rt = cudart()
        for name in self.inputs:
            host = np.ascontiguousarray(feeds[name], dtype=self._dtype(name))
            if self._tensors[name]["on_host"]:
                self._host_inputs[name] = host  # kept alive: TensorRT reads it at each enqueue
                self.context.set_input_shape(name, host.shape)
                self.context.set_tensor_address(name, host.ctypes.data)
                continue
            self.context.set_input_shape(name, host.shape)
            buf = self._buffer(name, host.nbytes)
            check(
                rt.cudaMemcpyAsync(
                    buf.ptr, host.ctypes.data, host.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream
                )
            )
            check(rt.cudaStreamSynchronize(self.stream))  # `host` may be freed after this
            self.context.set_tensor_address(name, int(buf.ptr))
        specs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = self._dtype(name)
            if has_data_dependent_shape(shape):
                # Size known only after enqueue: TensorRT asks the allocator for memory and
                # reports the real shape (a 1-byte buffer would be overrun).
                if self._allocator is None:
                    self._allocator = _output_allocator(self._trt)
                self.context.set_output_allocator(name, self._allocator)
                specs[name] = (shape, dtype)
                continue
            buf = self._buffer(name, int(np.prod(shape)) * dtype.itemsize)
            self.context.set_tensor_address(name, int(buf.ptr))
            specs[name] = (shape, dtype)
        return specs

    def _execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("execute_async_v3 failed (see the TensorRT log)")

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        rt = cudart()
        specs = self._stage(feeds)
        self._execute(self.stream)
        outputs = {}
        for name, (shape, dtype) in specs.items():
            ptr = self._buffers[name].ptr if name in self._buffers else None
            if has_data_dependent_shape(shape):
                check(rt.cudaStreamSynchronize(self.stream))
                shape = self._allocator.shapes[name]
                ptr = self._allocator.buffers[name].ptr
            host = np.empty(shape, dtype=dtype)
            if not host.nbytes:
                outputs[name] = host
                continue
            check(
                rt.cudaMemcpyAsync(
                    host.ctypes.data,
                    ptr,
                    host.nbytes,
                    rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                    self.stream,
                )
            )
            outputs[name] = host
        check(rt.cudaStreamSynchronize(self.stream))
        return outputs

    def timer(self, feeds: Feeds) -> Callable[[], float]:
        """Stages `feeds` once on the device, then times `execute_async_v3` with CUDA events
        (a captured CUDA graph of it when the session's `use_cuda_graph` is on)."""
        self._stage(feeds)
        timer = cuda_event_timer(self._execute, self.stream, use_cuda_graph=self.use_cuda_graph)
        if timer.graph_fallback_reason:
            self.cuda_graph_fallback_reason = timer.graph_fallback_reason
            _LOG.warning("%s", timer.graph_fallback_reason)
        self._timers.append(timer)
        return timer

    def layer_times_ms(self, feeds: Feeds, runs: int = 10) -> dict[str, float]:
        """Mean device milliseconds per engine layer over `runs` executions, from an IProfiler.

        Profiles are reported by `report_to_profiler` after each synchronized run, with
        `enqueue_emits_profile` off: the way TensorRT documents for CUDA graphs, and the same on
        10.x and 11.x (test_trt_api checks the attributes on both). Needs a GPU.
        """
        trt: Any = self._trt  # tensorrt or tensorrt_rtx, untyped: Any lets mypy accept the base class

        class LayerTimes(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.total_ms: dict[str, float] = {}

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                self.total_ms[layer_name] = self.total_ms.get(layer_name, 0.0) + float(ms)

        self._stage(feeds)
        self._execute(self.stream)  # shape-dependent setup outside the profile
        check(cudart().cudaStreamSynchronize(self.stream))
        profiler = LayerTimes()
        self.context.profiler = profiler
        self.context.enqueue_emits_profile = False
        try:
            for _ in range(runs):
                self._execute(self.stream)
                check(cudart().cudaStreamSynchronize(self.stream))
                self.context.report_to_profiler()
        finally:
            self.context.enqueue_emits_profile = True
        return {name: ms / runs for name, ms in profiler.total_ms.items()}

    def engine_layers(self) -> list[dict[str, Any]]:
        """The engine inspector's layers (see `_tensorrt_log.layer_from_inspector`; reads
        the 10.x and 11.x JSON schemas), with this context's shapes and tactics."""
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        info = json.loads(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))
        return inspector_layers(info)

    def close(self) -> None:
        for timer in self._timers:
            timer.close()
        self._timers.clear()
        if self.stream is not None:
            cudart().cudaStreamSynchronize(self.stream)
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if self._allocator is not None:
            self._allocator.free()
            self._allocator = None
        if self.stream is not None:
            cudart().cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None
