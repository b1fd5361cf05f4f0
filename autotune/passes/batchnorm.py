"""fold_batchnorm_into_conv: Conv/ConvTranspose/Gemm -> BatchNormalization into one node."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    constant_value,
    make_constant,
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
