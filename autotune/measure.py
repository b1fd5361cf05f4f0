"""Latency measurement with a warm-up and a stop rule, and paired A/B comparison.

Everything here takes a `time_once` callable that runs the candidate once and returns its
latency in seconds, so the same statistics serve a CPU session (wall clock around the call)
and a GPU stream (CUDA events around an enqueue).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
        # warm-up: the first run may include one-off work (algorithm search, graph capture),
        # and one more run can land in another process's timeslice, so two runs must agree.
        if limit > 0 and done >= 3 and min(warm[1:]) > limit:
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
    """Speedup of B over A from adjacent, order-alternating blocks (A B, B A, ...).

    `speedup_median` is the median of per-round ratios (A latency per sample / B latency per
    sample, see `paired_speedup`); `speedup_p25`/`speedup_p75` give the spread.
    """

    speedup_median: float
    speedup_p25: float
    speedup_p75: float
    rounds: int
    a_ms_per_sample_median: float
    b_ms_per_sample_median: float
    states: tuple[dict[str, float | int | str], ...] = ()
    # every round, in the order they ran: its ratio and each side's block median ms per sample
    ratios: tuple[float, ...] = ()
    a_ms: tuple[float, ...] = ()
    b_ms: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["states"] = [dict(state) for state in self.states]
        return data


def paired_speedup(
    time_a: TimeOnce,
    time_b: TimeOnce,
    *,
    batch_a: int = 1,
    batch_b: int = 1,
    rounds: int = 15,
    iters_per_round: int = 0,
    warmup_iters: int = 3,
    round_s: float = 0.2,
    warmup_s: float = 0.05,
    min_iters_per_round: int = 5,
    warmup_settle: float = 1.1,
    block_quantile: float = 0.1,
    min_rounds: int = 0,
    settled: Callable[[list[float]], bool] | None = None,
    deadline: float | None = None,
) -> PairedSpeedup:
    """Measures A and B in adjacent, order-alternating blocks and returns the median per-round
    throughput ratio B/A.

    Each round runs a block of A then a block of B (B first on odd rounds); the ratio of the
    two blocks' per-sample latencies is one paired observation, so a machine-wide slowdown
    that hits both blocks of a round cancels out. Every block warms its own session up before
    it is timed (`warm_block`), then times runs for at least `round_s` seconds of run time and
    `min_iters_per_round` runs (or exactly `iters_per_round` runs when that is set). "Time"
    here is the sum of the latencies `time_once` reports. A block's latency for the ratio is
    its `block_quantile` run time (10th percentile): other jobs only ever add time to a run,
    so the least disturbed runs compare best; `a_ms_per_sample_median` and
    `b_ms_per_sample_median` stay medians (over rounds, of block medians).

    Why warm-up inside every block: an ONNX Runtime CPU session that just ran keeps its idle
    intra-op threads spinning for a while, and on a small machine they take cores from the
    session measured next, whose first 3-4 runs are then up to 2x slower (at times a whole
    block). The old procedure (warm-up once, ~3 runs per block, block medians) could not tell
    a session from itself: A/A (defaults vs defaults) IQR 0.67-1.44 (issue 18), 0.60-1.76
    here. Measured with bench/noise.py (bench/NOISE.md): A/A, 21 rounds, on a shared 2-core
    machine at load 2.2-3.7, the widest IQR (p75 - p25) of 2 repeats on example.onnx / the
    PP-OCR recognizer (~30 ms a run) / the PP-OCR classifier (~1 ms):

    - this procedure: 0.014 / 0.177 / 0.009 (median within 0.99-1.01).
    - block medians instead of the 10th percentile: 0.043 / 0.474 / 0.050.
    - no adaptive warm-up (fixed 3 runs and 0.05 s): 0.030 / 0.415 / 0.006.
    - no warm-up: 0.003 / 0.143 / 1.826 (a whole block 2x slower behind a spinning neighbour).
    - `session.force_spinning_stop=1` on the measured sessions (idle threads stop spinning
      when Run returns): 0.030 / 0.215 / 0.013, no better, and it puts a thread wake-up into
      every run (example.onnx 0.28 -> 0.32 ms): it measures another deployment.
    - `session.intra_op.allow_spinning=0`: 0.011 / 0.098 / 0.075, but it is a tuned knob and
      makes small models ~2x slower (example.onnx 0.28 -> 0.55 ms): rejected.
    - each session in its own process, blocked on a pipe while the other runs: 0.067 / 0.129
      / 0.092: an idle process's threads spin all the same, and it costs two processes.

    Above load ~3 nothing met the issue's goal (IQR under 0.04) on the 30 ms recognizer: its
    runs span several scheduler quanta, so other jobs disturb every one of them.

    Args:
        time_a (Callable[[], float]): runs A once, returns seconds.
        time_b (Callable[[], float]): runs B once, returns seconds.
        batch_a (int): samples per run of A. Default: 1.
        batch_b (int): samples per run of B. Default: 1.
        rounds (int): paired observations. Default: 15.
        iters_per_round (int): fixed timed runs per block; 0 times by `round_s`. Default: 0.
        warmup_iters (int): untimed runs at least, before every block. Default: 3.
        round_s (float): timed run time per block, at least (cover a scheduler quantum or
            more). Default: 0.2.
        warmup_s (float): untimed run time at least, before every block. Default: 0.05.
        min_iters_per_round (int): timed runs per block at least, when timing by
            `round_s`. Default: 5.
        warmup_settle (float): after the fixed warm-up, run on until one run is within this
            factor of the side's previous block median (0: no adaptive warm-up). Default: 1.1.
        block_quantile (float): the quantile of a block's run times its ratio is taken from;
            0.5 is the block median. Default: 0.1.
        min_rounds (int): with `settled` or `deadline`, rounds run before either may end the
            measurement early. Default: 0 (all `rounds`).
        settled (Callable | None): called with the per-round ratios so far; True ends the
            measurement (its verdict can no longer change: a sequential rule). Default: None.
        deadline (float | None): `time.monotonic()` after which no further round starts (a
            finalize inside the budget). Default: None.
    """
    timers = (time_a, time_b)
    previous: list[float | None] = [None, None]
    ratios, per_a, per_b = [], [], []
    for r in range(rounds):
        medians, lows = [0.0, 0.0], [0.0, 0.0]
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            fn = timers[side]
            warm_block(fn, warmup_iters, warmup_s, previous[side], settle=warmup_settle)
            if iters_per_round > 0:
                samples = [fn() for _ in range(iters_per_round)]
            else:
                samples = timed_block(fn, round_s, min_iters_per_round)
            medians[side] = previous[side] = float(np.median(samples))
            lows[side] = float(np.quantile(samples, block_quantile))
        per_a.append(medians[0] / batch_a)
        per_b.append(medians[1] / batch_b)
        ratios.append((lows[0] / batch_a) / (lows[1] / batch_b))
        if len(ratios) >= min_rounds and (
            (settled is not None and settled(ratios)) or (deadline is not None and time.monotonic() >= deadline)
        ):
            break
    ratios_arr = np.asarray(ratios)
    return PairedSpeedup(
        speedup_median=float(np.median(ratios_arr)),
        speedup_p25=float(np.percentile(ratios_arr, 25)),
        speedup_p75=float(np.percentile(ratios_arr, 75)),
        rounds=len(ratios),
        a_ms_per_sample_median=float(np.median(per_a)) * 1e3,
        b_ms_per_sample_median=float(np.median(per_b)) * 1e3,
        states=machine_states(per_a, per_b, ratios),
        ratios=tuple(ratios),
        a_ms=tuple(x * 1e3 for x in per_a),
        b_ms=tuple(x * 1e3 for x in per_b),
    )


STATE_SLOWDOWN = 1.25  # a slower state's rounds at least this much slower than the quicker state's
STATE_MIN_ROUNDS = 3  # rounds each state needs before its own speedup is stated


def machine_states(
    per_a: Sequence[float], per_b: Sequence[float], ratios: Sequence[float]
) -> tuple[dict[str, float | int | str], ...]:
    """The machine states of a paired run's rounds, when its round times fall into two: each
    state's rounds, how much slower its rounds ran and the speedup measured in it; () when the
    rounds are one state.

    A small shared machine switches between a quiet speed and a contended one (issue 26: 2-thread
    sessions on 2 cores, 1.5-2.3x slower every few seconds). Both sides of a round share its
    state, so the A/A control cannot see it, but the speedup can differ between the states. A
    round's speed is the geometric mean of its two blocks' times, each relative to its side's
    median; sorted, the rounds split at their widest gap, and the split counts as two states
    when each holds `STATE_MIN_ROUNDS` rounds, the slower one's median round is at least
    `STATE_SLOWDOWN` times the quicker one's, and the gap itself is at least half of that
    distance (rounds spread evenly from 1x to 2x are one wide state, not two).

    Example:
        >>> quiet, busy = [1.0] * 5, [2.0] * 4
        >>> [s["state"] for s in machine_states(quiet + busy, quiet + busy, [1.05] * 5 + [1.27] * 4)]
        ['quiet', 'contended']
        >>> machine_states([1.0] * 9, [1.0] * 9, [1.0] * 9)
        ()
    """
    if len(ratios) < 2 * STATE_MIN_ROUNDS:
        return ()
    a, b = np.asarray(per_a, dtype=float), np.asarray(per_b, dtype=float)
    if (a <= 0).any() or (b <= 0).any():
        return ()
    speed = 0.5 * (np.log(a / np.median(a)) + np.log(b / np.median(b)))
    order = np.argsort(speed)
    gaps = np.diff(speed[order])
    candidates = [i for i in range(STATE_MIN_ROUNDS - 1, len(order) - STATE_MIN_ROUNDS) if np.isfinite(gaps[i])]
    if not candidates:
        return ()
    cut = max(candidates, key=lambda i: gaps[i])
    groups = (order[: cut + 1], order[cut + 1 :])
    slowdown = float(np.exp(np.median(speed[groups[1]]) - np.median(speed[groups[0]])))
    if slowdown < STATE_SLOWDOWN or gaps[cut] < 0.5 * np.log(slowdown):
        return ()
    states: list[dict[str, float | int | str]] = []
    for name, rounds, slower in (("quiet", groups[0], 1.0), ("contended", groups[1], slowdown)):
        r = np.asarray(ratios, dtype=float)[rounds]
        states.append({
            "state": name,
            "rounds": len(rounds),
            "round_slowdown": round(slower, 4),
            "speedup_median": float(np.median(r)),
            "speedup_p25": float(np.percentile(r, 25)),
            "speedup_p75": float(np.percentile(r, 75)),
        })  # fmt: skip
    return tuple(states)


_MAX_RUNS_PER_BLOCK = 100_000  # a guard against a timer that reports zero


def warm_block(
    time_once: TimeOnce, warmup_iters: int, warmup_s: float, previous_median_s: float | None, *, settle: float = 1.1
) -> int:
    """Untimed runs until the first-run transient is gone; returns how many ran.

    At least `warmup_iters` runs and `warmup_s` seconds of run time; then, when the session's
    previous block median is known, until one run is within `settle` times it (a session that
    waits for a neighbour's spinning threads to sleep). The adaptive part gives up after
    `4 * warmup_s` more seconds of run time or 4x the fixed runs: a machine that really got
    slower is what the timed block must then measure.
    """
    spent, done = 0.0, 0
    last = math.inf
    while (done < warmup_iters or spent < warmup_s) and done < _MAX_RUNS_PER_BLOCK:
        last = time_once()
        spent += last
        done += 1
    if previous_median_s is None or previous_median_s <= 0 or settle <= 0 or done == 0:
        return done
    extra_s, extra = 0.0, 0
    cap_s, cap = 4 * warmup_s, 4 * max(warmup_iters, 1)
    while last > settle * previous_median_s and (extra_s < cap_s or extra < cap) and done < _MAX_RUNS_PER_BLOCK:
        last = time_once()
        extra_s += last
        extra += 1
        done += 1
    return done


def timed_block(time_once: TimeOnce, block_s: float, min_iters: int) -> list[float]:
    """Run times (seconds) of at least `min_iters` runs and `block_s` seconds of run time."""
    samples: list[float] = []
    spent = 0.0
    while (len(samples) < max(min_iters, 1) or spent < block_s) and len(samples) < _MAX_RUNS_PER_BLOCK:
        samples.append(time_once())
        spent += samples[-1]
    return samples


def speedup_interval(speedup: Any) -> tuple[float, float]:
    """(p25, p75) of a paired speedup: a `PairedSpeedup`, its `as_dict()`, or any object with
    `p25`/`p75` (report's `Speedup`)."""
    if isinstance(speedup, Mapping):
        if "speedup_p25" in speedup:
            return float(speedup["speedup_p25"]), float(speedup["speedup_p75"])
        return float(speedup["p25"]), float(speedup["p75"])
    if hasattr(speedup, "speedup_p25"):
        return float(speedup.speedup_p25), float(speedup.speedup_p75)
    return float(speedup.p25), float(speedup.p75)


# A pairing stops early as faster or slower only once its interval clears the A/A control by this
# share of the control's width: one that only touches past the control's edge after a few rounds is
# often no difference (bench/FUTILITY.md, 30 pairings on 5 trained models, 10 of them the defaults
# against themselves: stopping at a bare clearance from 5 rounds called 2 of the 10 A/A pairings
# faster or slower, and from 9 rounds 2; by half the width, none, and no verdict unlike all 21
# rounds'). A pairing that never clears so far runs on, and its verdict is that of the rounds run.
SETTLE_MARGIN = 0.5


def clear_of(
    floor: tuple[float, float] | None, rounds: int | None = None, margin: float = SETTLE_MARGIN
) -> Callable[[list[float]], bool]:
    """The sequential rule of a paired measurement: settled once the interquartile interval of
    the ratios so far lies wholly above or below `floor` (the A/A control's p25, p75; 1.0 when
    there is none) by `margin` times the floor's width, i.e. once `autotune.answer.verdict` calls
    it faster or slower with room to spare; and, given the most `rounds` the measurement may run,
    once it cannot clear the floor any more (`can_clear`): its verdict is then "no measurable
    difference" whatever the remaining rounds measure.

    Example:
        >>> straddling = [0.97, 1.03] * 6  # 12 rounds, six on each side of a floor of [0.99, 1.01]
        >>> clear_of((0.99, 1.01))(straddling), clear_of((0.99, 1.01), rounds=21)(straddling)
        (False, True)
        >>> clear_of((0.99, 1.01), rounds=21)(straddling[:8])  # 13 more rounds above 1.01 could clear it
        False
    """
    low_floor, high_floor = floor if floor is not None else (1.0, 1.0)
    room = margin * (high_floor - low_floor)

    def settled(ratios: list[float]) -> bool:
        p25, p75 = np.percentile(ratios, [25, 75])
        if p25 > high_floor + room or p75 < low_floor - room:
            return True
        return rounds is not None and not can_clear(ratios, rounds, (low_floor, high_floor))

    return settled


def can_clear(ratios: Sequence[float], rounds: int, floor: tuple[float, float]) -> bool:
    """Whether `rounds - len(ratios)` more rounds could still put the interquartile interval
    of the ratios wholly above `floor` (every further ratio larger than any so far) or wholly
    below it (every further ratio 0, the least a ratio can be). Exact for numpy's linear
    percentiles: when False, no further rounds can make the verdict faster or slower."""
    more = max(rounds - len(ratios), 0)
    highest = np.concatenate([ratios, np.full(more, _ABOVE_EVERY_RATIO)])
    lowest = np.concatenate([ratios, np.zeros(more)])
    return bool(np.percentile(highest, 25) > floor[1] or np.percentile(lowest, 75) < floor[0])


_ABOVE_EVERY_RATIO = 1e12  # stands for +inf where numpy would interpolate inf * 0


def narrow_within(width: float) -> Callable[[list[float]], bool]:
    """The sequential rule of the A/A control: settled once the interquartile interval of the
    ratios so far is at most `width` wide (p75 / p25 - 1). A quiet machine's noise floor is known
    after the minimum rounds; a noisy machine's keeps being measured (up to its rounds or time)."""

    def settled(ratios: list[float]) -> bool:
        p25, p75 = np.percentile(ratios, [25, 75])
        return bool(p25 > 0 and p75 / p25 - 1.0 <= width)

    return settled


def aa_interval_overlaps(speedup: Any, aa: Any) -> bool:
    """Whether a speedup is no measurable difference: its interquartile interval [p25, p75]
    overlaps the A/A control's (the same paired procedure run on the defaults against
    themselves, which measures the noise floor of this machine and model).

    A speedup counts as real only when its whole IQR lies above the A/A p75 (faster) or below
    the A/A p25 (slower). Both arguments take a `PairedSpeedup`, its `as_dict()`, or an object
    with `p25`/`p75`.

    Example:
        >>> aa = {"speedup_p25": 0.99, "speedup_p75": 1.01}
        >>> aa_interval_overlaps({"speedup_p25": 1.005, "speedup_p75": 1.03}, aa)
        True
        >>> aa_interval_overlaps({"speedup_p25": 1.04, "speedup_p75": 1.08}, aa)
        False
    """
    low, high = speedup_interval(speedup)
    aa_low, aa_high = speedup_interval(aa)
    return low <= aa_high and high >= aa_low
