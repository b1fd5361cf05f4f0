"""fuse_layernorm and fuse_groupnorm: decomposed normalizations back to native ONNX ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    axes_of,
    constant_value,
    converted_to_opset,
    import_graph,
    make_constant,
    make_variable,
    other_input,
    producer,
    raise_opset_if_safe,
    rank_of,
    replace_tensor,
    run_graph_rewrite,
    sole_consumer,
    static_dim,
)

LAYERNORM_OPSET = 17
GROUPNORM_OPSET = 21  # opset 18's GroupNormalization took per-group scale; 21 takes per-channel


def fuse_layernorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite decomposed LayerNorm into one LayerNormalization node (opset 17+).

    Pattern: `m = ReduceMean(x); d = x - m; v = ReduceMean(Pow(d, 2)); y = d / Sqrt(v + eps)`,
    optionally followed by `* gamma` and `+ beta`, reducing over the trailing axes. Older
    exporters emit these nine nodes; TensorRT runs them as nine kernels (and, in FP16, the
    `Pow`/`ReduceMean` pair overflows), while LayerNormalization maps to its fused
    normalization layer, which accumulates in FP32. The model's opset is raised to 17 only when
    no op in it changes meaning in between; otherwise the model is left as it is.

    Below opset 17, where the version number alone cannot be raised (opset 13 moved Squeeze's
    and Split's axes to inputs, say), the model is first converted by ONNX's version converter
    (an opset-12 recognizer's five LayerNorms were found by neither way before: issue 30).

    Returns the new model and the number of LayerNorms fused.
    """
    fused, count = run_graph_rewrite(model, _fuse_layernorms, infer_shapes=True)
    if count or not layernorm_patterns(model):
        return fused, count
    converted, _ = converted_to_opset(model, LAYERNORM_OPSET)
    if converted is None:
        return fused, 0  # present, not rewritable here: `layernorm_blocked` says why
    return run_graph_rewrite(converted, _fuse_layernorms, infer_shapes=True)


def layernorm_patterns(model: onnx.ModelProto) -> int:
    """Decomposed LayerNorms in `model`, rewritable or not (the opset aside)."""
    graph = import_graph(model, infer_shapes=True)
    return sum(
        _fuse_layernorm_at(graph, node, count_only=True) for node in list(graph.nodes) if node.op == "ReduceMean"
    )


def layernorm_blocked(model: onnx.ModelProto) -> str | None:
    """Why `fuse_layernorm` rewrites none of the decomposed LayerNorms present in `model`, or
    None when none is present or it rewrites them."""
    found = layernorm_patterns(model)
    if not found or fuse_layernorm(model)[1]:
        return None
    _, why = converted_to_opset(model, LAYERNORM_OPSET)
    return f"{found} decomposed LayerNorms present but not rewritable: LayerNormalization needs opset 17 and {why}"


def fuse_groupnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite `Reshape -> InstanceNormalization -> Reshape -> Mul -> Add` into GroupNormalization.

    PyTorch exports GroupNorm this way: reshape [N, C, ...] to [N, G, -1], instance-normalize
    the G "channels", reshape back, apply per-channel gamma/beta. TensorRT runs that as two
    shuffles, a normalization and two element-wise kernels; GroupNormalization (opset 21, per-
    channel scale/bias) is one fused normalization layer. The model's opset is raised to 21 only
    when no op in it changes meaning in between; otherwise the model is left as it is.

    Returns the new model and the number of GroupNorms fused.
    """
    return run_graph_rewrite(model, _fuse_groupnorms, infer_shapes=True)


def _scalar(tensor: gs.Tensor | None) -> float | None:
    value = constant_value(tensor)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _normalized_axis(axes: list[int] | None, rank: int | None) -> int | None:
    """The first axis when `axes` are the trailing axes (as negative or with a known rank)."""
    if not axes:
        return None
    if all(axis < 0 for axis in axes):
        normalized = sorted(axes)
        return normalized[0] if normalized == list(range(-len(axes), 0)) else None
    if rank is None:
        return None
    normalized = sorted(axis % rank for axis in axes)
    return normalized[0] if normalized == list(range(rank - len(axes), rank)) else None


def _fuse_layernorms(graph: gs.Graph) -> int:
    fused = 0
    for mean_node in list(graph.nodes):
        if mean_node.op == "ReduceMean" and mean_node.outputs:
            fused += _fuse_layernorm_at(graph, mean_node)
    return fused


def _fuse_layernorm_at(graph: gs.Graph, mean_node: gs.Node, *, count_only: bool = False) -> int:
    x = mean_node.inputs[0]
    rank = rank_of(x)
    axis = _normalized_axis(axes_of(mean_node), rank)
    sub = sole_consumer(mean_node.outputs[0], graph, "Sub")
    if axis is None or sub is None or sub.inputs[0] is not x or not mean_node.attrs.get("keepdims", 1):
        return 0
    centered = sub.outputs[0]
    readers = {node.op: node for node in centered.outputs}
    square, divide = readers.get("Pow"), readers.get("Div")
    if len(centered.outputs) != 2 or square is None or divide is None or _scalar(square.inputs[1]) != 2.0:
        return 0
    variance_node = sole_consumer(square.outputs[0], graph, "ReduceMean")
    if variance_node is None or _normalized_axis(axes_of(variance_node), rank) != axis:
        return 0
    add_eps = sole_consumer(variance_node.outputs[0], graph, "Add")
    epsilon = None if add_eps is None else _scalar(other_input(add_eps, variance_node.outputs[0]))
    sqrt = None if add_eps is None else sole_consumer(add_eps.outputs[0], graph, "Sqrt")
    if epsilon is None or sqrt is None or divide.inputs[0] is not centered or divide.inputs[1] is not sqrt.outputs[0]:
        return 0
    if count_only:
        return 1
    if not raise_opset_if_safe(graph, LAYERNORM_OPSET):
        return 0
    result = divide.outputs[0]
    # A non-negative axis comes only with a known rank (`_normalized_axis`).
    normalized_rank = -axis if axis < 0 or rank is None else rank - axis
    gamma = beta = None
    multiply = sole_consumer(result, graph, "Mul")
    gamma_value = None if multiply is None else constant_value(other_input(multiply, result))
    if multiply is not None and gamma_value is not None and gamma_value.ndim <= normalized_rank:
        gamma, result = gamma_value, multiply.outputs[0]
        add = sole_consumer(result, graph, "Add")
        beta_value = None if add is None else constant_value(other_input(add, result))
        if add is not None and beta_value is not None and beta_value.ndim <= normalized_rank:
            beta, result = beta_value, add.outputs[0]
    normalized_shape = _static_trailing_shape(x, normalized_rank)
    dtype = x.dtype if x.dtype is not None else np.float32
    if normalized_shape is None and (
        (gamma is not None and gamma.ndim != normalized_rank) or (beta is not None and beta.ndim != normalized_rank)
    ):
        return 0
    shape = normalized_shape or (gamma.shape if gamma is not None else None)
    if shape is None:
        return 0
    try:
        gamma_full = np.broadcast_to(np.ones(1) if gamma is None else gamma, shape)
        beta_full = np.broadcast_to(np.zeros(1) if beta is None else beta, shape)
    except ValueError:
        return 0
    output = make_variable(graph, f"{mean_node.name or 'layernorm'}_fused", dtype=dtype)
    graph.nodes.append(
        gs.Node(
            "LayerNormalization",
            name=f"{mean_node.name or 'layernorm'}_LayerNormalization",
            attrs={"axis": axis, "epsilon": epsilon},
            inputs=[
                x,
                make_constant(graph, "layernorm_scale", gamma_full.astype(dtype)),
                make_constant(graph, "layernorm_bias", beta_full.astype(dtype)),
            ],
            outputs=[output],
        )
    )
    replace_tensor(graph, result, output)
    mean_node.inputs.clear()
    sub.inputs.clear()
    return 1


def _static_trailing_shape(tensor: gs.Tensor, count: int) -> tuple[int, ...] | None:
    dims = [static_dim(tensor, axis) for axis in range(-count, 0)]
    known = [dim for dim in dims if dim is not None]
    return tuple(known) if len(known) == count else None


def _fuse_groupnorms(graph: gs.Graph) -> int:
    fused = 0
    for node in list(graph.nodes):
        if node.op == "InstanceNormalization" and node.outputs:
            fused += _fuse_groupnorm_at(graph, node)
    return fused


def _fuse_groupnorm_at(graph: gs.Graph, instance_norm: gs.Node) -> int:
    to_groups = producer(instance_norm.inputs[0])
    if to_groups is None or to_groups.op != "Reshape" or to_groups.attrs.get("allowzero", 0):
        return 0
    x = to_groups.inputs[0]
    rank = rank_of(x)
    group_shape = constant_value(to_groups.inputs[1])
    instance_scale = constant_value(instance_norm.inputs[1])
    instance_bias = constant_value(instance_norm.inputs[2])
    if rank is None or rank < 3 or group_shape is None or instance_scale is None or instance_bias is None:
        return 0
    groups = instance_scale.size
    if group_shape.size != 3 or int(group_shape[1]) != groups or int(group_shape[0]) not in (0, static_dim(x, 0)):
        return 0
    from_groups = sole_consumer(instance_norm.outputs[0], graph, "Reshape")
    if from_groups is None or not _restores_shape_of(from_groups.inputs[1], x, rank):
        return 0
    multiply = sole_consumer(from_groups.outputs[0], graph, "Mul")
    gamma = None if multiply is None else _per_channel(other_input(multiply, from_groups.outputs[0]), rank)
    if multiply is None or gamma is None:
        return 0
    add = sole_consumer(multiply.outputs[0], graph, "Add")
    beta = None if add is None else _per_channel(other_input(add, multiply.outputs[0]), rank)
    channels = static_dim(x, 1)
    if add is None or beta is None or gamma.size != beta.size or (channels not in (None, gamma.size)):
        return 0
    channels = gamma.size
    if channels % groups or not raise_opset_if_safe(graph, GROUPNORM_OPSET):
        return 0
    group_of_channel = np.arange(channels) // (channels // groups)
    scale = gamma * instance_scale.reshape(-1)[group_of_channel]
    bias = gamma * instance_bias.reshape(-1)[group_of_channel] + beta
    dtype = x.dtype if x.dtype is not None else np.float32
    output = make_variable(graph, f"{instance_norm.name or 'groupnorm'}_fused", dtype=dtype)
    graph.nodes.append(
        gs.Node(
            "GroupNormalization",
            name=f"{instance_norm.name or 'groupnorm'}_GroupNormalization",
            attrs={"num_groups": groups, "epsilon": float(instance_norm.attrs.get("epsilon", 1e-5))},
            inputs=[
                x,
                make_constant(graph, "groupnorm_scale", scale.astype(dtype)),
                make_constant(graph, "groupnorm_bias", bias.astype(dtype)),
            ],
            outputs=[output],
        )
    )
    replace_tensor(graph, add.outputs[0], output)
    to_groups.inputs.clear()
    return 1


def _restores_shape_of(shape_tensor: gs.Tensor, x: gs.Tensor, rank: int) -> bool:
    """Whether Reshape(·, shape_tensor) gives back x's shape: Shape(x), or matching constants."""
    shape_producer = producer(shape_tensor)
    if shape_producer is not None and shape_producer.op == "Shape":
        return (
            shape_producer.inputs[0] is x
            and not shape_producer.attrs.get("start", 0)
            and "end" not in shape_producer.attrs
        )
    shape = constant_value(shape_tensor)
    if shape is None or shape.size != rank:
        return False
    dims = [static_dim(x, axis) for axis in range(rank)]
    if shape[0] != 0 and shape[0] != dims[0]:
        return False
    known = [dims[axis] is not None and int(shape[axis]) == dims[axis] for axis in range(1, rank)]
    inferred = [int(shape[axis]) == -1 for axis in range(1, rank)]
    return all(known) or (sum(inferred) == 1 and all(k or i for k, i in zip(known, inferred, strict=True)))


def _per_channel(tensor: gs.Tensor | None, rank: int) -> np.ndarray | None:
    """A constant shaped [C, 1, ..., 1] (or [1, C, 1, ...]) that broadcasts along axis 1."""
    value = constant_value(tensor)
    if value is None or value.ndim > rank or value.ndim < rank - 1:
        return None
    if value.ndim == rank:
        if value.shape[0] != 1:
            return None
        value = value[0]
    if any(dim != 1 for dim in value.shape[1:]):
        return None
    return value.reshape(-1).astype(np.float64)
