"""Issue 25: a runaway trial fails alone, with a reason, before the kernel's OOM killer picks a
process that is not the study's (`workers.MemoryGuard`)."""

from __future__ import annotations

import numpy as np

import autotune.workers as workers
from autotune.measure import StopRule
from autotune.model import free_memory_bytes
from autotune.targets.base import TargetOptions
from autotune.trial import TrialRequest
from autotune.verify import Tolerance
from tests.conftest import make_tiny_model


def test_a_trial_growing_past_the_memory_left_is_stopped_alone_with_its_reason(tmp_path, monkeypatch):
    """The reserve is set to what is free now less 512 MiB, so that the guard trips once the
    trial has grown by about that much (a real machine would trip at 5% of its memory). Were
    the guard missing, the trial would grow to 6 GiB and hang until its timeout."""
    free = free_memory_bytes()
    assert free is not None and free > 2**30
    monkeypatch.setattr(workers, "MEMORY_RESERVE_SHARE", 0.0)
    monkeypatch.setattr(workers, "MEMORY_RESERVE_MIN", free - 2**29)
    model = make_tiny_model(tmp_path / "tiny.onnx")
    request = TrialRequest(
        number=3, config={}, model_path=model, target_name="tests.crashing_target:MemoryBombTarget",
        target_options=TargetOptions(), input_pool={"x": np.ones((4, 3, 8, 8), np.float32)}, dynamic_batch=True,
        reference_outputs={}, tolerance=Tolerance(), stop_rule=StopRule(), workdir=tmp_path / "trial",
    )  # fmt: skip
    result = workers.run_isolated(request, timeout_s=300)
    assert result.state == "failed"
    assert "GiB resident: less than" in result.reason and "--shape or --batch" in result.reason, result.reason
    assert "timed out" not in result.reason
    resident = float(result.reason.split("stopped at ")[1].split(" GiB")[0])
    assert resident >= 0.2  # it was stopped after it grew, not before it started
    assert (tmp_path / "trial" / "oom_score_adj").read_text() == "1000"  # the OOM killer's first choice


def test_the_guard_lets_a_trial_that_fits_finish(tmp_path):
    from autotune.model import fp32_cpu_session

    model = make_tiny_model(tmp_path / "tiny.onnx")
    pool = {"x": np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    reference = dict(zip(["y"], fp32_cpu_session(model).run(None, pool), strict=True))
    request = TrialRequest(
        number=1, config={"batch_size": 4}, model_path=model, target_name="onnxruntime",
        target_options=TargetOptions(), input_pool=pool, dynamic_batch=True, reference_outputs={4: reference},
        tolerance=Tolerance(), stop_rule=StopRule(max_time_s=0.2), workdir=tmp_path / "trial",
    )  # fmt: skip
    result = workers.run_isolated(request, timeout_s=300)
    assert result.state == "complete", result.reason
