"""Search spaces: YAML data describing knobs, validated against a target, sampled by Optuna.

Schema (documented in the README)::

    target: onnxruntime
    knobs:
      <name>:
        type: categorical | int | float | bool
        choices: [...]              # categorical (non-empty, no duplicates)
        low: 1, high: 4             # int / float; `high: cpus` means this machine's core count
        step: 1, log: false         # optional, int / float
        default: <value>            # required: the all-defaults configuration is trial 0
        condition: {knob: value | [values]}   # optional: active only when every listed knob
                                              # is active and has one of the values
    known_good: [{knob: value, ...}, ...]     # optional: enqueued right after trial 0
    avoid: [{knob: value, ...}, ...]          # optional: combinations never proposed

A file may start from a sibling file of the same directory (`extends: tensorrt.yaml`): its own
knobs replace the base's of the same name (in place; new ones come last) and `<knob>: null`
removes one; every other key it gives (`target`, `known_good`, `avoid`) replaces the base's.

Knob names are those the target declares, plus the pipeline's own: `precision`, `batch_size`,
`calibration_method`, and `pass.<name>` for every graph pass.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autotune.errors import UsageError
from autotune.passes import PASSES

if TYPE_CHECKING:
    import optuna

PIPELINE_KNOBS = frozenset({"precision", "batch_size", "calibration_method", "keep_float_layers", "quantization"})
PASS_PREFIX = "pass."
TYPES = ("categorical", "int", "float", "bool")
MAX_SPACE_FILE_BYTES = 1 << 20  # a space file is a page of YAML; anything near this is not one


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: `*name` references expand exponentially ("billion laughs"),
    and a space file has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a space file", event.start_mark
            )
        return super().compose_node(parent, index)


def read_space_yaml(path: Path) -> Any:
    """The parsed YAML of a space file: size-limited, aliases refused (yaml.YAMLError)."""
    text = path.read_text()
    if len(text) > MAX_SPACE_FILE_BYTES:
        raise UsageError(f"--space {path}: {len(text)} bytes; a space file is at most {MAX_SPACE_FILE_BYTES} bytes")
    return yaml.load(text, Loader=_NoAliasLoader)


@dataclass(frozen=True)
class Knob:
    """One dimension of the search space."""

    name: str
    type: str
    default: Any
    choices: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False
    condition: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def values(self) -> Sequence[Any]:
        """Every value of a discrete knob (categorical, bool, int), for enumeration. An int
        knob's values are a `range`: lazy, so `high: 100000000` costs nothing until iterated."""
        if self.type == "categorical":
            return self.choices
        if self.type == "bool":
            return (False, True)
        if self.type == "int":
            step = int(self.step or 1)
            return range(int(self.low), int(self.high) + 1, step)
        raise ValueError(f"knob {self.name!r}: a float knob cannot be enumerated")

    def active(self, config: Mapping[str, Any]) -> bool:
        return all(name in config and config[name] in allowed for name, allowed in self.condition.items())


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of knobs (dependencies of conditions come first)."""

    target: str
    knobs: tuple[Knob, ...]
    source: str = "<memory>"

    def __getitem__(self, name: str) -> Knob:
        for knob in self.knobs:
            if knob.name == name:
                return knob
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(k.name == name for k in self.knobs)

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def default_config(self) -> dict[str, Any]:
        """The configuration with every active knob at its default (trial 0)."""
        return self.complete({})

    def complete(self, partial: Mapping[str, Any]) -> dict[str, Any]:
        """Fills knobs missing from `partial` with defaults and drops inactive knobs."""
        config: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.active(config):
                config[knob.name] = partial.get(knob.name, knob.default)
        return config

    def sample(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Asks an Optuna trial for one value per active knob."""
        config: dict[str, Any] = {}
        for knob in self.knobs:
            if not knob.active(config):
                continue
            if knob.type == "categorical":
                config[knob.name] = trial.suggest_categorical(knob.name, list(knob.choices))
            elif knob.type == "bool":
                config[knob.name] = trial.suggest_categorical(knob.name, [False, True])
            elif knob.type == "int":
                config[knob.name] = trial.suggest_int(
                    knob.name, int(knob.low), int(knob.high), step=int(knob.step or 1), log=knob.log
                )
            else:
                config[knob.name] = trial.suggest_float(knob.name, knob.low, knob.high, step=knob.step, log=knob.log)
        return config

    def enumerate(self) -> Iterator[dict[str, Any]]:
        """Every distinct configuration (discrete spaces only), inactive knobs omitted."""
        seen = set()
        names = self.names
        for values in itertools.product(*(k.values() for k in self.knobs)):
            config = self.complete(dict(zip(names, values, strict=True)))
            key = config_key(config)
            if key not in seen:
                seen.add(key)
                yield config

    def size(self) -> float:
        """Number of distinct configurations (inf if a float knob is present)."""
        if any(k.type == "float" for k in self.knobs):
            return math.inf
        return sum(1 for _ in self.enumerate())

    def restrict(self, name: str, choices: list[Any]) -> SearchSpace:
        """A copy where knob `name` may take only `choices` (dropped when that leaves one value
        equal to its default... kept as a fixed categorical otherwise)."""
        knobs = []
        for knob in self.knobs:
            if knob.name == name:
                if not choices:
                    continue
                default = knob.default if knob.default in choices else choices[0]
                knob = replace(knob, type="categorical", choices=tuple(choices), default=default)
            knobs.append(knob)
        return replace(self, knobs=tuple(knobs))


def space_sha256(space: SearchSpace) -> str:
    """A digest of what a space can propose (knobs, types, values, defaults, conditions)."""

    parts = [
        (k.name, k.type, repr(k.default), repr(k.choices), k.low, k.high, k.step, k.log, sorted(k.condition.items()))
        for k in space.knobs
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def config_key(config: Mapping[str, Any]) -> str:
    """A canonical string for a configuration: equal keys mean identical configurations."""
    return ";".join(f"{k}={config[k]!r}" for k in sorted(config))


def read_space_data(path: Path) -> Any:
    """The parsed YAML of a space file with its `extends:` chain resolved (see the module
    docstring): what `parse_space` validates, and where `known_good` and `avoid` are read.

    Raises:
        UsageError: a missing or unreadable file, invalid YAML, or a bad `extends` (not a file
            name, no such sibling, a cycle); the message names the file and the key.
    """
    return _read_extended(Path(path), ())


def _read_yaml_or_fail(path: Path) -> Any:
    where = f"--space {path}"
    try:
        return read_space_yaml(path)
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{where}: invalid YAML{at} ({getattr(exc, 'problem', exc)})") from None


def _read_extended(path: Path, chain: tuple[Path, ...]) -> Any:
    data = _read_yaml_or_fail(path)
    if not isinstance(data, dict) or "extends" not in data:
        return data
    where = f"--space {path}"
    name = data["extends"]
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise UsageError(f"{where}: 'extends' must name a sibling space file (e.g. tensorrt.yaml), not {name!r}")
    base_path = path.parent / name
    if not base_path.is_file():
        raise UsageError(f"{where}: 'extends' names {name!r}, but there is no {base_path}")
    chain = (*chain, path.resolve())
    if base_path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base_path.resolve()))
        raise UsageError(f"{where}: 'extends' forms a cycle ({cycle})")
    base = _read_extended(base_path, chain)
    if not isinstance(base, dict) or not isinstance(base.get("knobs", {}), dict):
        raise UsageError(f"--space {base_path}: expected a mapping with a 'knobs' mapping (extended by {path.name})")
    merged = {k: v for k, v in base.items() if k != "extends"}
    for key, value in data.items():
        if key == "knobs":
            merged["knobs"] = _extend_knobs(dict(base.get("knobs") or {}), value, where, name)
        elif key != "extends":
            merged[key] = value
    return merged


def _extend_knobs(knobs: dict[str, Any], changes: Any, where: str, base_name: str) -> dict[str, Any]:
    """The base's `knobs` with the extending file's replaced, added, or removed (`null`)."""
    if not isinstance(changes, dict):
        raise UsageError(f"{where}: 'knobs' must be a mapping of knob: spec (or null to remove the base's)")
    for name, spec in changes.items():
        if spec is not None:
            knobs[name] = spec
        elif name in knobs:
            del knobs[name]
        else:
            raise UsageError(f"{where}: knob {str(name)!r} is null (removed), but {base_name} has no such knob")
    return knobs


def load_space(path: Path, target: Any) -> SearchSpace:
    """Loads and validates a search-space YAML file against `target` (a Target instance).

    Knob choices the target cannot run here are filtered out (capability detection); a knob
    left with no choice is dropped. An `extends:` file is read with its base (`read_space_data`).

    Raises:
        UsageError: unreadable YAML, a bad `extends`, an unknown knob, an empty choice list, a bad
            range, a bad default, or a condition on a missing knob; the message names the file
            and knob.
    """
    space = parse_space(read_space_data(path), target, f"--space {path}")
    return replace(space, source=str(path))


def parse_space(data: Any, target: Any, where: str = "search space") -> SearchSpace:
    """Validates the parsed YAML `data` (see the module docstring) for `target`."""
    if not isinstance(data, dict) or not isinstance(data.get("knobs"), dict) or not data["knobs"]:
        raise UsageError(f"{where}: expected a mapping with a non-empty 'knobs' mapping")
    declared_target = data.get("target", target.name)
    if declared_target != target.name:
        raise UsageError(f"{where}: written for target {declared_target!r}, but the target is {target.name!r}")

    knobs = []
    for name, spec in data["knobs"].items():
        name = str(name)
        _check_known(name, target, PASSES, where)
        knobs.append(_parse_knob(name, spec, where))
    names = {k.name for k in knobs}
    for knob in knobs:
        for other, allowed in knob.condition.items():
            if other not in names:
                raise UsageError(f"{where}: knob {knob.name!r} has a condition on missing knob {other!r}")
            values = _values_or_none(next(k for k in knobs if k.name == other))
            if values is not None and not any(v in values for v in allowed):
                raise UsageError(
                    f"{where}: knob {knob.name!r} has a condition {other}={list(allowed)} that no value satisfies"
                )
    knobs = _order_by_conditions(knobs, where)
    knobs = _filter_capabilities(knobs, target)
    return SearchSpace(target=target.name, knobs=tuple(knobs))


def _values_or_none(knob: Knob) -> Sequence[Any] | None:
    return None if knob.type == "float" else knob.values()


def _check_known(name: str, target: Any, passes: Mapping[str, Any], where: str) -> None:
    if name.startswith(PASS_PREFIX):
        if name[len(PASS_PREFIX) :] not in passes:
            close = difflib.get_close_matches(name[len(PASS_PREFIX) :], list(passes), n=1)
            hint = f"did you mean {PASS_PREFIX + close[0]!r}? " if close else ""
            raise UsageError(f"{where}: unknown graph pass {name!r} ({hint}passes: {', '.join(passes)})")
        return
    if name in PIPELINE_KNOBS or name in target.knob_names:
        return
    if any(name.startswith(prefix) for prefix in target.knob_prefixes):
        return
    known = sorted(PIPELINE_KNOBS | set(target.knob_names))
    close = difflib.get_close_matches(name, [*known, *(PASS_PREFIX + p for p in passes)], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"{where}: unknown knob {name!r} for target {target.name} ({hint}known: {', '.join(known)})")


def _parse_knob(name: str, spec: Any, where: str) -> Knob:
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: knob {name!r} must be a mapping with 'type' and 'default'")
    unknown = set(spec) - {"type", "choices", "low", "high", "step", "log", "default", "condition"}
    if unknown:
        raise UsageError(f"{where}: knob {name!r} has unknown field(s) {', '.join(sorted(unknown))}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise UsageError(f"{where}: knob {name!r} has type {kind!r} (expected one of {', '.join(TYPES)})")
    if "default" not in spec:
        raise UsageError(f"{where}: knob {name!r} needs a 'default' (the value of trial 0)")
    condition = _parse_condition(name, spec.get("condition"), where)
    default = spec["default"]
    if kind == "bool":
        if not isinstance(default, bool):
            raise UsageError(f"{where}: knob {name!r} default {default!r} is not true/false")
        return Knob(name, kind, default, condition=condition)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{where}: knob {name!r} has an empty or missing choice list")
        if len({repr(c) for c in choices}) != len(choices):
            raise UsageError(f"{where}: knob {name!r} lists a choice twice")
        if default not in choices:
            raise UsageError(f"{where}: knob {name!r} default {default!r} is not one of its choices {choices}")
        return Knob(name, kind, default, choices=tuple(choices), condition=condition)
    low, high = spec.get("low"), _resolve_high(spec.get("high"))
    number = int if kind == "int" else (int, float)
    if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool) or isinstance(high, bool):
        raise UsageError(f"{where}: knob {name!r} needs numeric 'low' and 'high' ({kind})")
    if low > high:
        raise UsageError(f"{where}: knob {name!r} has a bad range: low {low} > high {high}")
    step = spec.get("step")
    if step is not None and (not isinstance(step, number) or step <= 0):
        raise UsageError(f"{where}: knob {name!r} has a bad step {step!r}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise UsageError(f"{where}: knob {name!r} is log-scaled but low is {low} (must be > 0)")
    if not isinstance(default, number) or isinstance(default, bool) or not low <= default <= high:
        raise UsageError(f"{where}: knob {name!r} default {default!r} is outside [{low}, {high}]")
    return Knob(name, kind, default, low=low, high=high, step=step, log=log, condition=condition)


def _resolve_high(high: Any) -> Any:
    if high == "cpus":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return high


def _parse_condition(name: str, condition: Any, where: str) -> dict[str, tuple[Any, ...]]:
    if condition is None:
        return {}
    if not isinstance(condition, dict) or not condition:
        raise UsageError(f"{where}: knob {name!r} condition must be a mapping knob: value(s)")
    parsed = {}
    for other, allowed in condition.items():
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values:
            raise UsageError(f"{where}: knob {name!r} condition on {other!r} lists no value")
        parsed[str(other)] = values
    return parsed


def _order_by_conditions(knobs: list[Knob], where: str) -> list[Knob]:
    ordered: list[Knob] = []
    placed: set[str] = set()
    pending = list(knobs)
    while pending:
        ready = [k for k in pending if set(k.condition) <= placed]
        if not ready:
            cycle = ", ".join(k.name for k in pending)
            raise UsageError(f"{where}: conditions form a cycle among knobs {cycle}")
        for knob in ready:
            ordered.append(knob)
            placed.add(knob.name)
            pending.remove(knob)
    return ordered


def _filter_capabilities(knobs: list[Knob], target: Any) -> list[Knob]:
    kept = []
    for knob in knobs:
        if knob.type in ("categorical", "bool"):
            offered = list(knob.values())
            supported = target.supported_choices(knob.name, offered)
            if not supported:
                continue
            if supported != offered:
                default = knob.default if knob.default in supported else supported[0]
                knob = replace(knob, type="categorical", choices=tuple(supported), default=default)
        elif not target.supported_choices(knob.name, [knob.default]):
            continue
        kept.append(knob)
    names = {k.name for k in kept}
    # A knob whose condition depends on a dropped knob can never be active: drop it too.
    return [k for k in kept if set(k.condition) <= names]
