"""The study's sampler draws again rather than repeat a configuration the study holds."""

from __future__ import annotations

import itertools

import optuna

from autotune.space import SearchSpace, parse_space
from autotune.study._records import DIRECTIONS
from autotune.study._storage import NoRepeatSampler
from autotune.targets.onnxruntime import OnnxRuntimeTarget

SPACE = {
    "knobs": {
        "graph_optimization_level": {
            "type": "categorical", "choices": ["disable", "basic", "extended", "all"], "default": "all",
        },
        "intra_op_spinning": {"type": "bool", "default": True},
    }
}  # fmt: skip
UNSEEN = {"graph_optimization_level": "all", "intra_op_spinning": False}  # one knob from the fastest


def tpe(space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=0, n_startup_trials=2, multivariate=True)


def no_repeat(space: SearchSpace) -> optuna.samplers.BaseSampler:
    return NoRepeatSampler(tpe(space), space)


def next_ask(tmp_path, sampler) -> tuple[dict, list[dict]]:
    """Seven of the eight configurations told (SQLite), the fastest first; the configuration
    the sampler asks next, and the seven."""
    space = parse_space(SPACE, OnnxRuntimeTarget())
    tmp_path.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", directions=list(DIRECTIONS), sampler=sampler(space)
    )
    told = [
        {"graph_optimization_level": level, "intra_op_spinning": spin}
        for level, spin in itertools.product(["all", "extended", "basic", "disable"], [True, False])
        if {"graph_optimization_level": level, "intra_op_spinning": spin} != UNSEEN
    ]
    for rank, config in enumerate(told):
        study.enqueue_trial(config)
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, [1000.0 - 100 * rank, 0.0][: len(DIRECTIONS)])
    return space.sample(study.ask()), told


def test_the_sampler_asks_the_one_configuration_left_where_tpe_repeats_one(tmp_path):
    repeated, told = next_ask(tmp_path / "tpe", tpe)
    assert repeated in told  # TPE alone repeats a told configuration: what the wrapper is for
    asked, _ = next_ask(tmp_path / "no-repeat", no_repeat)
    assert asked == UNSEEN
