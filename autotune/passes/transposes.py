"""remove_redundant_transposes: Transpose pairs that cancel, around layout-agnostic ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    constant_value,
    make_constant,
    other_input,
    rank_of,
    replace_tensor,
    run_graph_rewrite,
    sole_consumer,
)

# Ops whose output at every position depends only on the input at the same position, so
# that they commute with any Transpose.
ELEMENTWISE_UNARY_OPS = frozenset(
    {
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu",
        "Clip", "Cos", "Cosh", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid",
        "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not",
        "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus",
        "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
    }
)  # fmt: skip
# Binary ops that commute with a Transpose when the other operand is a constant (which is
# then transposed once, at rewrite time).
ELEMENTWISE_BINARY_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu", "Equal", "Greater", "Less"}
)


def remove_redundant_transposes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Remove Transposes that cancel out, directly or across layout-agnostic ops.

    Rewrites `Transpose(p) -> [element-wise ops] -> Transpose(inverse of p)` (the FaceNet
    `Transpose -> Relu -> Transpose` case) to just the element-wise ops, and merges chains of
    Transposes into one, dropping it when the chain composes to the identity. Each Transpose is
    a full memory copy in TensorRT (a shuffle layer that also breaks Conv+activation fusion),
    so removing a pair saves two copies and restores fusions. Element-wise binary ops qualify
    when their other operand is a constant, which is transposed once here instead.

    Returns the new model and the number of Transposes removed.
    """
    return run_graph_rewrite(model, _remove_redundant_transposes)


def _perm(node: gs.Node) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(axis) for axis in node.attrs["perm"]]
    rank = rank_of(node.inputs[0])
    return None if rank is None else list(reversed(range(rank)))


def _remove_redundant_transposes(graph: gs.Graph) -> int:
    removed = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op != "Transpose" or not node.outputs:
                continue
            step = _merge_transpose_chain(graph, node) or _cancel_across_elementwise(graph, node)
            if step:
                removed += step
                changed = True
                break
    return removed


def _compose(first: list[int], second: list[int]) -> list[int]:
    """The perm of Transpose(second) applied after Transpose(first)."""
    return [first[axis] for axis in second]


def _merge_transpose_chain(graph: gs.Graph, first: gs.Node) -> int:
    """Transpose(p) -> Transpose(q) becomes Transpose(p∘q), or nothing if that is the identity."""
    second = sole_consumer(first.outputs[0], graph, "Transpose")
    first_perm = _perm(first)
    second_perm = None if second is None else _perm(second)
    if second is None or first_perm is None or second_perm is None:
        return 0
    composed = _compose(first_perm, second_perm)
    source = first.inputs[0]
    first.outputs.clear()
    if composed == list(range(len(composed))):
        second.inputs.clear()
        replace_tensor(graph, second.outputs[0], source)
        return 2
    second.inputs[0] = source
    second.attrs["perm"] = composed
    return 1


def _cancel_across_elementwise(graph: gs.Graph, first: gs.Node) -> int:
    """Transpose(p) -> element-wise chain -> Transpose(p⁻¹) becomes the element-wise chain."""
    perm = _perm(first)
    if perm is None:
        return 0
    chain: list[gs.Node] = []
    tensor = first.outputs[0]
    while True:
        node = sole_consumer(tensor, graph)
        if node is None or len(node.outputs) != 1:
            return 0
        if node.op == "Transpose":
            last = node
            break
        if not _is_layout_agnostic(node, tensor, len(perm)):
            return 0
        chain.append(node)
        tensor = node.outputs[0]
    last_perm = _perm(last)
    if not chain or last_perm is None or _compose(perm, last_perm) != list(range(len(perm))):
        return 0
    inverse = list(np.argsort(perm))
    for node in chain:
        for index, operand in enumerate(node.inputs):
            value = constant_value(operand)
            if value is not None and value.size > 1:
                padded = value.reshape((1,) * (len(perm) - value.ndim) + value.shape)
                node.inputs[index] = make_constant(graph, f"{operand.name}_transposed", np.transpose(padded, inverse))
    source, transposed = first.inputs[0], first.outputs[0]
    first.outputs.clear()
    for index, operand in enumerate(chain[0].inputs):
        if operand is transposed:
            chain[0].inputs[index] = source
    result = last.outputs[0]
    last.inputs.clear()
    replace_tensor(graph, result, chain[-1].outputs[0])
    for node in chain:  # shapes recorded in the transposed layout are stale now
        for output in node.outputs:
            if output is not result:
                output.shape = None
    return 2


def _is_layout_agnostic(node: gs.Node, data: gs.Tensor, rank: int) -> bool:
    if node.op in ELEMENTWISE_UNARY_OPS:
        extra_values = [constant_value(tensor) for tensor in node.inputs[1:] if tensor.name]
        constants = [value for value in extra_values if value is not None]
        return len(constants) == len(extra_values) and (
            node.op != "Clip" or all(value.size == 1 for value in constants)
        )
    if node.op in ELEMENTWISE_BINARY_OPS:
        operand = other_input(node, data)
        value = constant_value(operand)
        if value is None or value.ndim > rank:
            return False
        return node.op != "PRelu" or value.size == 1
    return False
