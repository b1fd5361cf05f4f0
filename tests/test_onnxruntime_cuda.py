"""The onnxruntime target on the CUDA execution provider.

The GPU tests run only where onnxruntime-gpu and a GPU are present; elsewhere (CI) they are
skipped with the reason, visibly (`pytest -rs`). The CPU-side tests run everywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.measure import StopRule, measure_latency
from autotune.model import feeds_at_batch, load_model_info, synthetic_pool
from autotune.targets.base import TargetOptions
from autotune.targets.onnxruntime import (
    PROVIDER_ENV,
    OnnxRuntimeTarget,
    cuda_provider_options,
    cuda_provider_reason,
)
from autotune.trial import TrialRequest, run_trial
from autotune.verify import Tolerance

CUDA_REASON = cuda_provider_reason()
needs_cuda = pytest.mark.skipif(CUDA_REASON is not None, reason=f"CUDA execution provider unavailable: {CUDA_REASON}")


def request_for(model: Path, config: dict, workdir: Path, number: int = 0, rule: StopRule | None = None):
    import onnxruntime as ort

    info = load_model_info(model)
    pool = synthetic_pool(info, {}, 0)
    batch = int(config.get("batch_size", 1))
    feeds = feeds_at_batch(pool, batch, info.dynamic_batch)
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in ref.get_outputs()]
    refs = {batch: dict(zip(names, ref.run(names, feeds), strict=True))}
    return TrialRequest(
        number=number, config=config, model_path=model, target_name="onnxruntime",
        target_options=TargetOptions(), input_pool=pool, dynamic_batch=info.dynamic_batch,
        reference_outputs=refs, tolerance=Tolerance(atol=5e-2, rtol=5e-2, mode="elementwise"),
        stop_rule=rule or StopRule(max_time_s=0.2), workdir=workdir / str(number),
    )  # fmt: skip


# --- everywhere ----------------------------------------------------------------------------


def test_forcing_the_cpu_provider_gives_the_cpu_space(monkeypatch):
    monkeypatch.setenv(PROVIDER_ENV, "cpu")
    target = OnnxRuntimeTarget()
    assert not target.cuda
    assert "CPUExecutionProvider" in target.describe()
    assert OnnxRuntimeTarget.default_space_path().name == "onnxruntime.yaml"
    assert not OnnxRuntimeTarget.needs_gpu(TargetOptions())
    assert target.supported_choices("cuda_graph", [False, True]) == []


def test_the_cuda_space_loads_and_drops_cuda_knobs_on_the_cpu_provider(monkeypatch):
    from autotune.space import load_space

    monkeypatch.setenv(PROVIDER_ENV, "cpu")
    path = OnnxRuntimeTarget.default_space_path().with_name("onnxruntime-cuda.yaml")
    space = load_space(path, OnnxRuntimeTarget())
    assert "cuda_graph" not in space and "cudnn_conv_algo_search" not in space
    assert "batch_size" in space


def test_provider_options_follow_the_knobs():
    options = cuda_provider_options(
        {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": False, "cuda_graph": True, "prefer_nhwc": True}
    )
    assert options == {
        "device_id": "0", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0",
        "enable_cuda_graph": "1", "prefer_nhwc": "1",
    }  # fmt: skip
    assert cuda_provider_options({}) == {"device_id": "0"}  # the provider's own defaults


def test_a_pathological_configuration_is_cut_short_in_the_warm_up():
    calls = []

    def slow() -> float:
        calls.append(1)
        return 0.05  # 50x the reference

    stats = measure_latency(slow, StopRule(slow_factor=10, reference_latency_s=0.001, warmup_iters=3))
    assert stats.stopped_by == "too_slow"
    assert len(calls) <= 3


# --- on a GPU ------------------------------------------------------------------------------


@needs_cuda
def test_the_cuda_provider_is_picked_and_needs_a_gpu_per_trial():
    from autotune.targets import resolve_target

    target, message = resolve_target("auto")
    assert target.name == "onnxruntime" and target.cuda
    assert "CUDAExecutionProvider" in message
    assert OnnxRuntimeTarget.needs_gpu(TargetOptions())
    assert OnnxRuntimeTarget.default_space_path().name == "onnxruntime-cuda.yaml"
    assert "fp16" in target.precisions
    # bf16 is not offered: the CUDA provider has no bf16 BatchNormalization kernel (nor has the
    # CPU provider), so a bf16-cast CNN fails to create a session.
    assert target.supported_choices("precision", ["fp32", "fp16", "bf16"]) == ["fp32", "fp16"]


@needs_cuda
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": False},
        {"cuda_graph": True},
        {"cuda_graph": True, "batch_size": 4},
        {"precision": "fp16", "prefer_nhwc": True},
        {"precision": "fp16", "cuda_graph": True, "batch_size": 2},
    ],
    ids=["defaults", "heuristic-no-tf32", "cuda-graph", "cuda-graph-b4", "fp16-nhwc", "fp16-cuda-graph-b2"],
)
def test_a_trial_runs_on_the_gpu_and_matches_the_reference(tiny_model, tmp_path, config):
    result = run_trial(request_for(tiny_model, config, tmp_path))
    assert result.state == "complete", result.reason
    assert result.build["provider"] == "CUDAExecutionProvider"
    assert result.accuracy["passed"], result.accuracy
    assert result.measurements["latency_ms_p50"] > 0


@needs_cuda
def test_a_configuration_far_slower_than_the_default_is_pruned_with_its_reason(tiny_model, tmp_path):
    rule = StopRule(max_time_s=0.5, slow_factor=10, reference_latency_s=1e-7)  # nothing is that fast
    result = run_trial(request_for(tiny_model, {"cudnn_conv_algo_search": "DEFAULT"}, tmp_path, rule=rule))
    assert result.state == "pruned"
    assert result.reason.startswith("too slow")


@needs_cuda
def test_ray_places_one_trial_per_gpu_and_each_sees_exactly_one_device(tiny_model, tmp_path):
    import ray

    from autotune.targets.tensorrt import visible_gpu
    from autotune.workers import RayExecutor

    gpus = int(visible_gpu()["count"])
    executor = RayExecutor(workers=gpus, gpu=True)
    try:
        requests = [request_for(tiny_model, {"batch_size": b}, tmp_path, number=i)
                    for i, b in enumerate([1, 2] * gpus)]  # fmt: skip
        results, pending = [], list(requests)
        while pending or executor.in_flight():
            while pending and executor.in_flight() < executor.capacity:
                executor.submit(pending.pop(0))
            results += executor.wait(timeout_s=1.0)
        assert len(results) == len(requests)
        seen = []
        for result in results:
            assert result.state == "complete", result.reason
            devices = result.build["cuda_visible_devices"].split(",")
            assert len(devices) == 1 and devices[0] != "", result.build  # exactly one device
            seen.append(devices[0])
        print(f"placement: {gpus} GPU(s), trials saw devices {seen}")
        assert len(set(seen)) == min(gpus, len(requests))  # every GPU took trials
    finally:
        executor.close()
        if ray.is_initialized():
            ray.shutdown()
