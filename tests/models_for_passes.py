"""Tiny ONNX models, each containing (or lacking) one pass's pattern; seeded weights."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BATCH = "batch"  # every model's first dim is symbolic


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "test_graph",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[numpy_helper.from_array(value, name) for name, value in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)  # gives the outputs their shapes
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def weights(shape, seed: int = 0, scale: float = 0.5) -> np.ndarray:
    return (_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for `model`, with every symbolic dim set to `batch`."""
    rng = _rng(seed)
    initializer_names = {init.name for init in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        shape = [dim.dim_value if dim.HasField("dim_value") else batch for dim in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


# --- transposes ---------------------------------------------------------------------------------


def transpose_relu_transpose(channels: int = 3, size: int = 4) -> onnx.ModelProto:
    """The FaceNet case: NCHW -> NHWC, Relu, + per-channel bias, * scalar, back to NCHW."""
    return make_model(
        [
            helper.make_node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Relu", ["nhwc"], ["relu"]),
            helper.make_node("Add", ["relu", "bias"], ["biased"]),
            helper.make_node("Mul", ["biased", "two"], ["scaled"]),
            helper.make_node("Transpose", ["scaled"], ["y"], perm=[0, 3, 1, 2]),
        ],
        {"x": [BATCH, channels, size, size]},
        ["y"],
        {"bias": weights([channels], 1), "two": np.array(2.0, np.float32)},
    )


def transpose_chain(perms: list[list[int]], rank: int = 4) -> onnx.ModelProto:
    """x -> Transpose(perms[0]) -> ... -> Sigmoid: consecutive Transposes, whatever they compose to."""
    nodes, tensor = [], "x"
    for index, perm in enumerate(perms):
        nodes.append(helper.make_node("Transpose", [tensor], [f"t{index}"], perm=perm))
        tensor = f"t{index}"
    nodes.append(helper.make_node("Sigmoid", [tensor], ["y"]))
    return make_model(nodes, {"x": [BATCH, 3, 4, 5][:rank]}, ["y"])


def transpose_without_inverse() -> onnx.ModelProto:
    """A Transpose whose inverse never comes (a real layout change): nothing to remove."""
    return make_model(
        [
            helper.make_node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Relu", ["nhwc"], ["y"]),
        ],
        {"x": [BATCH, 3, 4, 4]},
        ["y"],
    )


# --- constants ----------------------------------------------------------------------------------


def constant_subgraphs() -> onnx.ModelProto:
    """Shape arithmetic on static dims, a transposed weight and a dead branch."""
    return make_model(
        [
            helper.make_node("Transpose", ["w_t"], ["w"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Shape", ["h"], ["h_shape"]),
            helper.make_node("Gather", ["h_shape", "last"], ["width"], axis=0),
            helper.make_node("Unsqueeze", ["width", "zero_axis"], ["width_1d"]),
            helper.make_node("Concat", ["minus_one", "width_1d"], ["target_shape"], axis=0),
            helper.make_node("Reshape", ["h", "target_shape"], ["y"]),
            helper.make_node("Neg", ["w"], ["dead"]),
        ],
        {"x": [BATCH, 6]},
        ["y"],
        {
            "w_t": weights([5, 6], 2),
            "last": np.array(1, np.int64),
            "zero_axis": np.array([0], np.int64),
            "minus_one": np.array([-1], np.int64),
        },
    )


def relu_only() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [BATCH, 4]}, ["y"])


# --- batchnorm ----------------------------------------------------------------------------------


def _batchnorm_initializers(channels: int, seed: int) -> dict[str, np.ndarray]:
    rng = _rng(seed)
    return {
        "bn_scale": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "bn_bias": rng.standard_normal(channels).astype(np.float32),
        "bn_mean": rng.standard_normal(channels).astype(np.float32),
        "bn_var": rng.uniform(0.5, 2.0, channels).astype(np.float32),
    }


def _batchnorm_node(source: str) -> onnx.NodeProto:
    return helper.make_node(
        "BatchNormalization", [source, "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["normalized"], epsilon=1e-3
    )


def conv_batchnorm_relu(
    in_channels: int = 3, out_channels: int = 4, with_bias: bool = True, size: int = 6
) -> onnx.ModelProto:
    conv_inputs = ["x", "conv_w"] + (["conv_b"] if with_bias else [])
    return make_model(
        [
            helper.make_node("Conv", conv_inputs, ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            _batchnorm_node("conv"),
            helper.make_node("Relu", ["normalized"], ["y"]),
        ],
        {"x": [BATCH, in_channels, size, size]},
        ["y"],
        {"conv_w": weights([out_channels, in_channels, 3, 3], 3), "conv_b": weights([out_channels], 4)}
        | _batchnorm_initializers(out_channels, 5),
    )


def conv_transpose_batchnorm(in_channels: int = 4, out_channels: int = 6, group: int = 2) -> onnx.ModelProto:
    return make_model(
        [
            helper.make_node("ConvTranspose", ["x", "w"], ["conv"], strides=[2, 2], kernel_shape=[2, 2], group=group),
            _batchnorm_node("conv"),
        ],
        {"x": [BATCH, in_channels, 3, 3]},
        ["normalized"],
        {"w": weights([in_channels, out_channels // group, 2, 2], 6)} | _batchnorm_initializers(out_channels, 7),
    )


def gemm_batchnorm(in_features: int = 5, out_features: int = 4, trans_b: int = 1) -> onnx.ModelProto:
    shape = [out_features, in_features] if trans_b else [in_features, out_features]
    return make_model(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["gemm"], transB=trans_b, beta=0.5),
            _batchnorm_node("gemm"),
        ],
        {"x": [BATCH, in_features]},
        ["normalized"],
        {"w": weights(shape, 8), "b": weights([out_features], 9)} | _batchnorm_initializers(out_features, 10),
    )


def conv_affine(
    op: str = "Conv", scale_shape: tuple = (1,), shift_shape: tuple = (1,), channels: int = 4, shift_op: str = "Add"
) -> onnx.ModelProto:
    """A Conv (or Gemm) followed by a constant Mul then a constant Add/Sub (PP-LCNetV3's
    "learnable affine block"), then a Relu; the constants have the shapes given."""
    if op == "Conv":
        layer = helper.make_node("Conv", ["x", "w", "b"], ["layer"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
        inputs, w = {"x": [BATCH, 3, 5, 5]}, weights([channels, 3, 3, 3], 12)
    else:
        layer = helper.make_node("Gemm", ["x", "w", "b"], ["layer"], transB=1)
        inputs, w = {"x": [BATCH, 3]}, weights([channels, 3], 12)
    return make_model(
        [
            layer,
            helper.make_node("Mul", ["scale", "layer"], ["scaled"]),
            helper.make_node(shift_op, ["scaled", "shift"], ["shifted"]),
            helper.make_node("Relu", ["shifted"], ["y"]),
        ],
        inputs,
        ["y"],
        {
            "w": w,
            "b": weights([channels], 13),
            "scale": weights(scale_shape, 14) + 1.5,
            "shift": weights(shift_shape, 15),
        },
    )


def batchnorm_after_relu() -> onnx.ModelProto:
    """BatchNormalization not fed by a Conv: nothing to fold."""
    return make_model(
        [helper.make_node("Relu", ["x"], ["relu"]), _batchnorm_node("relu")],
        {"x": [BATCH, 3, 4, 4]},
        ["normalized"],
        _batchnorm_initializers(3, 11),
    )


# --- normalizations and GELU ----------------------------------------------------------------------


def decomposed_layernorm(hidden: int = 8, opset: int = 13, axes: list[int] | None = None) -> onnx.ModelProto:
    """ReduceMean - Sub - Pow - ReduceMean - Add - Sqrt - Div - Mul - Add over the last axis."""
    axes = axes or [-1]
    return make_model(
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=axes),
            helper.make_node("Sub", ["x", "mean"], ["centered"]),
            helper.make_node("Pow", ["centered", "two"], ["squared"]),
            helper.make_node("ReduceMean", ["squared"], ["variance"], axes=axes),
            helper.make_node("Add", ["variance", "epsilon"], ["variance_eps"]),
            helper.make_node("Sqrt", ["variance_eps"], ["std"]),
            helper.make_node("Div", ["centered", "std"], ["normalized"]),
            helper.make_node("Mul", ["normalized", "gamma"], ["scaled"]),
            helper.make_node("Add", ["scaled", "beta"], ["y"]),
        ],
        {"x": [BATCH, 5, hidden]},
        ["y"],
        {
            "two": np.array(2.0, np.float32),
            "epsilon": np.array(1e-5, np.float32),
            "gamma": weights([hidden], 12),
            "beta": weights([hidden], 13),
        },
        opset=opset,
    )


def decomposed_groupnorm(channels: int = 8, groups: int = 4, size: int = 5, opset: int = 17) -> onnx.ModelProto:
    """PyTorch's GroupNorm export: Reshape - InstanceNormalization - Reshape - Mul - Add."""
    return make_model(
        [
            helper.make_node("Reshape", ["x", "group_shape"], ["grouped"]),
            helper.make_node("InstanceNormalization", ["grouped", "ones", "zeros"], ["normalized"], epsilon=1e-5),
            helper.make_node("Shape", ["x"], ["x_shape"]),
            helper.make_node("Reshape", ["normalized", "x_shape"], ["restored"]),
            helper.make_node("Mul", ["restored", "gamma"], ["scaled"]),
            helper.make_node("Add", ["scaled", "beta"], ["y"]),
        ],
        {"x": [BATCH, channels, size, size]},
        ["y"],
        {
            "group_shape": np.array([0, groups, -1], np.int64),
            "ones": np.ones(groups, np.float32),
            "zeros": np.zeros(groups, np.float32),
            "gamma": weights([channels, 1, 1], 14),
            "beta": weights([channels, 1, 1], 15),
        },
        opset=opset,
    )


def erf_gelu(form: str = "div", hidden: int = 6, opset: int = 17) -> onnx.ModelProto:
    """MatMul then GELU as `x * 0.5 * (1 + erf(x / sqrt 2))` in one of its exported forms.

    form: "div" (x/√2, then (x*cdf)*0.5), "mul" (x*(1/√2), then (cdf*0.5)*x) or "half_first"
    (x*(1/√2), then (x*0.5)*cdf).
    """
    scale_node = (
        helper.make_node("Div", ["h", "sqrt2"], ["scaled"])
        if form == "div"
        else helper.make_node("Mul", ["h", "inv_sqrt2"], ["scaled"])
    )
    tail = {
        "div": [
            helper.make_node("Mul", ["h", "one_plus"], ["x_cdf"]),
            helper.make_node("Mul", ["x_cdf", "half"], ["y"]),
        ],
        "mul": [
            helper.make_node("Mul", ["one_plus", "half"], ["half_cdf"]),
            helper.make_node("Mul", ["half_cdf", "h"], ["y"]),
        ],
        "half_first": [
            helper.make_node("Mul", ["h", "half"], ["half_x"]),
            helper.make_node("Mul", ["half_x", "one_plus"], ["y"]),
        ],
    }[form]
    return make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            scale_node,
            helper.make_node("Erf", ["scaled"], ["erf"]),
            helper.make_node("Add", ["erf", "one"], ["one_plus"]),
            *tail,
        ],
        {"x": [BATCH, hidden]},
        ["y"],
        {
            "w": weights([hidden, hidden], 16),
            "sqrt2": np.array(math.sqrt(2), np.float32),
            "inv_sqrt2": np.array(1 / math.sqrt(2), np.float32),
            "one": np.array(1.0, np.float32),
            "half": np.array(0.5, np.float32),
        },
        opset=opset,
    )


def erf_without_gelu() -> onnx.ModelProto:
    """Erf, + 1, but no multiplication by x: not a GELU."""
    return make_model(
        [helper.make_node("Erf", ["x"], ["erf"]), helper.make_node("Add", ["erf", "one"], ["y"])],
        {"x": [BATCH, 4]},
        ["y"],
        {"one": np.array(1.0, np.float32)},
    )


# --- MatMul shapes and Reduce ---------------------------------------------------------------------


def matmul_4d(heads: int = 2, rows: int = 3, k: int = 6, n: int = 5, weight_rank: int = 2) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        {"x": [BATCH, heads, rows, k]},
        ["y"],
        {"w": weights([1] * (weight_rank - 2) + [k, n], 17)},
    )


def matmul_3d(rows: int = 3, k: int = 6, n: int = 5) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        {"x": [BATCH, rows, k]},
        ["y"],
        {"w": weights([k, n], 18)},
    )


def gemm(m_features: int = 10, n_features: int = 13, trans_b: int = 0, bias_shape: tuple = (13,)) -> onnx.ModelProto:
    shape = [n_features, m_features] if trans_b else [m_features, n_features]
    return make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b, alpha=0.7, beta=1.3)],
        {"x": [BATCH, m_features]},
        ["y"],
        {"w": weights(shape, 19), "b": weights(list(bias_shape), 20)},
    )


def reduce_over_channels(
    reduce_op: str = "ReduceMean", keepdims: int = 1, axes: tuple = (1,), size: int = 32
) -> onnx.ModelProto:
    """A Reduce over a middle axis of a tensor with more than 2^16 elements (at batch 1)."""
    if reduce_op == "ReduceSum":  # axes became an input of ReduceSum at opset 13
        node = helper.make_node(reduce_op, ["x", "axes"], ["y"], keepdims=keepdims)
    else:
        node = helper.make_node(reduce_op, ["x"], ["y"], axes=list(axes), keepdims=keepdims)
    return make_model([node], {"x": [BATCH, 64, size, size]}, ["y"], {"axes": np.array(axes, np.int64)}, opset=17)


# --- a realistic model for precision ---------------------------------------------------------------


def small_cnn_attention(classes: int = 10) -> onnx.ModelProto:
    """Conv+BN+Relu stem, a transformer block (LayerNorm, attention, erf GELU MLP), pooled head.

    Input "images" float32 [batch, 3, 32, 32]; output "logits" [batch, classes]; opset 17.
    """
    rng = _rng(42)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)

    dim, hidden, tokens = 32, 64, 64
    init: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    source = "images"
    for index, (cin, cout) in enumerate([(3, 16), (16, dim)]):
        init |= {
            f"conv{index}_w": he([cout, cin, 3, 3], cin * 9),
            f"conv{index}_b": np.zeros(cout, np.float32),
            f"bn{index}_scale": rng.uniform(0.8, 1.2, cout).astype(np.float32),
            f"bn{index}_bias": (rng.standard_normal(cout) * 0.1).astype(np.float32),
            f"bn{index}_mean": (rng.standard_normal(cout) * 0.1).astype(np.float32),
            f"bn{index}_var": rng.uniform(0.5, 1.5, cout).astype(np.float32),
        }
        nodes += [
            helper.make_node(
                "Conv",
                [source, f"conv{index}_w", f"conv{index}_b"],
                [f"conv{index}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[2, 2],
            ),
            helper.make_node(
                "BatchNormalization",
                [f"conv{index}", f"bn{index}_scale", f"bn{index}_bias", f"bn{index}_mean", f"bn{index}_var"],
                [f"bn{index}"],
            ),
            helper.make_node("Relu", [f"bn{index}"], [f"relu{index}"]),
        ]
        source = f"relu{index}"
    init |= {
        "token_shape": np.array([0, dim, tokens], np.int64),
        "ln_scale": np.ones(dim, np.float32),
        "ln_bias": np.zeros(dim, np.float32),
        "attention_scale": np.array(1 / math.sqrt(dim), np.float32),
        "sqrt2": np.array(math.sqrt(2), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
        "head_w": he([classes, dim], dim),
        "head_b": np.zeros(classes, np.float32),
    }
    for name, (fan_in, fan_out) in {
        "q": (dim, dim),
        "k": (dim, dim),
        "v": (dim, dim),
        "o": (dim, dim),
        "fc1": (dim, hidden),
        "fc2": (hidden, dim),
    }.items():
        init[f"{name}_w"] = he([fan_in, fan_out], fan_in)
        init[f"{name}_b"] = np.zeros(fan_out, np.float32)

    def linear(name: str, source: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("MatMul", [source, f"{name}_w"], [f"{name}_mm"]),
            helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [name]),
        ]

    nodes += [
        helper.make_node("Reshape", [source, "token_shape"], ["channels_tokens"]),
        helper.make_node("Transpose", ["channels_tokens"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("LayerNormalization", ["tokens", "ln_scale", "ln_bias"], ["ln1"], axis=-1),
        *linear("q", "ln1"),
        *linear("k", "ln1"),
        *linear("v", "ln1"),
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "k_t"], ["scores_raw"]),
        helper.make_node("Mul", ["scores_raw", "attention_scale"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attention"], axis=-1),
        helper.make_node("MatMul", ["attention", "v"], ["context"]),
        *linear("o", "context"),
        helper.make_node("Add", ["tokens", "o"], ["residual1"]),
        helper.make_node("LayerNormalization", ["residual1", "ln_scale", "ln_bias"], ["ln2"], axis=-1),
        *linear("fc1", "ln2"),
        helper.make_node("Div", ["fc1", "sqrt2"], ["fc1_scaled"]),
        helper.make_node("Erf", ["fc1_scaled"], ["fc1_erf"]),
        helper.make_node("Add", ["fc1_erf", "one"], ["fc1_cdf"]),
        helper.make_node("Mul", ["fc1", "fc1_cdf"], ["fc1_x_cdf"]),
        helper.make_node("Mul", ["fc1_x_cdf", "half"], ["gelu"]),
        *linear("fc2", "gelu"),
        helper.make_node("Add", ["residual1", "fc2"], ["residual2"]),
        helper.make_node("ReduceMean", ["residual2"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "head_w", "head_b"], ["logits"], transB=1),
    ]  # fmt: skip
    return make_model(nodes, {"images": [BATCH, 3, 32, 32]}, ["logits"], init, opset=17)


def decomposed_hardswish(order: str = "mul_first", opset: int = 13) -> onnx.ModelProto:
    """Conv -> Add 3 -> Clip(0, 6) -> Mul x -> Div 6 (Paddle's export; "div_first": Div then Mul)."""
    if order == "mul_first":
        tail = [
            helper.make_node("Mul", ["x", "clipped"], ["product"]),
            helper.make_node("Div", ["product", "six"], ["y"]),
        ]
    else:
        tail = [
            helper.make_node("Div", ["clipped", "six"], ["gate"]),
            helper.make_node("Mul", ["gate", "x"], ["y"]),
        ]
    return make_model(
        [
            helper.make_node("Conv", ["input", "w"], ["x"]),
            helper.make_node("Add", ["x", "three"], ["shifted"]),
            helper.make_node("Clip", ["shifted", "zero", "six"], ["clipped"]),
            *tail,
        ],
        {"input": [BATCH, 3, 6, 6]},
        ["y"],
        {
            "w": weights([4, 3, 3, 3], 21) * 4,  # wide enough to reach both ends of the clip
            "three": np.array(3.0, np.float32),
            "zero": np.array(0.0, np.float32),
            "six": np.array(6.0, np.float32),
        },
        opset=opset,
    )


def clip_without_hardswish() -> onnx.ModelProto:
    """Add 3 -> Clip(0, 6) -> Div 6, a HardSigmoid's shape but not multiplied by x: left alone."""
    return make_model(
        [
            helper.make_node("Add", ["x", "three"], ["shifted"]),
            helper.make_node("Clip", ["shifted", "zero", "six"], ["clipped"]),
            helper.make_node("Div", ["clipped", "six"], ["y"]),
        ],
        {"x": [BATCH, 8]},
        ["y"],
        {"three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)},
    )
