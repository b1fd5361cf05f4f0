"""Search spaces: YAML validation, conditions, sampling, enumeration and capability filtering."""

from __future__ import annotations

import optuna
import pytest

from autotune.errors import UsageError
from autotune.space import config_key, parse_space
from autotune.targets.onnxruntime import OnnxRuntimeTarget

SPACE = {
    "knobs": {
        "inter_op_threads": {
            "type": "int",
            "low": 1,
            "high": 3,
            "default": 1,
            "condition": {"execution_mode": "parallel"},
        },
        "execution_mode": {"type": "categorical", "choices": ["sequential", "parallel"], "default": "sequential"},
        "precision": {"type": "categorical", "choices": ["fp32", "int8", "fp16"], "default": "fp32"},
        "pass.fuse_gelu": {"type": "bool", "default": False},
    }
}


@pytest.fixture(autouse=True)
def cpu_provider(monkeypatch):
    monkeypatch.setenv("AUTOTUNE_ORT_PROVIDER", "cpu")  # the same space on a GPU machine


@pytest.fixture
def space():
    return parse_space(SPACE, OnnxRuntimeTarget())


def test_conditions_order_knobs_after_what_they_depend_on(space):
    assert space.names.index("execution_mode") < space.names.index("inter_op_threads")


def test_a_conditional_knob_is_absent_when_its_condition_fails(space):
    assert "inter_op_threads" not in space.default_config()
    assert space.complete({"execution_mode": "parallel"})["inter_op_threads"] == 1


def test_precisions_the_target_cannot_run_are_filtered_out(space):
    assert space["precision"].choices == ("fp32", "int8")  # the CPU target has no fp16 kernels worth tuning


def test_enumeration_counts_each_distinct_configuration_once(space):
    configs = list(space.enumerate())
    # sequential: 2 precisions x 2 gelu; parallel: 3 thread counts x 2 x 2
    assert len(configs) == 4 + 12
    assert len({config_key(c) for c in configs}) == len(configs)
    assert space.size() == 16


def test_sampling_gives_only_active_knobs_within_their_ranges(space, tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", sampler=optuna.samplers.RandomSampler(0))
    for _ in range(20):
        trial = study.ask()
        config = space.sample(trial)
        assert ("inter_op_threads" in config) == (config["execution_mode"] == "parallel")
        assert config["precision"] in ("fp32", "int8")
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("knob", "spec", "fragment"),
    [
        ("intra_op_threads", {"type": "int", "low": 1, "high": 4}, "needs a 'default'"),
        ("intra_op_threads", {"type": "int", "low": 1, "high": 4, "default": 9}, "outside [1, 4]"),
        ("execution_mode", {"type": "categorical", "choices": ["a", "a"], "default": "a"}, "lists a choice twice"),
        ("execution_mode", {"type": "categorical", "choices": ["a"], "default": "b"}, "not one of its choices"),
        ("intra_op_threads", {"type": "float", "low": 0, "high": 1, "log": True, "default": 0.5}, "log-scaled"),
        ("intra_op_threads", {"type": "int", "low": 1, "high": 2, "default": 1, "colour": "red"}, "unknown field"),
        ("intra_op_threads", {"type": "matrix", "default": 1}, "has type 'matrix'"),
    ],
)
def test_invalid_knobs_are_rejected_with_the_knob_named(knob, spec, fragment):
    with pytest.raises(UsageError) as error:
        parse_space({"knobs": {knob: spec}}, OnnxRuntimeTarget())
    assert fragment in str(error.value) and knob in str(error.value)


def test_a_condition_cycle_is_rejected():
    knobs = {
        "execution_mode": {
            "type": "categorical",
            "choices": ["sequential", "parallel"],
            "default": "sequential",
            "condition": {"intra_op_spinning": True},
        },
        "intra_op_spinning": {"type": "bool", "default": True, "condition": {"execution_mode": "parallel"}},
    }
    with pytest.raises(UsageError, match="cycle"):
        parse_space({"knobs": knobs}, OnnxRuntimeTarget())


def test_a_space_written_for_another_target_is_rejected():
    with pytest.raises(UsageError, match="written for target 'tensorrt'"):
        parse_space({"target": "tensorrt", **SPACE}, OnnxRuntimeTarget())
