"""The study's sampler draws again rather than repeat a configuration the study holds."""

from __future__ import annotations

import itertools

import optuna
import pytest

from autotune.space import SearchSpace, config_key, parse_space
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


CONDITIONAL = {
    "knobs": {
        "execution_mode": {"type": "categorical", "choices": ["sequential", "parallel"], "default": "sequential"},
        "intra_op_spinning": {"type": "bool", "default": True},
        "inter_op_threads": {"type": "int", "low": 0, "high": 3, "default": 0, "condition": {"execution_mode": "parallel"}},
    }
}  # fmt: skip


def conditional_asks(tmp_path, sampler, asks: int = 6) -> tuple[list[dict], set[str]]:
    """Every configuration but parallel ones with `inter_op_threads` 3 told (SQLite), the
    parallel ones fastest; the next `asks` configurations the sampler asks (each told as slow),
    and the keys of those told before them."""
    space = parse_space(CONDITIONAL, OnnxRuntimeTarget())
    tmp_path.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", directions=list(DIRECTIONS), sampler=sampler(space)
    )
    told = [{"execution_mode": "sequential", "intra_op_spinning": spin} for spin in (True, False)]
    told += [{"execution_mode": "parallel", "intra_op_spinning": spin, "inter_op_threads": n}
             for spin in (True, False) for n in range(3)]  # fmt: skip
    for rank, config in enumerate(told):
        study.enqueue_trial(config)
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, [100.0 + 100 * rank, 0.0][: len(DIRECTIONS)])
    asked = []
    for _ in range(asks):
        trial = study.ask()
        asked.append(space.sample(trial))
        study.tell(trial, [1.0, 0.0][: len(DIRECTIONS)])
    return asked, {config_key(c) for c in told}


def test_a_conditional_knob_sampled_alone_does_not_complete_a_configuration_the_study_holds(tmp_path):
    """`inter_op_threads` exists only under `execution_mode: parallel`, so multivariate TPE leaves
    it to an independent draw. Optuna's PartialFixedSampler makes that draw always 0 (a value every
    parallel configuration told holds): alone it repeats; wrapped, the draw completes the two
    configurations the study does not hold."""

    def fixed_zero(space):
        return optuna.samplers.PartialFixedSampler({"inter_op_threads": 0}, tpe(space))

    asked, told = conditional_asks(tmp_path / "tpe", fixed_zero, asks=2)
    assert any(config_key(c) in told for c in asked)  # alone it repeats
    asked, told = conditional_asks(tmp_path / "no-repeat", lambda space: NoRepeatSampler(fixed_zero(space), space), 2)
    assert sorted((c["intra_op_spinning"], c.get("inter_op_threads")) for c in asked) == [(False, 3), (True, 3)]
