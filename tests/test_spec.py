"""The study spec (autotune.spec): which options were given, and what a resume inherits."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.spec import _inherit_options, given_options, parse_start, start_args

STORED = {"seed": "3", "max_measure_s": "0.5", "shape": ["x:1,3,8,8"], "target": "onnxruntime", "build_only": False}


def test_an_explicit_default_on_resume_is_kept_not_inherited():
    args = parse_start(["--resume", "s", "--seed", "0", "--target", "auto"])
    _inherit_options(args, STORED)
    assert args.seed == "0" and args.target == "auto"  # given, although equal to the defaults
    assert args.max_measure_s == "0.5" and args.shape == ["x:1,3,8,8"]  # not given: inherited


def test_every_form_of_a_flag_counts_as_given():
    assert given_options(["m.onnx", "--seed=0", "--shape", "a:1", "--foreground"]) == {
        "model",
        "seed",
        "shape",
        "foreground",
    }
    assert given_options(["m.onnx", "--max-measure", "2"]) == {"model", "max_measure_s"}  # an abbreviation
    assert given_options([]) == frozenset()


def test_library_callers_build_options_without_a_command_line(tmp_path):
    args = start_args(tmp_path / "m.onnx", trials="5", seed="0", results_dir=tmp_path)
    assert args.model == str(tmp_path / "m.onnx") and args.trials == "5" and args.max_measure_s == "2"
    assert args.given == {"model", "trials", "seed", "results_dir"}
    _inherit_options(args, STORED)
    assert args.seed == "0" and args.max_measure_s == "0.5"
    with pytest.raises(TypeError, match="unknown options max_measure"):
        start_args(Path("m.onnx"), max_measure="1")


def test_nothing_in_autotune_imports_the_cli():
    import ast

    package = Path(__file__).resolve().parent.parent / "autotune"
    importers = []
    for path in package.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "autotune.cli":
                importers.append(str(path.relative_to(package)))
    assert importers == []


def test_a_shape_is_applied_by_position_when_two_dims_share_the_name_question_mark(tmp_path):
    """Issue 29: a classifier input ('dim0', 3, '?', '?') started with --shape x:1,3,48,192 ran
    every trial at 48x48 (H's value taken for W by the shared name '?')."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from autotune.model import concrete_shapes, load_model_info, synthetic_pool, unresolved_dims

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["dim0", 3, "?", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["dim0", 3, "?", "?"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "q", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "q.onnx"))
    info = load_model_info(tmp_path / "q.onnx")
    overrides = {"x": (1, 3, 48, 192)}
    assert concrete_shapes(info, 4, overrides)["x"] == [4, 3, 48, 192]
    assert synthetic_pool(info, overrides, samples=2)["x"].shape == (2, 3, 48, 192)
    assert unresolved_dims(info, overrides) == {}
    assert set(unresolved_dims(info, {})["x"]) == {"?"}  # nothing given: both still asked for
    assert np.isfinite(synthetic_pool(info, overrides, samples=1)["x"]).all()


def test_a_named_dim_is_shared_between_inputs_and_an_anonymous_one_is_not(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from autotune.model import concrete_shapes, load_model_info, unresolved_dims

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "seq", "?"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", "seq", "?"])
    out = helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", "seq", "?"])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "ab", [a, b], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "ab.onnx"))
    info = load_model_info(tmp_path / "ab.onnx")
    # `seq` comes from a's --shape; b's anonymous "?" is not a's: it must be given
    assert unresolved_dims(info, {"a": (1, 7, 5)}) == {"b": ["?"]}
    assert concrete_shapes(info, 1, {"a": (1, 7, 5), "b": (1, 7, 5)}) == {"a": [1, 7, 5], "b": [1, 7, 5]}


def test_dynamic_int8_leaves_the_space_of_a_model_without_a_weighted_matmul(tmp_path, monkeypatch):
    import models_for_passes as models

    from autotune.space import load_space
    from autotune.spec import _drop_unavailable_quantization
    from autotune.targets.onnxruntime import OnnxRuntimeTarget

    monkeypatch.setenv("AUTOTUNE_ORT_PROVIDER", "cpu")
    path = OnnxRuntimeTarget.default_space_path()
    space = load_space(path, OnnxRuntimeTarget())
    cnn, _ = _drop_unavailable_quantization(space, models.conv_batchnorm_relu())
    assert "dynamic" in space["quantization"].values()
    assert list(cnn["quantization"].values()) == ["static"]
    attention = models.small_cnn_attention()
    kept, note = _drop_unavailable_quantization(space, attention)
    assert "dynamic" in kept["quantization"].values() and note == ""
    _, note = _drop_unavailable_quantization(space, models.conv_batchnorm_relu())
    assert note == "quantization dynamic removed from the space: the model has no MatMul/Gemm with a constant weight"
