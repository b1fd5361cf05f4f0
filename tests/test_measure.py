"""The latency stop rule and the paired speedup.

The callables here return fixed or scripted latencies (what a run *reports*), so the rule's
decisions are checked exactly; real sessions are measured in tests/test_study.py.
"""

from __future__ import annotations

import itertools

import numpy as np

from autotune.measure import StopRule, measure_latency, median_ci_rel_width, paired_speedup


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

    result = paired_speedup(a, b, rounds=9, iters_per_round=3, warmup_iters=0)
    assert 1.5 <= result.speedup_median <= 2.5
