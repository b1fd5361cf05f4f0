"""The study's sampler draws again rather than repeat a configuration the study holds."""

from __future__ import annotations

import itertools

import optuna
import pytest

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
ONE_KNOB = {"graph_optimization_level": "all", "intra_op_spinning": False}  # from the fastest
TWO_KNOBS = {"graph_optimization_level": "disable", "intra_op_spinning": False}


def tpe(space: SearchSpace, startup: int = 2) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=0, n_startup_trials=startup, multivariate=True)


def next_ask(tmp_path, sampler, unseen: dict) -> tuple[dict, list[dict]]:
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
        if {"graph_optimization_level": level, "intra_op_spinning": spin} != unseen
    ]
    for rank, config in enumerate(told):
        study.enqueue_trial(config)
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, [1000.0 - 100 * rank, 0.0][: len(DIRECTIONS)])
    return space.sample(study.ask()), told


@pytest.mark.parametrize("unseen", [ONE_KNOB, TWO_KNOBS], ids=["one-knob-away", "two-knobs-away"])
def test_the_sampler_asks_the_one_configuration_left_where_tpe_repeats_one(tmp_path, unseen):
    repeated, told = next_ask(tmp_path / "tpe", tpe, unseen)
    assert repeated in told  # TPE alone repeats a told configuration: what the wrapper is for
    asked, _ = next_ask(tmp_path / "no-repeat", lambda space: NoRepeatSampler(tpe(space), space), unseen)
    assert asked == unseen


def test_the_random_start_up_asks_a_configuration_the_study_does_not_hold(tmp_path):
    """TPE's first trials are random draws (independent, per knob): with seven of eight told, one
    of them repeats; the wrapper draws among the configurations not held."""

    def start_up(space):
        return tpe(space, startup=100)

    repeated, told = next_ask(tmp_path / "tpe", start_up, TWO_KNOBS)
    assert repeated in told
    asked, _ = next_ask(tmp_path / "no-repeat", lambda space: NoRepeatSampler(start_up(space), space), TWO_KNOBS)
    assert asked == TWO_KNOBS
