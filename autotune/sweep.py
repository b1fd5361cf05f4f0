"""Where an expert starts: one knob at a time away from the defaults, then the winners combined.

The sweep tells which knobs matter on this model and this hardware before the multi-objective
search spends trials on interactions: each configuration is trial 0's with exactly one knob
changed (at batch 1; the batch sizes are swept with every other knob at its default, which is
also what each batch's answer is compared with). Once every sweep trial is told, the values
that beat the defaults are combined into one candidate, at batch 1 and at the best batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autotune.space import SearchSpace, config_key

# An int knob with a wide range is swept at a few points, not at every value.
MAX_INT_POINTS = 4
# A value "wins" when its throughput beats the defaults' by more than this (measurement noise).
WIN_MARGIN = 0.03


def _alternatives(space: SearchSpace, name: str) -> list[Any]:
    knob = space[name]
    if knob.type == "float":
        return [v for v in (knob.low, knob.high) if v != knob.default]
    values = list(knob.values())
    if knob.type == "int" and len(values) > MAX_INT_POINTS:
        picks = {values[0], values[-1], values[len(values) // 2]}
        values = [v for v in values if v in picks]
    return [v for v in values if v != knob.default]


def sweep_configs(space: SearchSpace) -> list[dict[str, Any]]:
    """Trial 0's configuration with one knob changed, for every knob and value (distinct,
    trial 0 itself excluded). Knobs only active under another knob's value are swept with
    that value set (e.g. `calibration_method` under `precision: int8`)."""
    defaults = space.default_config()
    seen = {config_key(defaults)}
    configs = []
    for knob in space.knobs:
        partial_base: dict[str, Any] = {}
        if not knob.active(defaults):
            # Activate it with the first allowed value of each condition knob.
            partial_base = {cond: allowed[0] for cond, allowed in knob.condition.items()}
        for value in _alternatives(space, knob.name) if not partial_base else knob.values():
            config = space.complete({**defaults, **partial_base, knob.name: value})
            key = config_key(config)
            if key not in seen:
                seen.add(key)
                configs.append(config)
    return configs


def knob_changed(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Knobs whose value differs from the defaults (absent knobs count as changed)."""
    names = set(config) | set(defaults)
    return sorted(n for n in names if config.get(n, object()) != defaults.get(n, object()))


@dataclass(frozen=True)
class Outcome:
    """What one sweep trial measured: its configuration, throughput (0 when it failed), error
    (the study's error objective; inf when it failed) and whether it passed the gate."""

    config: Mapping[str, Any]
    throughput: float
    error: float
    feasible: bool


# A speed winner may not make the output this much worse than the defaults' (relative error).
ERROR_SLACK = 1.5


def combine_winners(space: SearchSpace, measured: Iterable[Outcome], default: Outcome) -> list[dict[str, Any]]:
    """The sweep's winners combined into one candidate, at batch 1 and at the best batch.

    Per knob, the value kept is (1) the fastest *feasible* value that beats the defaults'
    throughput by WIN_MARGIN, else (2) when the defaults fail the accuracy gate, the fastest
    value that passes it (an accuracy fix: TF32 off on a detector whose TF32 output moves too
    much), else (3) when the defaults fail, the fastest value that beats them by WIN_MARGIN
    without a worse error (a speed winner the fix can be combined with: CUDA graph). Returns []
    when nothing won.

    Args:
        measured: the sweep's told trials.
        default: trial 0's outcome.
    """
    defaults = space.default_config()
    best: dict[str, tuple[Any, float, int]] = {}  # knob -> (value, throughput, rank: lower wins)
    for outcome in measured:
        changed = knob_changed(outcome.config, defaults)
        knob = next((n for n in changed if n in space and n != "calibration_method"), None)
        if knob is None or outcome.throughput <= 0:
            continue
        faster = outcome.throughput > default.throughput * (1 + WIN_MARGIN)
        if outcome.feasible and faster:
            rank = 0
        elif not default.feasible and outcome.feasible:
            rank = 1
        elif not default.feasible and faster and outcome.error <= default.error * ERROR_SLACK:
            rank = 2
        else:
            continue
        current = best.get(knob)
        if current is None or (rank, -outcome.throughput) < (current[2], -current[1]):
            best[knob] = (outcome.config[knob], outcome.throughput, rank)
            if knob == "precision" and "calibration_method" in outcome.config:
                best["calibration_method"] = (outcome.config["calibration_method"], outcome.throughput, rank)
    if not best:
        return []
    winners = {k: v for k, (v, _, _) in best.items()}
    batch = winners.pop("batch_size", None)
    combined = [space.complete({**defaults, **winners})]
    if batch is not None:
        combined.append(space.complete({**defaults, **winners, "batch_size": batch}))
    return combined


def unmeasured_config(
    space: SearchSpace, known: set[str], allowed: Callable[[dict[str, Any]], bool], seed: int, tries: int = 500
) -> dict[str, Any] | None:
    """A uniformly random configuration not in `known` (config keys) that `allowed` accepts,
    or None when `tries` draws found none (the reachable space is exhausted)."""
    rng = random.Random(seed)
    for _ in range(tries):
        config: dict[str, Any] = {}
        for knob in space.knobs:
            if not knob.active(config):
                continue
            if knob.type == "float":
                config[knob.name] = rng.uniform(knob.low, knob.high)
            else:
                config[knob.name] = rng.choice(list(knob.values()))
        if config_key(config) not in known and allowed(config):
            return config
    return None
