"""Latency measurement with a warm-up and a stop rule, and paired A/B comparison.

Everything here takes a `time_once` callable that runs the candidate once and returns its
latency in seconds, so the same statistics serve a CPU session (wall clock around the call)
and a GPU stream (CUDA events around an enqueue).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

TimeOnce = Callable[[], float]


@dataclass(frozen=True)
class StopRule:
    """When a latency measurement is good enough.

    Args:
        warmup_iters (int): untimed runs first. Default: 3.
        warmup_s (float): and at least this long of warm-up. Default: 0.05.
        min_iters (int): timed runs before the rule may stop. Default: 10.
        max_iters (int): hard cap on timed runs. Default: 2000.
        max_time_s (float): time cap for the timed phase. Default: 2.0.
        rel_ci_width (float): stop when the 95% confidence interval of the median is narrower
            than this fraction of the median. Default: 0.05.
        slow_factor (float): give up early when the running median exceeds this multiple of
            `reference_latency_s` (a pathological configuration). Default: 0 (off).
        reference_latency_s (float): the latency `slow_factor` refers to. Default: 0 (off).
    """

    warmup_iters: int = 3
    warmup_s: float = 0.05
    min_iters: int = 10
    max_iters: int = 2000
    max_time_s: float = 2.0
    rel_ci_width: float = 0.05
    slow_factor: float = 0.0
    reference_latency_s: float = 0.0


@dataclass(frozen=True)
class LatencyStats:
    """Latency percentiles of one measurement, in milliseconds, and why it stopped."""

    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_mean: float
    iterations: int
    rel_ci_width: float
    stopped_by: str  # "converged" | "time_cap" | "iteration_cap" | "too_slow"

    def throughput(self, batch_size: int) -> float:
        """Samples per second at the median latency."""
        return batch_size / (self.latency_ms_p50 / 1e3)

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def median_ci_rel_width(samples: np.ndarray) -> float:
    """Relative width of the distribution-free 95% confidence interval of the median.

    Uses order statistics (binomial normal approximation): ranks n/2 ± 1.96·√n/2.
    Returns inf when there are too few samples for a two-sided interval.
    """
    n = len(samples)
    if n < 6:
        return math.inf
    ordered = np.sort(samples)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    median = float(np.median(ordered))
    if median <= 0:
        return math.inf
    return float(ordered[hi] - ordered[lo]) / median


def measure_latency(time_once: TimeOnce, rule: StopRule = StopRule()) -> LatencyStats:
    """Warms up, then times `time_once` until the stop rule says the median is stable.

    Args:
        time_once (Callable[[], float]): runs once, returns seconds.
        rule (StopRule): warm-up and stopping policy. Default: StopRule().
    """
    start = time.perf_counter()
    done = 0
    warm: list[float] = []
    limit = rule.slow_factor * rule.reference_latency_s
    while done < rule.warmup_iters or time.perf_counter() - start < rule.warmup_s:
        warm.append(time_once())
        done += 1
        # A pathological configuration (runs 30-100x slower) is cut short already in the
        # warm-up: the first run may include one-off work (algorithm search, graph capture).
        if limit > 0 and done >= 2 and min(warm[1:]) > limit:
            return _stats(warm[1:], "too_slow")
        if done >= 10 * max(rule.warmup_iters, 1) or time.perf_counter() - start >= rule.max_time_s:
            break
    samples: list[float] = []
    timed_start = time.perf_counter()
    stopped_by = "iteration_cap"
    width = math.inf
    while len(samples) < rule.max_iters:
        samples.append(time_once())
        n = len(samples)
        if rule.slow_factor > 0 and rule.reference_latency_s > 0 and n >= 3:
            if float(np.median(samples)) > rule.slow_factor * rule.reference_latency_s:
                stopped_by = "too_slow"
                break
        if n >= rule.min_iters and (n < 64 or n % 8 == 0):
            width = median_ci_rel_width(np.asarray(samples))
            if width <= rule.rel_ci_width:
                stopped_by = "converged"
                break
        if time.perf_counter() - timed_start >= rule.max_time_s and n >= 3:
            stopped_by = "time_cap"
            break
    return _stats(samples, stopped_by)


def _stats(samples: list[float], stopped_by: str) -> LatencyStats:
    arr = np.asarray(samples) * 1e3
    width = median_ci_rel_width(arr)
    return LatencyStats(
        latency_ms_p50=float(np.percentile(arr, 50)),
        latency_ms_p90=float(np.percentile(arr, 90)),
        latency_ms_p99=float(np.percentile(arr, 99)),
        latency_ms_mean=float(arr.mean()),
        iterations=len(arr),
        rel_ci_width=width if math.isfinite(width) else -1.0,
        stopped_by=stopped_by,
    )


@dataclass(frozen=True)
class PairedSpeedup:
    """Speedup of B over A from interleaved measurements (A B A B ...).

    `speedup_median` is the median of per-round ratios (A latency per sample / B latency per
    sample); `speedup_p25`/`speedup_p75` give the spread.
    """

    speedup_median: float
    speedup_p25: float
    speedup_p75: float
    rounds: int
    a_ms_per_sample_median: float
    b_ms_per_sample_median: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_speedup(
    time_a: TimeOnce,
    time_b: TimeOnce,
    *,
    batch_a: int = 1,
    batch_b: int = 1,
    rounds: int = 15,
    iters_per_round: int = 0,
    warmup_iters: int = 3,
    round_s: float = 0.05,
) -> PairedSpeedup:
    """Measures A and B interleaved and returns the median per-round throughput ratio B/A.

    Each round times `iters_per_round` runs of A then of B (alternating which goes first) and
    takes each side's median; the ratio of per-sample latencies is one paired observation, so
    machine-wide slowdowns that hit both sides of a round cancel out. With
    `iters_per_round` 0, each side runs about `round_s` seconds per round (at least 3 runs).
    """
    warm_a = [time_a() for _ in range(max(warmup_iters, 1))]
    warm_b = [time_b() for _ in range(max(warmup_iters, 1))]
    if iters_per_round <= 0:
        slower = max(float(np.median(warm_a)), float(np.median(warm_b)), 1e-6)
        iters_per_round = int(min(max(round_s / slower, 3), 200))
    ratios, per_a, per_b = [], [], []
    for r in range(rounds):
        order = ((0, time_a), (1, time_b)) if r % 2 == 0 else ((1, time_b), (0, time_a))
        medians = [0.0, 0.0]
        for side, fn in order:
            medians[side] = float(np.median([fn() for _ in range(iters_per_round)]))
        a = medians[0] / batch_a
        b = medians[1] / batch_b
        per_a.append(a)
        per_b.append(b)
        ratios.append(a / b)
    ratios_arr = np.asarray(ratios)
    return PairedSpeedup(
        speedup_median=float(np.median(ratios_arr)),
        speedup_p25=float(np.percentile(ratios_arr, 25)),
        speedup_p75=float(np.percentile(ratios_arr, 75)),
        rounds=rounds,
        a_ms_per_sample_median=float(np.median(per_a)) * 1e3,
        b_ms_per_sample_median=float(np.median(per_b)) * 1e3,
    )
