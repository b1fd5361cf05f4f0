"""The GPU path: CUDA-event timing (any enqueue) and a TensorRT engine run on the device.

Runs only where a CUDA GPU and cuda-python exist (and, for the engine test, full TensorRT);
skipped elsewhere with the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from autotune.measure import StopRule, measure_latency
from autotune.targets.cuda_timing import cuda_runtime_available
from autotune.targets.tensorrt import visible_gpu

HAS_CUDA_PYTHON = cuda_runtime_available()  # not find_spec("cuda"): cuda-pathfinder has one too
HAS_GPU = HAS_CUDA_PYTHON and bool(visible_gpu().get("count"))
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU and cuda-python (none visible here)")
needs_tensorrt_gpu = pytest.mark.skipif(
    not (HAS_GPU and HAS_TENSORRT), reason="needs an NVIDIA GPU, cuda-python and TensorRT (tensorrt module)"
)
pytestmark = pytest.mark.gpu


@needs_gpu
@pytest.mark.parametrize("use_cuda_graph", [False, True])
def test_cuda_event_timer_times_any_stream_work(use_cuda_graph):
    from autotune.targets.cuda_timing import check, cuda_event_timer, cudart

    rt = cudart()
    stream = check(rt.cudaStreamCreate())
    nbytes = 64 << 20
    buf = check(rt.cudaMalloc(nbytes))
    try:
        timer = cuda_event_timer(lambda s: check(rt.cudaMemsetAsync(buf, 0, nbytes, s)), stream, use_cuda_graph)
        stats = measure_latency(timer, StopRule(max_time_s=0.5))
        timer.close()
        assert 0 < stats.latency_ms_p50 < 100
    finally:
        check(rt.cudaFree(buf))
        check(rt.cudaStreamDestroy(stream))


@needs_tensorrt_gpu
@pytest.mark.parametrize("use_cuda_graph", [False, True])
def test_engine_runs_matches_the_model_and_is_timed(tmp_path, use_cuda_graph):
    from test_tensorrt_target import conv_model  # pytest puts tests/ on sys.path

    from autotune.targets.base import TargetOptions
    from autotune.targets.tensorrt import TensorRTTarget

    model = conv_model(tmp_path / "conv.onnx")
    target = TensorRTTarget(TargetOptions(cache_dir=tmp_path))
    config = {"precision": "fp32", "cuda_graph": use_cuda_graph}
    built = target.build(model, config, tmp_path / "trial", {"input": [2, 3, 32, 32]})
    feeds = {"input": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    import onnxruntime as ort

    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with target.open(built, config) as session:
        got = session.infer(feeds)["output"]
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
        stats = measure_latency(session.timer(feeds), StopRule(max_time_s=0.5))
    assert stats.latency_ms_p50 > 0
    assert Path(built.info["timing_cache"]).exists()


@needs_gpu
def test_a_capture_that_breaks_reports_the_enqueue_error_and_times_without_a_graph():
    from autotune.targets.cuda_timing import check, cuda_event_timer, cudart

    rt = cudart()
    stream = check(rt.cudaStreamCreate())
    nbytes = 1 << 20
    buf = check(rt.cudaMalloc(nbytes))

    def enqueue(s):  # synchronizing inside a capture is illegal: it breaks the capture
        check(rt.cudaMemsetAsync(buf, 0, nbytes, s))
        check(rt.cudaStreamSynchronize(s))

    try:
        timer = cuda_event_timer(enqueue, stream, use_cuda_graph=True)
        reason = timer.graph_fallback_reason
        assert reason is not None and "StreamCaptureUnsupported" in reason, reason
        stats = measure_latency(timer, StopRule(max_time_s=0.2))
        assert 0 < stats.latency_ms_p50 < 100
        timer.close()
        # The stream left capture mode and works normally afterwards.
        status = check(rt.cudaStreamIsCapturing(stream))
        assert int(status) == int(rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone)
    finally:
        check(rt.cudaFree(buf))
        check(rt.cudaStreamDestroy(stream))
