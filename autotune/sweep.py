"""Where an expert starts: one knob at a time away from the defaults, then the winners combined.

The sweep tells which knobs matter on this model and this hardware before the multi-objective
search spends trials on interactions: each configuration is trial 0's with exactly one knob
changed (at batch 1; the batch sizes are swept with every other knob at its default, which is
also what each batch's answer is compared with). Once every sweep trial is told, the values
that beat the defaults are combined into one candidate, at batch 1 and at the best batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.space import Knob, SearchSpace, config_key

# An int knob with a wide range is swept at a few points, not at every value.
MAX_INT_POINTS = 4
# A value "wins" when its throughput beats the defaults' by more than this (measurement noise).
WIN_MARGIN = 0.03


def _alternatives(space: SearchSpace, name: str) -> list[Any]:
    knob = space[name]
    if knob.type == "float":
        return [v for v in (knob.low, knob.high) if v != knob.default]
    return [v for v in _points(knob) if v != knob.default]


def _points(knob: Knob) -> Sequence[Any]:
    """A discrete knob's values, or for a wide int range its ends and middle (never materialized)."""
    values = knob.values()
    if knob.type == "int" and len(values) > MAX_INT_POINTS:
        return sorted({values[0], values[-1], values[len(values) // 2]})
    return values


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
        for value in _alternatives(space, knob.name) if not partial_base else _points(knob):
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
# A value that cuts the defaults' error at least this much (and passes the gate) is an accuracy
# fix: larger batches, whose error is often larger, may need it (TF32 off on a detector).
FIX_FACTOR = 0.5


def one_knob(outcome: Outcome, defaults: Mapping[str, Any], space: SearchSpace) -> str | None:
    """The knob an outcome's configuration changed from the defaults, when it changed exactly
    one (a precision and its calibration method count as one); else None."""
    changed = [n for n in knob_changed(outcome.config, defaults) if n != "calibration_method"]
    return changed[0] if len(changed) == 1 and changed[0] in space else None


def combine_winners(space: SearchSpace, measured: Iterable[Outcome], default: Outcome) -> list[dict[str, Any]]:
    """The one-knob results combined into candidates, the way an expert reads a sweep.

    - Speed winners: per knob, the fastest value that beats the defaults' throughput by
      WIN_MARGIN and passes the gate; when the defaults themselves fail it, a faster value with
      no worse error also counts (CUDA graph on a detector whose TF32 output is off).
    - Accuracy fixes: per knob, the fastest value that passes the gate with at most FIX_FACTOR
      of the defaults' error (TF32 off).

    Candidates (duplicates dropped): at batch 1, the speed winners (plus the fixes when the
    defaults fail the gate), and the single fastest winner alone (two winners can be
    incompatible); at the fastest batch of the batch sweep, the same with the fixes added when
    that batch failed the gate (larger batches often move further from the reference), and with
    the fastest lower precision that passed the gate at batch 1 (FP16 may pay only at a large
    batch); and at the fastest batch that passed, when it differs. Returns [] when nothing won.

    Args:
        measured: every told trial one knob away from the defaults (sweep or known-good).
        default: trial 0's outcome.
    """
    defaults = space.default_config()
    speed: dict[str, Outcome] = {}
    fixes: dict[str, Outcome] = {}
    batches: list[Outcome] = []
    precisions: list[Outcome] = []  # lower precisions that pass the gate, whatever their b1 speed
    for outcome in measured:
        knob = one_knob(outcome, defaults, space)
        if knob is None or outcome.throughput <= 0:
            continue
        if knob == "batch_size":
            batches.append(outcome)
            continue
        if knob == "precision" and outcome.feasible:
            precisions.append(outcome)
        faster = outcome.throughput > default.throughput * (1 + WIN_MARGIN)
        if faster and (outcome.feasible or (not default.feasible and outcome.error <= default.error * ERROR_SLACK)):
            if knob not in speed or outcome.throughput > speed[knob].throughput:
                speed[knob] = outcome
        if outcome.feasible and outcome.error <= default.error * FIX_FACTOR:
            if knob not in fixes or outcome.throughput > fixes[knob].throughput:
                fixes[knob] = outcome
    values = _values_of
    winners = values(speed) | (values(fixes) if not default.feasible else {})
    top = max(speed.values(), key=lambda o: o.throughput, default=None)
    variants = [winners]
    if top is not None and len(speed) > 1:
        variants.append(
            values({k: o for k, o in speed.items() if o is top}) | (values(fixes) if not default.feasible else {})
        )
    combined = [space.complete({**defaults, **variant}) for variant in variants if variant]
    fastest = max(batches, key=lambda o: o.throughput, default=None)
    if fastest is not None and fastest.throughput > default.throughput * (1 + WIN_MARGIN):
        batch = {"batch_size": fastest.config["batch_size"]}
        extra = values(fixes) if not fastest.feasible else {}
        combined += [space.complete({**defaults, **variant, **extra, **batch}) for variant in variants]
        # A lower precision often pays only at a large batch (an encoder's FP16 GEMMs): one that
        # passes the gate at batch 1 is tried at the fastest batch even if it did not win there.
        for outcome in sorted(precisions, key=lambda o: -o.throughput)[:1]:
            low = _values_of({"precision": outcome})
            combined.append(space.complete({**defaults, **winners, **extra, **low, **batch}))
        feasible = [o for o in batches if o.feasible and o.throughput > default.throughput * (1 + WIN_MARGIN)]
        best_ok = max(feasible, key=lambda o: o.throughput, default=None)
        if best_ok is not None and best_ok is not fastest:
            combined.append(space.complete({**defaults, **winners, "batch_size": best_ok.config["batch_size"]}))
    unique: dict[str, dict[str, Any]] = {}
    for config in combined:
        if config != defaults:
            unique.setdefault(config_key(config), config)
    return list(unique.values())


def _values_of(outcomes: Mapping[str, Outcome]) -> dict[str, Any]:
    """knob -> value (with the calibration method of a precision winner)."""
    values: dict[str, Any] = {}
    for knob, outcome in outcomes.items():
        values[knob] = outcome.config[knob]
        if knob == "precision" and "calibration_method" in outcome.config:
            values["calibration_method"] = outcome.config["calibration_method"]
    return values


NEIGHBOUR_DRAWS = 8  # values tried per int or float knob for a neighbour (a range is never materialized)


def unmeasured_neighbour(
    space: SearchSpace,
    around: dict[str, Any],
    known: set[str],
    allowed: Callable[[dict[str, Any]], bool],
    seed: int,
) -> dict[str, Any] | None:
    """A configuration one knob away from `around` (the study's fastest so far), not in `known`
    (config keys) and accepted by `allowed`, knobs and values in a seeded random order; None when
    every neighbour is known or ruled out. What a repeat of the sampler is replaced with (issue 27:
    spend the trials the sampler would repeat where the answer is still uncertain, beside it):
    on YOLOv8n (run 7) the uniformly random configuration queued after two repeats ran 2.7x
    slower than the defaults at its batch."""
    rng = random.Random(seed)
    knobs = [k for k in space.knobs if k.name in around]
    rng.shuffle(knobs)
    for knob in knobs:
        if knob.type == "float":
            values: list[Any] = [rng.uniform(knob.low, knob.high) for _ in range(NEIGHBOUR_DRAWS)]
        elif knob.type == "int":
            values = [rng.choice(knob.values()) for _ in range(NEIGHBOUR_DRAWS)]
        else:
            values = list(knob.values())
            rng.shuffle(values)
        for value in values:
            if value == around[knob.name]:
                continue
            config = space.complete({**around, knob.name: value})
            if config_key(config) not in known and allowed(config):
                return config
    return None


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
                config[knob.name] = rng.choice(knob.values())  # a range is not materialized
        if config_key(config) not in known and allowed(config):
            return config
    return None
