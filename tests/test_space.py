"""Search spaces: YAML validation, conditions, sampling, enumeration and capability filtering."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.errors import UsageError
from autotune.space import config_key, load_space, parse_space, read_space_data
from autotune.targets.onnxruntime import OnnxRuntimeTarget
from autotune.targets.tensorrt import TensorRTRTXTarget

TESTS = Path(__file__).resolve().parent

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


# --------------------------------------------------------------------------- extends


class EveryChoiceRTX(TensorRTRTXTarget):
    """TensorRT-RTX's knob names, every choice kept: a space compared as written, not as filtered
    by what this machine's TensorRT-RTX offers (and without probing it)."""

    def supported_choices(self, knob, choices):
        return list(choices)


def test_the_tensorrt_rtx_space_extending_tensorrt_loads_as_its_flat_copy_did():
    flat = TESTS / "tensorrt_rtx_space_flat.yaml"  # tensorrt-rtx.yaml before it extended tensorrt.yaml
    shipped = Path(TensorRTRTXTarget.default_space_path())

    before, after = load_space(flat, EveryChoiceRTX()), load_space(shipped, EveryChoiceRTX())

    assert "extends" in shipped.read_text() and "extends" not in flat.read_text()
    assert after.target == before.target == "tensorrt-rtx"
    assert after.knobs == before.knobs  # names, order, types, choices, defaults, ranges, conditions
    for key in ("known_good", "avoid"):
        assert read_space_data(shipped).get(key) == read_space_data(flat).get(key)


BASE = """
target: onnxruntime
knobs:
  execution_mode: {type: categorical, choices: [sequential, parallel], default: sequential}
  intra_op_threads: {type: int, low: 1, high: 4, default: 1}
  pass.fuse_gelu: {type: bool, default: false}
known_good:
  - {execution_mode: parallel}
avoid:
  - {execution_mode: parallel, intra_op_threads: 4}
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory / next(iter(files))


def test_an_extending_file_replaces_removes_and_adds_knobs_and_keeps_the_lists_it_does_not_give(tmp_path):
    child = write(tmp_path, {"child.yaml": """
extends: base.yaml
knobs:
  intra_op_threads: {type: int, low: 2, high: 8, default: 2}
  pass.fuse_gelu: null
  pass.fuse_layernorm: {type: bool, default: false}
avoid: []
""", "base.yaml": BASE})  # fmt: skip

    space = load_space(child, OnnxRuntimeTarget())
    data = read_space_data(child)

    assert space.names == ["execution_mode", "intra_op_threads", "pass.fuse_layernorm"]
    threads = space["intra_op_threads"]
    assert (threads.low, threads.high, threads.default) == (2, 8, 2)
    assert data["known_good"] == [{"execution_mode": "parallel"}]  # not given: the base's
    assert data["avoid"] == []  # given: replaces the base's
    assert "extends" not in data


def test_extends_chains_through_several_files(tmp_path):
    top = write(tmp_path, {
        "top.yaml": "extends: middle.yaml\nknobs: {execution_mode: null}\n",
        "middle.yaml": "extends: base.yaml\nknobs: {pass.fuse_gelu: null}\n",
        "base.yaml": BASE,
    })  # fmt: skip

    assert load_space(top, OnnxRuntimeTarget()).names == ["intra_op_threads"]


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"child.yaml": "extends: nowhere.yaml\n"}, "'extends' names 'nowhere.yaml', but there is no"),
        ({"child.yaml": "extends: [base.yaml]\n"}, "'extends' must name a sibling space file"),
        ({"child.yaml": "extends: 3\n"}, "'extends' must name a sibling space file"),
        ({"child.yaml": "extends: ../base.yaml\n"}, "'extends' must name a sibling space file"),
        ({"child.yaml": "extends: child.yaml\n"}, "'extends' forms a cycle (child.yaml -> child.yaml)"),
        (
            {"child.yaml": "extends: other.yaml\n", "other.yaml": "extends: child.yaml\n"},
            "'extends' forms a cycle (child.yaml -> other.yaml -> child.yaml)",
        ),
        ({"child.yaml": "extends: base.yaml\nknobs: {cuda_graph: null}\n"}, "knob 'cuda_graph' is null (removed)"),
        ({"child.yaml": "extends: base.yaml\nknobs: [execution_mode]\n"}, "'knobs' must be a mapping"),
    ],
)
def test_a_bad_extends_is_one_line_naming_the_file_and_the_key(tmp_path, files, fragment):
    child = write(tmp_path, {**files, "base.yaml": BASE})

    with pytest.raises(UsageError) as error:
        load_space(child, OnnxRuntimeTarget())

    message = str(error.value)
    assert len(message.splitlines()) == 1 and fragment in message, message
    assert message.startswith(f"--space {child}") or message.startswith(f"--space {tmp_path / 'other.yaml'}")


def test_int8_quantization_is_static_or_dynamic_on_the_cpu_and_static_only_on_tensorrt():
    cpu = load_space(OnnxRuntimeTarget.default_space_path(), OnnxRuntimeTarget())
    assert cpu["quantization"].choices == ("static", "dynamic")
    dynamic = cpu.complete({"precision": "int8", "quantization": "dynamic"})
    static = cpu.complete({"precision": "int8"})
    # Calibration and the Q/DQ repairs belong to static quantization only.
    assert "calibration_method" not in dynamic and "keep_float_layers" not in dynamic
    assert static["quantization"] == "static" and {"calibration_method", "keep_float_layers"} <= set(static)
    assert "quantization" not in cpu.complete({"precision": "fp32"})
    rtx = parse_space(
        {"knobs": {"precision": {"type": "categorical", "choices": ["fp32", "int8"], "default": "fp32"},
                   "quantization": {"type": "categorical", "choices": ["static", "dynamic"], "default": "static",
                                    "condition": {"precision": "int8"}}}},
        TensorRTRTXTarget(),
    )  # fmt: skip
    assert "dynamic" not in (rtx["quantization"].choices if "quantization" in rtx else ())
