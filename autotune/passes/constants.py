"""fold_constants: evaluate what does not depend on the inputs; drop what feeds no output."""

from __future__ import annotations

import onnx

from autotune.passes._graph import copy_model, export_graph, import_graph

# Folding an Expand/Tile/ConstantOfShape can turn a few bytes into a huge initializer.
MAX_FOLDED_TENSOR_BYTES = 64 << 20


def fold_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace every subgraph whose inputs are all constants by its value; remove dead nodes.

    Exporters leave shape arithmetic (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape` on
    static dims), weight preprocessing (`Transpose`/`Cast` of initializers) and unused branches
    in the graph. TensorRT folds some of it, but every node left is parsed, kept in the network
    and can block a fusion (a Reshape whose shape is a tensor is not a constant to the Conv/
    MatMul fusers). ONNX Runtime evaluates the constant subgraphs (onnx-graphsurgeon's
    `fold_constants`); outputs larger than `MAX_FOLDED_TENSOR_BYTES` stay computed.

    Returns the new model and the number of nodes removed.
    """
    graph = import_graph(model, infer_shapes=True)
    nodes_before = len(graph.nodes)
    graph.fold_constants(size_threshold=MAX_FOLDED_TENSOR_BYTES).cleanup()
    removed = nodes_before - len(graph.nodes)
    if removed <= 0:
        return copy_model(model), 0
    return export_graph(graph, model), removed
