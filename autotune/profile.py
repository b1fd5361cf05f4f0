"""Where the time goes: a per-layer profile of the defaults and of the study's answer, with
diagnoses of the seed's slow patterns.

Taken once per configuration after the search, never inside a timed measurement (a profiler
slows every node down by its own bookkeeping), by the study's target (`Target.layer_profile`):

- ONNX Runtime: its built-in profiler over a few warm runs, per node
  (`autotune.targets._onnxruntime_profile`).
- TensorRT / TensorRT-RTX: the layer table the target recorded at build, always; per-layer times
  through TensorRT's `IProfiler` only where a GPU runs the engine
  (`autotune.targets._tensorrt_profile`).

Each configuration is profiled `PROFILE_REPEATS` times, the defaults and the answer alternating,
and each share is reported as the median with its range over the repeats (`combine_repeats`); what
that range is, as a statistic, is stated with it (`spread_statement`); a change whose ranges overlap
is inside the spread, not a measured difference (`autotune.diagnoses.within_spread`).

Time is grouped by op class (`OP_CLASSES`); the GEMM-class share is the part of the time in
convolutions and matrix multiplies, what a well-tuned engine spends ≥ 90% of its GPU time on.
This module runs the profiles; `autotune.diagnoses` names the nodes of each seed pattern and
the pass or knob that addresses it (`diagnose`, `diagnose_graph_that_ran`, `search_status`), and
`autotune.profile_render` renders the stored profile for report.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from autotune.answer import chosen_trial, default_trial, defaults_at_batch, details
from autotune.diagnoses import _trial_inputs, moved, study_diagnoses
from autotune.errors import UsageError
from autotune.layout import PROFILE_FILE
from autotune.study import trial_by_number, trial_layers
from autotune.targets import target_class
from autotune.targets.base import Built, TargetOptions
from autotune.targets.layer_profile import (
    ATTENTION_OPS,
    CLASS_TITLES,
    DATA_MOVEMENT_OPS,
    ELEMENTWISE_OPS,
    GEMM_OPS,
    MAX_RUNS,
    MIN_PROFILE_S,
    MIN_RUNS,
    NORMALIZATION_OPS,
    OP_CLASSES,
    PRECISION_NAMES,
    TOP_NODES,
    WARMUP_RUNS,
    ProfileError,
    finish_profile,
    op_class,
    summarize,
)

if TYPE_CHECKING:
    from autotune.targets.base import Target

# Each configuration is profiled this many times, the defaults and the answer alternating, and
# each share reported as the median with its range over the repeats (`spread_statement`). Five:
# the range of 5 is a distribution-free 94% confidence interval for the median share (3 gave 75%),
# at 10 short profiles in finalize (a CPU profile is a session build and about 0.3 s of runs).
PROFILE_REPEATS = 5


def profile_estimate_s(build_s: float, run_s: float, repeats: int = PROFILE_REPEATS) -> float:
    """Seconds `profile_study` takes for two configurations: `repeats` profiles of each, every
    one a session build (`build_s`), the warm-up runs and the profiled runs (`run_s` each: at
    least `MIN_RUNS` and `MIN_PROFILE_S`, at most `MAX_RUNS`), with half again for the
    profiler's own cost (its trace written and parsed)."""
    timed_s = min(max(MIN_RUNS * run_s, MIN_PROFILE_S), MAX_RUNS * run_s)
    return 2 * repeats * 1.5 * (build_s + WARMUP_RUNS * run_s + timed_s)


_SUMMARY_KEYS = frozenset({"timed", "total_ms", "by_class_ms", "gemm_share", "count_by_class", "nodes", "top"})


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "low": float(min(values)), "high": float(max(values))}


def combine_repeats(repeats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One profile from `repeats` of the same configuration (each a `finish_profile` result):
    each node's median time, and each class share as the median with its range over the repeats
    (`share_spread`: {class: {median, low, high}}; `gemm_share` is its median). An untimed
    profile (a layer table) is returned as it is."""
    first = repeats[0]
    if not first.get("timed"):
        return {**first, "repeats": 1, "share_spread": None}
    timed = [r for r in repeats if r.get("timed") and r.get("total_ms")]
    times: dict[str, list[float]] = {}
    for profile in timed:
        for node in profile["nodes"]:
            if node.get("time_ms") is not None:
                times.setdefault(node["name"], []).append(float(node["time_ms"]))
    nodes = [
        {**{k: v for k, v in node.items() if k != "share"}, "time_ms": float(np.median(times[node["name"]]))}
        for node in first["nodes"]
        if node["name"] in times
    ]
    facts = {k: v for k, v in first.items() if k not in _SUMMARY_KEYS}
    runs = [float(r["run_ms"]) for r in timed if r.get("run_ms") is not None]
    facts.update(
        {"runs": sum(int(r.get("runs") or 0) for r in timed), "run_ms": float(np.median(runs)) if runs else None}
    )
    combined = finish_profile(nodes, facts)
    spread = {c: _spread([r["by_class_ms"][c] / r["total_ms"] for r in timed]) for c in OP_CLASSES}
    combined.update(
        {
            "repeats": len(timed),
            "share_spread": spread,
            "share_repeats": {c: [r["by_class_ms"][c] / r["total_ms"] for r in timed] for c in OP_CLASSES},
            "gemm_share": spread["gemm"]["median"],
            "run_ms_range": [min(runs), max(runs)] if runs else None,
        }
    )
    return combined


def spread_statement(repeats: int) -> dict[str, Any]:
    """What a share's range over `repeats` interleaved profiles is, as a statistic, for the report:
    `interval` (its name, "range of N interleaved runs"), `median_confidence` (the range of N
    exchangeable runs holds the median share with probability 1 - 2^(1-N), whatever the
    distribution) and `next_run_outside` (a single further run falls outside it with probability
    2/(N+1): a range is not where every further run lands)."""
    n = max(int(repeats), 1)
    return {
        "repeats": n,
        "interval": f"range of {n} interleaved run{'s' if n != 1 else ''}",
        "median_confidence": 1.0 - 2.0 ** (1 - n) if n > 1 else None,
        "next_run_outside": 2.0 / (n + 1) if n > 1 else None,
    }


def _study_target(study: optuna.Study) -> Target:
    """The study's target, constructed as its trials ran (build-only or not)."""

    name = str(study.user_attrs.get("target"))
    try:
        cls = target_class(name)
    except UsageError as exc:  # a plugin not importable here
        raise ProfileError(f"target {name!r}: no profiler here ({exc})") from None
    return cls(TargetOptions.from_study_attrs(study.user_attrs))


def profile_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The profile of one trial of `study` on its target (`Target.layer_profile`).

    Raises:
        ProfileError: the target has no profiler, or the trial cannot be profiled.
    """

    model_path, config, feeds = _trial_inputs(study, trial)
    target = _study_target(study)
    study_dir = Path(study.user_attrs["study_dir"])
    # The build as the trial left it: its artifact (the model when pruned or when the target has
    # none) and its facts, with the layer table only metrics.json keeps.
    info = {**details(trial).get("build", {}), "layers": trial_layers(study_dir, trial.number)}
    artifact = target.trial_artifact(study_dir / "trials" / str(trial.number)) or model_path
    built = Built(artifact=artifact, info=info, digest=trial.user_attrs.get("digest", ""))
    profile = target.layer_profile(built, model_path, config, feeds)
    if profile is None:
        raise ProfileError(f"target {target.name!r}: no profiler (its Target.layer_profile returns None)")
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    return {"trial": trial.number, "batch_size": int(batch), "config": config, **profile}


def profile_study(
    study: optuna.Study,
    trial_number: int | None = None,
    *,
    repeats: int = PROFILE_REPEATS,
    after_each: Any = None,
) -> dict[str, Any]:
    """Profiles the defaults and the study's answer (or trial `trial_number`) `repeats` times
    each, interleaved (defaults, answer, defaults, ...: `profile_order`), combines each
    configuration's repeats (`combine_repeats`: medians, and each share's range), diagnoses both
    against the graph that ran, and writes `profile.json` into the study directory (the whole
    comparison, with `spread`: what the ranges are, `spread_statement`) and into each profiled
    trial's directory (its own profile and diagnoses).

    Args:
        repeats (int): profiles of each configuration (at least 1). Default: `PROFILE_REPEATS`.
        after_each (Callable[[str, FrozenTrial], None] | None): called after each profile with
            its role ("defaults" or "best") and trial, so that another measurement (a reference
            profiler) runs in the same rounds, interleaved with these. Default: None.

    Raises:
        ProfileError: no baseline trial, or a configuration that cannot be profiled.
    """

    study_dir = Path(study.user_attrs["study_dir"])
    zero = default_trial(study)
    if zero is None:
        raise ProfileError(f"study {study.study_name}: no measured baseline (trial 0) to profile")
    if trial_number is not None:
        best = trial_by_number(study, trial_number)
        role = f"trial {trial_number}"
    else:
        best = chosen_trial(study)
        role = "the answer"
    if best is not None:
        # The defaults at the answer's batch, where they were measured: the study compares
        # only at equal batch (a batch-8 profile against batch 1 says nothing about either).
        batch = int(best.user_attrs.get("batch_size", 1))
        zero = defaults_at_batch(study, zero, batch) or zero
    # Interleaved, the defaults and the answer alternating, so that a slow spell of a shared
    # host lands on both; each share is then a median with its range over the repeats.
    pairs = [("defaults", zero)] + ([("best", best)] if best is not None and best.number != zero.number else [])
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in pairs}
    order: list[str] = []
    for repeat in range(max(1, repeats)):
        for key, trial in pairs:
            runs[key].append(profile_trial(study, trial))
            order.append(key)
            if after_each is not None:
                after_each(key, trial)
        if repeat == 0 and not runs["defaults"][0].get("timed"):
            break  # a layer table: the same every time
    profiles: dict[str, Any] = {key: combine_repeats(found) for key, found in runs.items()}
    if best is not None and "best" not in profiles:
        profiles["best"] = profiles["defaults"]
    best_label = f"the answer (trial {best.number})" if trial_number is None and best is not None else role
    diagnoses = study_diagnoses(study, zero, best, profiles, best_label=best_label)
    data = {
        "study": study.study_name,
        "target": study.user_attrs.get("target"),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "best_role": role if best is not None else None,
        "defaults": profiles["defaults"],
        "best": profiles.get("best"),
        "profile_order": order,
        "spread": spread_statement(profiles["defaults"].get("repeats") or 1),
        "moved": moved(profiles["defaults"], profiles["best"]) if "best" in profiles else None,
        "diagnoses": diagnoses,
    }
    (study_dir / PROFILE_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n")
    for key, trial in (("defaults", zero), ("best", best)):
        if trial is None or key not in profiles:
            continue
        trial_dir = study_dir / "trials" / str(trial.number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        own = [d for d in diagnoses if d.get(f"in_{key}")]
        (trial_dir / PROFILE_FILE).write_text(
            json.dumps({"study": study.study_name, **profiles[key], "diagnoses": own}, indent=2, default=str) + "\n"
        )
    return data


def profile_after_search(study: optuna.Study) -> dict[str, Any] | None:
    """`profile_study` for finalize: a failure is logged and recorded in the study
    (`profile_error`), never raised (a profile is a report, not the answer)."""
    try:
        data = profile_study(study)
    except Exception as exc:  # noqa: BLE001 - finalize must never fail on a profile
        message = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        logging.getLogger("autotune").warning("profile skipped: %s", message)
        (Path(study.user_attrs.get("study_dir", ".")) / PROFILE_FILE).unlink(missing_ok=True)  # never a stale one
        try:
            study.set_user_attr("profile_error", message)
        except Exception:  # noqa: BLE001
            pass
        return None
    if study.user_attrs.get("profile_error"):
        study.set_user_attr("profile_error", None)
    return data


def load_profile(study_dir: Path) -> dict[str, Any] | None:
    """The study's stored `profile.json`, or None."""
    try:
        return json.loads((Path(study_dir) / PROFILE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# The op taxonomy and the profile's shape live in `autotune.targets.layer_profile` (below the
# targets' profilers); re-exported here for the readers of a profile. The diagnoses are in
# `autotune.diagnoses`, the rendering in `autotune.profile_render`.
__all__ = [
    "ATTENTION_OPS",
    "CLASS_TITLES",
    "DATA_MOVEMENT_OPS",
    "ELEMENTWISE_OPS",
    "GEMM_OPS",
    "MAX_RUNS",
    "MIN_PROFILE_S",
    "MIN_RUNS",
    "NORMALIZATION_OPS",
    "OP_CLASSES",
    "PRECISION_NAMES",
    "TOP_NODES",
    "WARMUP_RUNS",
    "PROFILE_FILE",
    "PROFILE_REPEATS",
    "ProfileError",
    "combine_repeats",
    "finish_profile",
    "load_profile",
    "op_class",
    "profile_after_search",
    "profile_estimate_s",
    "profile_study",
    "profile_trial",
    "summarize",
    "spread_statement",
]
