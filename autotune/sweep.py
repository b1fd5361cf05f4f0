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


def combine_winners(
    space: SearchSpace, measured: Iterable[tuple[Mapping[str, Any], float]], default_throughput: float
) -> list[dict[str, Any]]:
    """The sweep's winners combined: for each knob, the value whose one-knob trial had the
    highest feasible throughput above the defaults' (by WIN_MARGIN). Returns the combination
    at batch 1 and, when a larger batch won, at that batch too (empty when nothing won).

    Args:
        measured: (configuration, feasible throughput) of the sweep's told trials.
        default_throughput (float): trial 0's throughput.
    """
    defaults = space.default_config()
    best: dict[str, tuple[Any, float]] = {}
    for config, throughput in measured:
        changed = knob_changed(config, defaults)
        knob = next((n for n in changed if n in space and n != "calibration_method"), None)
        if knob is None or throughput <= default_throughput * (1 + WIN_MARGIN):
            continue
        if knob not in best or throughput > best[knob][1]:
            best[knob] = (config[knob], throughput)
            if knob == "precision" and "calibration_method" in config:
                best["calibration_method"] = (config["calibration_method"], throughput)
    if not best:
        return []
    winners = {k: v for k, (v, _) in best.items()}
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
