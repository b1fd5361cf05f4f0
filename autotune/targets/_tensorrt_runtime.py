"""A TensorRT engine running on the GPU: deserialize, stage device buffers, execute_async_v3.

Only usable where a GPU, the TensorRT runtime and cuda-python exist; imported lazily by
`TensorRTTarget.open`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autotune.targets.base import Feeds, Session
from autotune.targets.cuda_timing import check, cuda_event_timer, cudart


class _DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr = check(cudart().cudaMalloc(self.nbytes))

    def free(self) -> None:
        if self.ptr is not None:
            cudart().cudaFree(self.ptr)
            self.ptr = None


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
        self.use_cuda_graph = use_cuda_graph
        self.stream = check(cudart().cudaStreamCreate())
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._timers: list[Any] = []
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

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
            host = np.empty(shape, dtype=dtype)
            check(
                rt.cudaMemcpyAsync(
                    host.ctypes.data,
                    self._buffers[name].ptr,
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
        self._timers.append(timer)
        return timer

    def close(self) -> None:
        for timer in self._timers:
            timer.close()
        self._timers.clear()
        if self.stream is not None:
            cudart().cudaStreamSynchronize(self.stream)
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if self.stream is not None:
            cudart().cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None
