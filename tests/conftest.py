"""Shared fixtures: tiny generated models and an isolated results directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("POLYGRAPHY_AUTOINSTALL_DEPS", "0")


def make_tiny_model(path: Path, *, seed: int = 0, dynamic_batch: bool = True, extra_int_input: bool = False) -> Path:
    """Conv+BN+ReLU, a redundant Transpose pair, then a MatMul head (K=12, not a multiple of 8)."""
    rng = np.random.default_rng(seed)
    batch = "N" if dynamic_batch else 1
    inits = [
        numpy_helper.from_array(rng.standard_normal((12, 3, 3, 3)).astype(np.float32) * 0.3, "conv_w"),
        numpy_helper.from_array(np.zeros(12, np.float32), "conv_b"),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(12)).astype(np.float32), "bn_s"),
        numpy_helper.from_array((0.1 * rng.standard_normal(12)).astype(np.float32), "bn_b"),
        numpy_helper.from_array((0.1 * rng.standard_normal(12)).astype(np.float32), "bn_m"),
        numpy_helper.from_array((1 + 0.1 * rng.random(12)).astype(np.float32), "bn_v"),
        numpy_helper.from_array(rng.standard_normal((12, 5)).astype(np.float32) * 0.3, "fc_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t1"], perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["t1"], ["r2"]),
        helper.make_node("Transpose", ["r2"], ["t2"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMean", ["t2"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "fc_w"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])]
    if extra_int_input:
        inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, "seq"]))
        inits.append(numpy_helper.from_array(rng.standard_normal((100, 5)).astype(np.float32), "emb"))
        nodes += [
            helper.make_node("Gather", ["emb", "ids"], ["e"]),
            helper.make_node("ReduceSum", ["e"], ["es"], axes=[1], keepdims=0),
            helper.make_node("Add", ["y", "es"], ["y2"]),
        ]
        outputs = [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [batch, 5])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "tiny.onnx")


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


SMALL_SPACE = """
target: onnxruntime
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, all], default: all}
  batch_size: {type: categorical, choices: [1, 4], default: 1}
  pass.remove_redundant_transposes: {type: bool, default: false}
"""


@pytest.fixture
def small_space(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SPACE)
    return path


def make_dynamic_hw_model(path: Path) -> Path:
    """Relu over [N, 3, H, W] with symbolic H and W (a detector's input): its output has its
    input's shape and values."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "hw", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
