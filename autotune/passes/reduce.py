"""move_reduce_axis_last: reductions over inner axes become reductions over the last axes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    axes_of,
    make_constant,
    make_variable,
    rank_of,
    run_graph_rewrite,
)

REDUCE_OPS = frozenset(
    {
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
    }
)  # fmt: skip
# Below this many elements (counting dynamic dims as 1) the extra Transpose costs more than
# the strided reduction it saves.
MIN_ELEMENTS_TO_MOVE = 1 << 16


def move_reduce_axis_last(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Transpose the reduced axes of a large Reduce to the end, then reduce over the last axes.

    TensorRT's reduce kernels are fastest over the innermost, contiguous dimension; reducing
    over a middle axis (a channel mean over NCHW, a softmax-like sum over heads) reads with a
    stride. When the input has at least `MIN_ELEMENTS_TO_MOVE` elements, one Transpose that
    makes the reduced axes contiguous is cheaper. With `keepdims=1` a Transpose of the (small)
    result restores the original axis order. A separate knob because it trades one copy for
    faster reads, which only pays on large tensors.

    Returns the new model and the number of Reduce nodes rewritten.
    """
    return run_graph_rewrite(model, _move_reduce_axes, infer_shapes=True)


def _move_reduce_axes(graph: gs.Graph) -> int:
    moved = 0
    for node in list(graph.nodes):
        if node.op in REDUCE_OPS and node.outputs:
            moved += _move_reduce_axes_at(graph, node)
    return moved


def _static_elements(tensor: gs.Tensor) -> int:
    return int(np.prod([dim if isinstance(dim, int) and dim > 0 else 1 for dim in tensor.shape]))


def _move_reduce_axes_at(graph: gs.Graph, node: gs.Node) -> int:
    data = node.inputs[0]
    rank, axes = rank_of(data), axes_of(node)
    if rank is None or not axes or _static_elements(data) < MIN_ELEMENTS_TO_MOVE:
        return 0
    reduced = sorted({axis % rank for axis in axes})
    if reduced == list(range(rank - len(reduced), rank)):
        return 0
    kept = [axis for axis in range(rank) if axis not in reduced]
    perm = kept + reduced
    transposed = make_variable(graph, f"{data.name}_reduced_axes_last", dtype=data.dtype)
    graph.nodes.append(gs.Node("Transpose", attrs={"perm": perm}, inputs=[data], outputs=[transposed]))
    node.inputs[0] = transposed
    last_axes = list(range(-len(reduced), 0))
    if "axes" in node.attrs:
        node.attrs["axes"] = last_axes
    else:
        node.inputs[1] = make_constant(graph, f"{node.name or node.op}_axes", np.array(last_axes, np.int64))
    if node.attrs.get("keepdims", 1):
        result = node.outputs[0]
        reduced_result = make_variable(graph, f"{result.name}_axes_last", dtype=result.dtype)
        node.outputs[0] = reduced_result
        graph.nodes.append(
            gs.Node(
                "Transpose",
                attrs={"perm": [int(axis) for axis in np.argsort(perm)]},
                inputs=[reduced_result],
                outputs=[result],
            )
        )
    return 1
