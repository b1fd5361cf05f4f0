"""fuse_gelu: the erf form of GELU back to the native Gelu op (opset 20)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    constant_value,
    make_variable,
    other_input,
    producer,
    raise_opset_if_safe,
    replace_tensor,
    run_graph_rewrite,
    sole_consumer,
)

GELU_OPSET = 20


def fuse_gelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite `0.5 * x * (1 + Erf(x / sqrt(2)))` into one Gelu node (opset 20).

    Exporters before opset 20 emit GELU as five element-wise nodes (`Div` or `Mul` by
    1/sqrt(2), `Erf`, `Add 1`, and two `Mul`s, in any association). TensorRT fuses the Gelu op
    into the preceding MatMul's epilogue; the five-node form costs four extra kernels over the
    MLP's widest activation. The model's opset is raised to 20 only when no op in it changes
    meaning in between; otherwise the model is left as it is.

    Returns the new model and the number of GELUs fused.
    """
    return run_graph_rewrite(model, _fuse_gelus)


def _is_scalar(tensor: gs.Tensor | None, expected: float) -> bool:
    value = constant_value(tensor)
    return value is not None and value.size == 1 and math.isclose(float(value.reshape(-1)[0]), expected, rel_tol=1e-3)


def _fuse_gelus(graph: gs.Graph) -> int:
    fused = 0
    for erf in list(graph.nodes):
        if erf.op == "Erf" and erf.outputs and erf.inputs:
            fused += _fuse_gelu_at(graph, erf)
    return fused


def _fuse_gelu_at(graph: gs.Graph, erf: gs.Node) -> int:
    scale = producer(erf.inputs[0])
    if scale is None or len(scale.outputs[0].outputs) != 1:
        return 0
    root_half = 1 / math.sqrt(2.0)
    if scale.op == "Div" and _is_scalar(scale.inputs[1], math.sqrt(2.0)):
        x = scale.inputs[0]
    elif scale.op == "Mul" and _is_scalar(scale.inputs[1], root_half):
        x = scale.inputs[0]
    elif scale.op == "Mul" and _is_scalar(scale.inputs[0], root_half):
        x = scale.inputs[1]
    else:
        return 0
    add_one = sole_consumer(erf.outputs[0], graph, "Add")
    if add_one is None or not _is_scalar(other_input(add_one, erf.outputs[0]), 1.0):
        return 0
    first = sole_consumer(add_one.outputs[0], graph, "Mul")
    if first is None:
        return 0
    partner = other_input(first, add_one.outputs[0])
    partner_node = producer(partner) if partner is not None else None
    if partner is x or _is_scalar(partner, 0.5):
        second = sole_consumer(first.outputs[0], graph, "Mul")
        wanted = 0.5 if partner is x else None
        if second is None:
            return 0
        last_operand = other_input(second, first.outputs[0])
        if not (_is_scalar(last_operand, 0.5) if wanted else last_operand is x):
            return 0
        result = second.outputs[0]
    elif (
        partner is not None
        and partner_node is not None
        and partner_node.op == "Mul"
        and len(partner.outputs) == 1
        and (
            (partner_node.inputs[0] is x and _is_scalar(partner_node.inputs[1], 0.5))
            or (partner_node.inputs[1] is x and _is_scalar(partner_node.inputs[0], 0.5))
        )
    ):
        result = first.outputs[0]
    else:
        return 0
    if not raise_opset_if_safe(graph, GELU_OPSET):
        return 0
    output = make_variable(graph, f"{erf.name or 'gelu'}_fused", dtype=x.dtype or np.float32)
    graph.nodes.append(gs.Node("Gelu", name=f"{erf.name or 'erf'}_Gelu", inputs=[x], outputs=[output]))
    replace_tensor(graph, result, output)
    scale.inputs.clear()
    return 1
