"""GPU latency of anything that enqueues work on a CUDA stream, timed with CUDA events.

`cuda_event_timer` takes any `enqueue(stream)` callable (TensorRT's `execute_async_v3`, a
memset, a kernel launch), optionally captures it once into a CUDA graph, and returns a
`time_once` callable for `autotune.measure.measure_latency`. Events are recorded on the same
stream right around the work, so host-side Python overhead between calls is not counted,
and host↔device copies are not part of it unless `enqueue` does them.

Needs cuda-python (`cuda.bindings`, or the older `cuda.cudart` layout).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def cudart() -> Any:
    """The CUDA runtime bindings of cuda-python (new and old module layouts)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:  # cuda-python < 12.6
        return importlib.import_module("cuda.cudart")


def cuda_runtime_available() -> bool:
    """Whether cuda-python's CUDA runtime bindings are importable.

    Not `find_spec("cuda")`: `cuda` is a namespace package that unrelated distributions
    (cuda-pathfinder, cuda-core, NVIDIA's library wheels) also provide.
    """
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except ModuleNotFoundError:  # the parent package is absent
            continue
    return False


def _error_name(rt: Any, err: Any) -> str:
    name = rt.cudaGetErrorName(err)[1]
    return name.decode() if isinstance(name, bytes) else str(name)


def check(result: Any, runtime: Any = None) -> Any:
    """Unwraps a cuda-python `(error, *values)` result; raises RuntimeError on an error."""
    rt = runtime if runtime is not None else cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        raise RuntimeError(f"CUDA error {int(err)}: {_error_name(rt, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class CudaEventTimer:
    """Times one `enqueue(stream)` per call with CUDA events; returns seconds.

    Args:
        enqueue (Callable[[stream], None]): puts one run of the work on `stream`. It must not
            synchronize (a synchronizing call cannot be captured into a graph).
        stream (cudaStream_t | int): the stream to record on. A non-default stream is needed
            for graph capture.
        use_cuda_graph (bool): capture one `enqueue` into a CUDA graph and time graph
            launches instead (removes per-call launch overhead). When capture fails, times
            plain enqueues and says why in `graph_fallback_reason`. Default: False.
        runtime (module | None): the CUDA runtime bindings. Default: None (`cudart()`).
    """

    def __init__(
        self, enqueue: Callable[[Any], Any], stream: Any, use_cuda_graph: bool = False, runtime: Any = None
    ) -> None:
        rt = runtime if runtime is not None else cudart()
        self._rt = rt
        self._stream = stream
        self._enqueue = enqueue
        self._start = check(rt.cudaEventCreate(), rt)
        self._end = check(rt.cudaEventCreate(), rt)
        self._graph = None
        self._graph_exec = None
        self.graph_fallback_reason: str | None = None
        if use_cuda_graph:
            # One run outside capture first: TensorRT does its shape-dependent setup and lazy
            # allocations on the first enqueue, which must not end up in the graph.
            enqueue(stream)
            self._check(rt.cudaStreamSynchronize(stream))
            self._capture()

    def _check(self, result: Any) -> Any:
        return check(result, self._rt)

    def _capture(self) -> None:
        """Captures one enqueue into a graph; on failure runs without one, as trtexec does.

        The reason kept is the enqueue's own error, not the "capture invalidated" that
        ending the broken capture reports, and the partial graph is destroyed.
        """
        rt = self._rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(rt.cudaStreamBeginCapture(self._stream, mode))
        error: Exception | None = None
        try:
            self._enqueue(self._stream)
        except Exception as exc:  # noqa: BLE001 - reported as the fallback reason
            error = exc
        ended = rt.cudaStreamEndCapture(self._stream)  # always: the stream must leave capture mode
        err, graph = (ended[0], ended[1]) if isinstance(ended, tuple) else (ended, None)
        if error is None and int(err) != int(rt.cudaError_t.cudaSuccess):
            error = RuntimeError(f"CUDA graph capture failed: {_error_name(rt, err)}")
        if error is None:
            try:
                self._graph = graph
                self._graph_exec = self._check(rt.cudaGraphInstantiate(graph, 0))
                return
            except RuntimeError as exc:
                error = exc
        if graph is not None:
            rt.cudaGraphDestroy(graph)
        self._graph = self._graph_exec = None
        rt.cudaGetLastError()  # clears the capture's error, so the next call does not report it
        self.graph_fallback_reason = f"CUDA graph capture failed, timed without a graph: {error}"

    def _launch(self) -> None:
        if self._graph_exec is not None:
            self._check(self._rt.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._enqueue(self._stream)

    def __call__(self) -> float:
        rt = self._rt
        self._check(rt.cudaEventRecord(self._start, self._stream))
        self._launch()
        self._check(rt.cudaEventRecord(self._end, self._stream))
        self._check(rt.cudaEventSynchronize(self._end))
        return float(self._check(rt.cudaEventElapsedTime(self._start, self._end))) / 1e3

    def close(self) -> None:
        """Frees the events and the graph."""
        rt = self._rt
        if self._graph_exec is not None:
            rt.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        if self._graph is not None:
            rt.cudaGraphDestroy(self._graph)
            self._graph = None
        for event in (self._start, self._end):
            if event is not None:
                rt.cudaEventDestroy(event)
        self._start = self._end = None


def cuda_event_timer(enqueue: Callable[[Any], Any], stream: Any, use_cuda_graph: bool = False) -> CudaEventTimer:
    """Returns a callable that runs `enqueue(stream)` once (or its CUDA graph) and returns seconds.

    Feed it to `autotune.measure.measure_latency`. See `CudaEventTimer` for the arguments.
    """
    return CudaEventTimer(enqueue, stream, use_cuda_graph)


_GPU_PROBE = r"""
import ctypes, json
out = {"count": 0}
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    if cuda.cuInit(0) == 0:
        n = ctypes.c_int(0); cuda.cuDeviceGetCount(ctypes.byref(n)); out["count"] = n.value
        if n.value:
            dev = ctypes.c_int(0); cuda.cuDeviceGet(ctypes.byref(dev), 0)
            name = ctypes.create_string_buffer(256); cuda.cuDeviceGetName(name, 256, dev)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
            cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
            out.update(name=name.value.decode(), cc=[major.value, minor.value])
    else:
        out["error"] = "cuInit failed"
except OSError as exc:
    out["error"] = f"no CUDA driver ({exc})"
print(json.dumps(out))
"""


@functools.cache
def visible_gpu() -> dict[str, Any]:
    """The first visible NVIDIA GPU: {"count", "name", "cc": [major, minor]} or {"count": 0}.

    Probed in a child process: initializing CUDA here would break workers forked later.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=60, check=False
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - a broken driver must not crash target selection
        return {"count": 0, "error": str(exc)}
