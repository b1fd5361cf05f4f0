"""GPU latency of anything that enqueues work on a CUDA stream, timed with CUDA events.

`cuda_event_timer` takes any `enqueue(stream)` callable (TensorRT's `execute_async_v3`, a
memset, a kernel launch), optionally captures it once into a CUDA graph, and returns a
`time_once` callable for `autotune.measure.measure_latency`. Events are recorded on the same
stream right around the work, so host-side Python overhead between calls is not counted,
and host↔device copies are not part of it unless `enqueue` does them.

Needs cuda-python (`cuda.bindings`, or the older `cuda.cudart` layout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def cudart() -> Any:
    """The CUDA runtime bindings of cuda-python (new and old module layouts)."""
    try:
        from cuda.bindings import runtime
    except ImportError:  # cuda-python < 12.6
        from cuda import cudart as runtime  # type: ignore[no-redef]
    return runtime


def check(result: Any) -> Any:
    """Unwraps a cuda-python `(error, *values)` result; raises RuntimeError on an error."""
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        name = rt.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {int(err)}: {name.decode() if isinstance(name, bytes) else name}")
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
            launches instead (removes per-call launch overhead). Default: False.
    """

    def __init__(self, enqueue: Callable[[Any], Any], stream: Any, use_cuda_graph: bool = False) -> None:
        rt = cudart()
        self._rt = rt
        self._stream = stream
        self._enqueue = enqueue
        self._start = check(rt.cudaEventCreate())
        self._end = check(rt.cudaEventCreate())
        self._graph = None
        self._graph_exec = None
        if use_cuda_graph:
            # One run outside capture first: TensorRT does its shape-dependent setup and lazy
            # allocations on the first enqueue, which must not end up in the graph.
            enqueue(stream)
            check(rt.cudaStreamSynchronize(stream))
            mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            check(rt.cudaStreamBeginCapture(stream, mode))
            try:
                enqueue(stream)
            finally:
                self._graph = check(rt.cudaStreamEndCapture(stream))
            self._graph_exec = check(rt.cudaGraphInstantiate(self._graph, 0))

    def _launch(self) -> None:
        if self._graph_exec is not None:
            check(self._rt.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._enqueue(self._stream)

    def __call__(self) -> float:
        rt = self._rt
        check(rt.cudaEventRecord(self._start, self._stream))
        self._launch()
        check(rt.cudaEventRecord(self._end, self._stream))
        check(rt.cudaEventSynchronize(self._end))
        return float(check(rt.cudaEventElapsedTime(self._start, self._end))) / 1e3

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
