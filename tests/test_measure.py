"""The latency stop rule and the paired speedup.

The callables here mostly return fixed or scripted latencies (what a run *reports*), so the
rule's decisions are checked exactly; the A/A tests at the end time real ONNX Runtime sessions
and assert only a generous statistical floor (they must hold on a loaded 2-core machine).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from autotune.measure import (
    StopRule,
    aa_interval_overlaps,
    measure_latency,
    median_ci_rel_width,
    paired_speedup,
)
from autotune.targets.base import TargetOptions
from autotune.trial import PairedRequest, run_paired
from tests.conftest import make_tiny_model


def constant(seconds: float):
    return lambda: seconds


def test_a_stable_latency_converges_after_the_minimum_runs():
    stats = measure_latency(constant(0.002), StopRule(warmup_iters=2, warmup_s=0.0, min_iters=10))
    assert stats.stopped_by == "converged"
    assert stats.iterations == 10
    assert stats.latency_ms_p50 == stats.latency_ms_p99 == 2.0


def test_a_noisy_latency_runs_until_the_iteration_cap():
    rng = np.random.default_rng(0)
    noisy = lambda: float(rng.choice([0.001, 0.010]))  # noqa: E731 - bimodal: the median never settles
    stats = measure_latency(
        noisy, StopRule(warmup_iters=1, warmup_s=0.0, min_iters=10, max_iters=40, max_time_s=60, rel_ci_width=0.01)
    )
    assert stats.stopped_by == "iteration_cap"
    assert stats.iterations == 40


def test_percentiles_are_ordered_and_throughput_uses_the_median():
    values = itertools.cycle([0.001, 0.002, 0.003, 0.004, 0.010])
    stats = measure_latency(
        lambda: next(values), StopRule(warmup_iters=0, warmup_s=0.0, min_iters=50, max_iters=50, rel_ci_width=0.0)
    )
    assert stats.latency_ms_p50 <= stats.latency_ms_p90 <= stats.latency_ms_p99
    assert stats.throughput(batch_size=4) == 4 / (stats.latency_ms_p50 / 1e3)


def test_a_configuration_far_slower_than_the_reference_is_cut_short():
    rule = StopRule(warmup_iters=3, warmup_s=0.0, min_iters=10, slow_factor=10, reference_latency_s=0.001)
    stats = measure_latency(constant(0.05), rule)
    assert stats.stopped_by == "too_slow"
    assert stats.iterations <= 3


def test_the_median_confidence_interval_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    few = median_ci_rel_width(1 + 0.1 * rng.standard_normal(20))
    many = median_ci_rel_width(1 + 0.1 * rng.standard_normal(2000))
    assert many < few
    assert median_ci_rel_width(np.ones(3)) == float("inf")


def test_paired_speedup_is_the_median_ratio_of_per_sample_latencies():
    result = paired_speedup(constant(0.004), constant(0.002), batch_a=1, batch_b=4, rounds=5, iters_per_round=3)
    assert result.speedup_median == 8.0  # A: 4 ms per sample, B: 0.5 ms per sample
    assert result.a_ms_per_sample_median == 4.0 and result.b_ms_per_sample_median == 0.5


def test_paired_speedup_cancels_a_slowdown_that_hits_both_sides_of_a_round():
    round_factor = {"value": 1.0}
    calls = itertools.count()

    def a() -> float:
        return 0.002 * round_factor["value"]

    def b() -> float:
        n = next(calls)
        round_factor["value"] = 1.0 + (n // 6) % 3  # the machine gets 1x, 2x, 3x slower over time
        return 0.001 * round_factor["value"]

    result = paired_speedup(a, b, rounds=9, iters_per_round=3, warmup_iters=0, warmup_s=0.0, warmup_settle=0)
    assert 1.5 <= result.speedup_median <= 2.5


def test_rounds_in_two_machine_states_get_a_speedup_each_and_one_state_gets_none():
    """Issue 26: on a 2-core machine the rounds switch between a quiet speed and one 1.5-2.3x
    slower, and the speedup differs between them (1.047x quiet, 1.267x contended)."""
    from autotune.measure import machine_states

    calls = itertools.count()  # both sides' runs: a round is 6 runs (two blocks of 3)

    def timer(quiet_s: float, contended_s: float):
        def time_once() -> float:
            return contended_s if (next(calls) // 6) % 2 else quiet_s  # the state holds for whole rounds

        return time_once

    a, b = timer(1.047e-3, 1.9 * 1.267e-3), timer(1.0e-3, 1.9e-3)
    result = paired_speedup(a, b, rounds=12, iters_per_round=3, warmup_iters=0, warmup_s=0.0, warmup_settle=0)
    states = {s["state"]: s for s in result.states}
    assert set(states) == {"quiet", "contended"}
    assert states["quiet"]["speedup_median"] == pytest.approx(1.047, rel=1e-6)
    assert states["contended"]["speedup_median"] == pytest.approx(1.267, rel=1e-6)
    assert states["contended"]["round_slowdown"] > 1.9
    assert result.as_dict()["states"][0]["state"] == "quiet"
    # one state with 10% jitter is not two states (the check can fail both ways)
    rng = np.random.default_rng(0)
    jitter = rng.lognormal(0.0, 0.1, size=(2, 21))
    assert machine_states(list(jitter[0]), list(jitter[1]), [1.0] * 21) == ()
    # rounds spread evenly from 1x to 2x are one wide state, not two
    spread = list(np.geomspace(1.0, 2.0, 21))
    assert machine_states(spread, spread, [1.0] * 21) == ()
    # a slow outlier round or two is not a state: each state needs 3 rounds
    assert machine_states([1.0] * 10 + [3.0] * 2, [1.0] * 10 + [3.0] * 2, [1.0] * 12) == ()


class SpinningNeighbour:
    """Two scripted sessions whose first `slow_runs` runs after the other one ran are 2x slower
    (the other session's idle threads still spin), as ONNX Runtime's CPU sessions behave."""

    def __init__(self, latency_s: float = 0.001, slow_runs: int = 3) -> None:
        self.latency_s, self.slow_runs = latency_s, slow_runs
        self.last_side: str | None = None
        self.since_switch = 0
        self.calls = {"a": 0, "b": 0}

    def timer(self, side: str):
        def time_once() -> float:
            if side != self.last_side:
                self.last_side, self.since_switch = side, 0
            self.since_switch += 1
            self.calls[side] += 1
            return self.latency_s * (2 if self.since_switch <= self.slow_runs else 1)

        return time_once


def test_every_block_warms_its_session_up_before_it_is_timed():
    pair = SpinningNeighbour(slow_runs=3)
    result = paired_speedup(pair.timer("a"), pair.timer("b"), rounds=6, warmup_iters=3, warmup_s=0.0, round_s=0.01)
    assert result.speedup_median == result.speedup_p25 == result.speedup_p75 == 1.0


def test_a_transient_longer_than_the_fixed_warm_up_is_waited_out():
    # 8 slow runs, 3 fixed warm-up runs: the adaptive warm-up runs on until a run is back
    # within 10% of the side's previous block median.
    pair = SpinningNeighbour(slow_runs=8)
    settled = paired_speedup(pair.timer("a"), pair.timer("b"), rounds=6, warmup_iters=3, warmup_s=0.0, round_s=0.004)
    pair = SpinningNeighbour(slow_runs=8)
    fixed = paired_speedup(
        pair.timer("a"), pair.timer("b"), rounds=6, warmup_iters=3, warmup_s=0.0, round_s=0.004, warmup_settle=0
    )
    assert settled.speedup_p25 == settled.speedup_p75 == 1.0
    assert fixed.speedup_p75 - fixed.speedup_p25 > 0  # without it, every block starts slow


def test_a_block_times_runs_for_at_least_round_s():
    pair = SpinningNeighbour(latency_s=0.001, slow_runs=0)
    paired_speedup(pair.timer("a"), pair.timer("b"), rounds=4, warmup_iters=0, warmup_s=0.0, round_s=0.05)
    assert pair.calls["a"] >= 4 * 50 and pair.calls["b"] >= 4 * 50


def test_a_speedup_whose_iqr_overlaps_the_aa_interval_is_no_measurable_difference():
    aa = {"speedup_median": 1.0, "speedup_p25": 0.99, "speedup_p75": 1.01}
    assert aa_interval_overlaps({"speedup_p25": 1.0, "speedup_p75": 1.03}, aa)
    assert aa_interval_overlaps({"speedup_p25": 0.95, "speedup_p75": 1.2}, aa)
    assert not aa_interval_overlaps({"speedup_p25": 1.02, "speedup_p75": 1.05}, aa)
    assert not aa_interval_overlaps({"speedup_p25": 0.90, "speedup_p75": 0.98}, aa)


def _matmul_chain(path, layers: int):
    """y = relu(x W)^layers on a 32x256 input: ~0.1 ms of real work per layer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "w")
    nodes, last = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [last, "w"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        last = f"r{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 256])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, [32, 256])], initializer=[weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _default_session_timer(path):
    from autotune.targets.base import Built
    from autotune.targets.onnxruntime import OnnxRuntimeTarget

    target = OnnxRuntimeTarget()
    target.cuda = False  # the CPU path, which these tests are about, even where a GPU is visible
    session = target.open(Built(artifact=path), {})
    feeds = {"x": np.random.default_rng(1).standard_normal((32, 256)).astype(np.float32)}
    return session, session.timer(feeds)


def test_two_identical_onnxruntime_sessions_measure_as_the_same(tmp_path):
    model = _matmul_chain(tmp_path / "chain.onnx", layers=4)
    (a, time_a), (b, time_b) = _default_session_timer(model), _default_session_timer(model)
    with a, b:
        result = paired_speedup(time_a, time_b, rounds=9, round_s=0.05)
    assert 0.9 <= result.speedup_median <= 1.1


def test_a_session_doing_4x_the_work_is_detected_as_different(tmp_path):
    small = _matmul_chain(tmp_path / "small.onnx", layers=2)
    large = _matmul_chain(tmp_path / "large.onnx", layers=8)
    (a, time_a), (b, time_b) = _default_session_timer(small), _default_session_timer(small)
    (c, time_large) = _default_session_timer(large)
    with a, b, c:
        aa = paired_speedup(time_a, time_b, rounds=9, round_s=0.05)
        faster = paired_speedup(time_large, time_a, rounds=9, round_s=0.05)
    assert faster.speedup_median > 2.0
    assert not aa_interval_overlaps(faster, aa)


def test_paired_rounds_stop_once_settled_or_at_the_deadline_and_not_before_the_minimum():
    import time

    from autotune.measure import clear_of, paired_speedup

    fast, slow = (lambda: 0.001), (lambda: 0.002)
    kwargs = dict(round_s=0.0, warmup_s=0.0, warmup_iters=1, min_iters_per_round=1, warmup_settle=0)
    # B twice as fast every round: settled (clear of a 0.98-1.02 floor) at the minimum
    settled = paired_speedup(slow, fast, rounds=21, min_rounds=9, settled=clear_of((0.98, 1.02)), **kwargs)
    assert settled.rounds == 9 and settled.speedup_median == 2.0
    # the same pair against itself never clears the floor: all 21 rounds
    same = paired_speedup(slow, slow, rounds=21, min_rounds=9, settled=clear_of((0.98, 1.02)), **kwargs)
    assert same.rounds == 21
    # a deadline already passed: the minimum, no more
    late = paired_speedup(slow, slow, rounds=21, min_rounds=9, deadline=time.monotonic() - 1, **kwargs)
    assert late.rounds == 9
    # no rule: every round
    assert paired_speedup(slow, fast, rounds=21, **kwargs).rounds == 21


def test_a_pairing_stops_once_no_further_round_could_clear_the_floor():
    """Issue 26: a pairing whose interval straddles the A/A control stops as soon as no further
    round up to its cap could put the interval wholly above or below it (the verdict "cannot any
    more" change), and not before; the rounds it ran are kept."""
    from autotune.measure import can_clear, clear_of, paired_speedup

    floor = (0.99, 1.01)
    straddling = [0.97, 1.03] * 6
    assert not clear_of(floor)(straddling)  # the interval overlaps the floor ...
    assert clear_of(floor, rounds=21)(straddling)  # ... and 9 more rounds cannot change that
    # 8 rounds in, 13 more rounds above 1.03 would still clear it: not settled
    assert can_clear(straddling[:8], 21, floor) and not clear_of(floor, rounds=21)(straddling[:8])
    assert clear_of(floor)(straddling[:8] + [1.5] * 13)  # (and such rounds do clear it)
    assert clear_of(floor, rounds=21)([1.2] * 9)  # clear of the floor: settled as before
    # ... by half the floor's width at least: a bare clearance runs on (bench/FUTILITY.md: an A/A
    # pairing touches past the control's edge after a few rounds, and all 21 find no difference)
    assert not clear_of(floor, rounds=21)([1.015] * 9) and clear_of(floor, rounds=21)([1.025] * 9)
    assert not clear_of(floor, rounds=21)([0.985] * 9) and clear_of(floor, rounds=21)([0.975] * 9)
    # the same pair against itself stops at the minimum instead of the cap
    slow = lambda: 0.002  # noqa: E731
    kwargs = dict(round_s=0.0, warmup_s=0.0, warmup_iters=1, min_iters_per_round=1, warmup_settle=0)
    same = paired_speedup(slow, slow, rounds=21, min_rounds=9, settled=clear_of((0.98, 1.02), rounds=21), **kwargs)
    assert same.rounds == 9 and same.ratios == (1.0,) * 9 and len(same.a_ms) == len(same.b_ms) == 9


def test_a_paired_run_says_where_its_time_went(tmp_path):
    """Issue 26: each of finalize's pairings reports its stages (its two sides located or built,
    each session opened, the timed rounds), which the log and bench/OVERHEAD.md read."""
    model = make_tiny_model(tmp_path / "m.onnx")
    pool = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    request = PairedRequest(
        target_name="onnxruntime", target_options=TargetOptions(), model_a=model, config_a={}, model_b=model,
        config_b={}, input_pool=pool, dynamic_batch=True, workdir=tmp_path / "paired", rounds=3, round_s=0.01,
    )  # fmt: skip
    result = run_paired(request)
    stages = result["stages_s"]
    assert set(stages) == {"sides_s", "open_a_s", "open_b_s", "rounds_s"}
    assert all(seconds > 0 for seconds in stages.values()) and result["rounds"] == 3
