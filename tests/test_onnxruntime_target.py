"""The ONNX Runtime target's CPU build: its digest is of what ONNX Runtime will run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune.targets.onnxruntime import OPTIMIZED_MODEL_FILE, OnnxRuntimeTarget
from autotune.trial import MODEL_FILE, transform_model


def constant_subgraph_model(path: Path) -> Path:
    """z = relu(x @ (A + B)): A + B is constant, and ONNX Runtime folds it at any level but
    "disable", so `pass.fold_constants` changes the input model but not what runs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), name) for name in "AB"]
    nodes = [
        helper.make_node("Add", ["A", "B"], ["W"]),
        helper.make_node("MatMul", ["x", "W"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "constant_subgraph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cpu_target() -> OnnxRuntimeTarget:
    target = OnnxRuntimeTarget()
    target.cuda = False
    return target


def build(target: OnnxRuntimeTarget, model: Path, config: dict, workdir: Path):
    workdir.mkdir(parents=True)
    transform_model(model, config, workdir / MODEL_FILE, calibration_feeds=[], scheme=target.quantization_scheme)
    return target.build(workdir / MODEL_FILE, config, workdir, {"x": [1, 8]})


def test_configurations_equal_after_onnxruntime_optimization_share_a_digest(tmp_path, cpu_target):
    model = constant_subgraph_model(tmp_path / "m.onnx")
    plain = build(cpu_target, model, {}, tmp_path / "plain")
    folded = build(cpu_target, model, {"pass.fold_constants": True}, tmp_path / "folded")
    assert (tmp_path / "plain" / MODEL_FILE).read_bytes() != (tmp_path / "folded" / MODEL_FILE).read_bytes()
    assert plain.digest == folded.digest
    assert (tmp_path / "plain" / OPTIMIZED_MODEL_FILE).is_file()


def test_a_configuration_that_runs_differently_gets_another_digest(tmp_path, cpu_target):
    model = constant_subgraph_model(tmp_path / "m.onnx")
    plain = build(cpu_target, model, {}, tmp_path / "plain")
    unoptimized = build(cpu_target, model, {"graph_optimization_level": "disable"}, tmp_path / "unoptimized")
    one_thread = build(cpu_target, model, {"intra_op_threads": 1}, tmp_path / "one_thread")
    assert len({plain.digest, unoptimized.digest, one_thread.digest}) == 3


def test_the_optimized_model_is_not_the_deployable_artifact(tmp_path, cpu_target):
    model = constant_subgraph_model(tmp_path / "m.onnx")
    built = build(cpu_target, model, {}, tmp_path / "plain")
    assert built.artifact.name == MODEL_FILE
    assert OPTIMIZED_MODEL_FILE not in cpu_target.deploy_commands(built, {})["python"]
