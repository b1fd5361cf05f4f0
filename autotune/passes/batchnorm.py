"""fold_batchnorm_into_conv: Conv/ConvTranspose/Gemm -> BatchNormalization into one node;
fold_affine_into_conv: the same for a constant Mul/Add/Sub after the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    constant_value,
    make_constant,
    other_input,
    replace_tensor,
    run_graph_rewrite,
    sole_consumer,
)


def fold_batchnorm_into_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Fold an inference-mode BatchNormalization into the Conv, ConvTranspose or Gemm before it.

    `y = scale * (W*x + b - mean) / sqrt(var + eps) + beta` is again a Conv with weights
    `W * s` and bias `(b - mean) * s + beta`, `s = scale / sqrt(var + eps)` per output channel.
    TensorRT fuses Conv+BN itself only in some builds and precisions; folding it in the graph
    always leaves the Conv+bias+ReLU pattern its kernels fuse, and removes a full pass over the
    activation. Applies only when the weights, bias and BN statistics are constants and the
    Conv output feeds nothing but the BatchNormalization.

    Returns the new model and the number of BatchNormalization nodes folded.
    """
    return run_graph_rewrite(model, _fold_batchnorms)


def _fold_batchnorms(graph: gs.Graph) -> int:
    folded = 0
    for node in list(graph.nodes):
        if node.op not in ("Conv", "ConvTranspose", "Gemm") or len(node.outputs) != 1:
            continue
        batchnorm = sole_consumer(node.outputs[0], graph, "BatchNormalization")
        if batchnorm is None or len(batchnorm.outputs) != 1 or batchnorm.attrs.get("training_mode"):
            continue
        values = [constant_value(tensor) for tensor in batchnorm.inputs[1:5]]
        statistics = [value for value in values if value is not None]
        if len(statistics) != 4:
            continue
        gamma, beta, mean, var = (value.astype(np.float64).reshape(-1) for value in statistics)
        channel_scale = gamma / np.sqrt(var + float(batchnorm.attrs.get("epsilon", 1e-5)))
        channel_shift = beta - mean * channel_scale
        if _fold_into(graph, node, channel_scale, channel_shift):
            batchnorm.inputs.clear()
            replace_tensor(graph, batchnorm.outputs[0], node.outputs[0])
            folded += 1
    return folded


def fold_affine_into_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Fold a Mul, Add or Sub by a constant (a scalar or one value per output channel) into the
    Conv, ConvTranspose or Gemm before it, repeatedly: `s * (W*x + b) + t` is a Conv with weights
    `W * s` and bias `b * s + t`, exact as BatchNormalization folding is.

    PaddlePaddle's PP-LCNetV3 (PP-OCRv4's recognizer) follows 28 of its 38 convolutions with a
    "learnable affine block", a scalar Mul and a scalar Add. Unfolded, static INT8 rounds the
    activation to 8 bits after the Conv, after the Mul and after the Add (each its own scale):
    three roundings where one is needed. On the recognizer, folding 56 of them took full INT8's
    character error rate from 7.55% to 2.58% (bench/INT8_CPU.md). Applies only when the node's
    output feeds nothing but the Mul/Add/Sub (a Sub only as `output - constant`) and the
    constant broadcasts over the output channels alone.

    Returns the new model and the number of Mul/Add/Sub nodes folded.
    """
    return run_graph_rewrite(model, _fold_affines)


def _fold_affines(graph: gs.Graph) -> int:
    folded = 0
    for node in list(graph.nodes):
        if node.op not in ("Conv", "ConvTranspose", "Gemm") or len(node.outputs) != 1 or len(node.inputs) < 2:
            continue
        while (step := _affine_after(graph, node)) is not None:
            consumer, scale, shift = step
            if not _fold_into(graph, node, scale, shift):
                break
            result = consumer.outputs[0]
            consumer.inputs.clear()
            replace_tensor(graph, result, node.outputs[0])
            folded += 1
    return folded


def _affine_after(graph: gs.Graph, node: gs.Node) -> tuple[gs.Node, np.ndarray, np.ndarray] | None:
    """(the Mul/Add/Sub reading `node`'s output, its per-channel scale and shift), or None."""
    weights = constant_value(node.inputs[1])
    output = node.outputs[0]
    consumer = sole_consumer(output, graph)
    if weights is None or consumer is None or consumer.op not in ("Mul", "Add", "Sub") or len(consumer.outputs) != 1:
        return None
    constant = constant_value(other_input(consumer, output))
    if constant is None or (consumer.op == "Sub" and consumer.inputs[0] is not output):
        return None
    if node.op == "Conv":
        channels, rank, axis = weights.shape[0], weights.ndim, 1
    elif node.op == "ConvTranspose":
        channels, rank, axis = weights.shape[1] * int(node.attrs.get("group", 1)), weights.ndim, 1
    else:
        channels, rank, axis = (weights.shape[0] if node.attrs.get("transB", 0) else weights.shape[-1]), 2, 1
    values = _per_channel(constant, channels, rank, axis)
    if values is None:
        return None
    if consumer.op == "Mul":
        return consumer, values, np.zeros(channels)
    return consumer, np.ones(channels), values if consumer.op == "Add" else -values


def _per_channel(constant: np.ndarray, channels: int, rank: int, axis: int) -> np.ndarray | None:
    """`constant` as one float64 per output channel, when broadcasting it onto a rank-`rank`
    output varies it along `axis` at most (and adds no dimension); else None."""
    if not np.issubdtype(constant.dtype, np.floating) or constant.ndim > rank:
        return None
    if constant.size == 1:
        return np.full(channels, float(constant.reshape(-1)[0]))
    shape = (1,) * (rank - constant.ndim) + constant.shape
    if shape[axis] != channels or any(size != 1 for index, size in enumerate(shape) if index != axis):
        return None
    return constant.astype(np.float64).reshape(-1)


def _fold_into(graph: gs.Graph, node: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    weights = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if weights is None or not np.issubdtype(weights.dtype, np.floating):
        return False
    bias_tensor = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    bias = constant_value(bias_tensor)
    if bias_tensor is not None and bias is None:
        return False
    channels = scale.size
    if node.op == "Conv":
        if weights.shape[0] != channels:
            return False
        new_weights = weights * scale.reshape((-1,) + (1,) * (weights.ndim - 1))
        old_bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
    elif node.op == "ConvTranspose":
        group = int(node.attrs.get("group", 1))
        per_group = weights.shape[1]
        if per_group * group != channels or weights.shape[0] % group:
            return False
        grouped = weights.reshape((group, weights.shape[0] // group) + weights.shape[1:])
        grouped_scale = scale.reshape((group, 1, per_group) + (1,) * (weights.ndim - 2))
        new_weights = (grouped * grouped_scale).reshape(weights.shape)
        old_bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
    else:  # Gemm: Y = alpha * A' @ B' + beta * C, channels are the columns of Y
        if weights.ndim != 2:
            return False
        transposed = bool(node.attrs.get("transB", 0))
        if (weights.shape[0] if transposed else weights.shape[1]) != channels:
            return False
        new_weights = weights * (scale[:, None] if transposed else scale[None, :])
        beta_attr = float(node.attrs.get("beta", 1.0))
        old_bias = np.zeros(channels) if bias is None else beta_attr * bias.astype(np.float64)
        if old_bias.ndim > 0 and old_bias.shape[-1] not in (1, channels):
            return False
        node.attrs["beta"] = 1.0
    new_bias = old_bias * scale + shift
    node.inputs[1] = make_constant(graph, f"{node.inputs[1].name}_bn", new_weights.astype(weights.dtype))
    bias_constant = make_constant(graph, f"{node.name or node.op}_bias_bn", new_bias.astype(weights.dtype))
    if len(node.inputs) > 2:
        node.inputs[2] = bias_constant
    else:
        node.inputs.append(bias_constant)
    return True
