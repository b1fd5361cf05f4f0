"""The study spec: a validated request to tune one model, as the study loop takes it
(`autotune.spec` builds one from `start`'s options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotune.layout import storage_url
from autotune.measure import StopRule
from autotune.model import ModelInfo
from autotune.space import SearchSpace
from autotune.targets.base import TargetOptions
from autotune.verify import Tolerance


@dataclass
class StudySpec:
    """A validated request to tune one model; nothing has been written yet.

    Args:
        name (str): study name (directory under `results_dir`).
        results_dir (Path): where studies live.
        model (ModelInfo): the validated model.
        target_name (str): resolved target name.
        target_options (TargetOptions): target settings (cache dir is filled in later).
        space (SearchSpace): validated, capability-filtered space.
        known_good (list): partial configurations enqueued after trial 0.
        avoid (list): partial configurations never proposed (the space file's `avoid:`).
        tolerance (Tolerance): accuracy tolerance.
        input_pool (dict): fixed inputs (user's or synthetic).
        shape_overrides (dict): `--shape` values.
        n_trials (int | None): trial count to reach (None: budget only).
        budget_s (float | None): wall-time budget (None: trials only).
        seed (int): sampler seed. Default: 0.
        stop_rule (StopRule): benchmark stop rule.
        latency_sla_ms (float | None): constraint on median latency. Default: None.
        storage (str | None): Optuna storage URL; None means SQLite in the study directory.
        sampler (str): "tpe" (multi-objective TPE with constant liar) or "random" (a baseline
            for benchmarks). Default: "tpe".
    """

    name: str
    results_dir: Path
    model: ModelInfo
    target_name: str
    target_options: TargetOptions
    space: SearchSpace
    known_good: list[dict[str, Any]]
    tolerance: Tolerance
    input_pool: dict[str, np.ndarray]
    shape_overrides: dict[str, tuple[int, ...]]
    n_trials: int | None
    budget_s: float | None
    seed: int = 0
    stop_rule: StopRule = field(default_factory=StopRule)
    latency_sla_ms: float | None = None
    storage: str | None = None
    sampler: str = "tpe"
    start_options: dict[str, Any] = field(default_factory=dict)
    avoid: list[dict[str, Any]] = field(default_factory=list)
    # INT8/FP8 calibration batches, disjoint from `input_pool` (autotune.calibration); empty:
    # the trials calibrate on `input_pool` (library callers of old).
    calibration_feeds: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def study_dir(self) -> Path:
        return self.results_dir / self.name

    @property
    def storage_url(self) -> str:
        return storage_url(self.study_dir, self.storage)

    def batch_sizes(self) -> list[int]:
        if "batch_size" in self.space and self.model.dynamic_batch:
            return [int(b) for b in self.space["batch_size"].values()]
        return [1]
