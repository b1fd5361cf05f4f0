"""Helpers shared by the passes: graphsurgeon import/export, constants, rewiring, opsets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

PassFn = Callable[..., tuple[onnx.ModelProto, int]]
GraphRewrite = Callable[[gs.Graph], int]


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy, so that no pass ever mutates its caller's model."""
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def import_graph(model: onnx.ModelProto, *, infer_shapes: bool = False) -> gs.Graph:
    """Import a copy of `model` into graphsurgeon, with inferred shapes when asked."""
    if infer_shapes:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - a model shape inference rejects is still rewritable
            pass
    return gs.import_onnx(model)


def export_graph(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    """Export `graph` after cleanup/toposort, keeping the original model's metadata."""
    graph.cleanup().toposort()
    exported = gs.export_onnx(graph)
    exported.producer_name = original.producer_name
    exported.producer_version = original.producer_version
    exported.domain = original.domain
    exported.model_version = original.model_version
    exported.doc_string = original.doc_string
    del exported.metadata_props[:]
    exported.metadata_props.extend(original.metadata_props)
    exported.ir_version = max(original.ir_version, onnx.helper.find_min_ir_version_for(list(exported.opset_import)))
    return exported


def run_graph_rewrite(
    model: onnx.ModelProto, rewrite: GraphRewrite, *, infer_shapes: bool = False
) -> tuple[onnx.ModelProto, int]:
    """Apply `rewrite` (which returns its rewrite count) and export, or return a copy if 0."""
    graph = import_graph(model, infer_shapes=infer_shapes)
    rewrites = rewrite(graph)
    if rewrites == 0:
        return copy_model(model), 0
    return export_graph(graph, model), rewrites


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of `tensor` if it is an initializer or a Constant node's output, else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes `tensor`, or None for inputs and initializers."""
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def sole_consumer(tensor: gs.Tensor, graph: gs.Graph, op: str | None = None) -> gs.Node | None:
    """The only node reading `tensor` (of type `op` if given); None if shared or a graph output."""
    if len(tensor.outputs) != 1 or is_graph_output(tensor, graph):
        return None
    node = tensor.outputs[0]
    if op is not None and node.op != op:
        return None
    return node


def is_graph_output(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    return any(output is tensor for output in graph.outputs)


def is_graph_input(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    return any(graph_input is tensor for graph_input in graph.inputs)


def other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """For a two-input node, the input that is not `tensor`."""
    if len(node.inputs) != 2:
        return None
    first, second = node.inputs
    if first is tensor:
        return second
    if second is tensor:
        return first
    return None


def replace_tensor(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every reader of `old` read `new`; a graph output keeps its name.

    When `old` is a graph output, the node that computes `new` is made to write `old` instead
    (so the model's output names never change); if `new` has no such node, an Identity does.
    """
    if not is_graph_output(old, graph):
        for consumer in list(old.outputs):
            for index, tensor in enumerate(consumer.inputs):
                if tensor is old:
                    consumer.inputs[index] = new
        return
    old.inputs.clear()
    new_producer = producer(new)
    if (
        new_producer is None
        or isinstance(new, gs.Constant)
        or is_graph_input(new, graph)
        or is_graph_output(new, graph)
    ):
        graph.nodes.append(gs.Node("Identity", inputs=[new], outputs=[old]))
        return
    for consumer in list(new.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is new:
                consumer.inputs[index] = old
    for index, tensor in enumerate(new_producer.outputs):
        if tensor is new:
            new_producer.outputs[index] = old


def make_constant(graph: gs.Graph, stem: str, values: np.ndarray) -> gs.Constant:
    """A new initializer with a name unique in `graph`."""
    return gs.Constant(unique_name(graph, stem), np.ascontiguousarray(values))


def make_variable(graph: gs.Graph, stem: str, dtype=None, shape=None) -> gs.Variable:
    return gs.Variable(unique_name(graph, stem), dtype=dtype, shape=shape)


def unique_name(graph: gs.Graph, stem: str) -> str:
    taken = graph.tensors().keys() | {node.name for node in graph.nodes}
    index = 0
    while f"{stem}_{index}" in taken:
        index += 1
    return f"{stem}_{index}"


def is_default_domain(domain: str | None) -> bool:
    return domain in (None, "", "ai.onnx")


def default_opset(graph: gs.Graph) -> int:
    return int(graph.opset)


# Ops whose later revisions keep the signature but reject some old models: Split-18 needs
# `num_outputs` when the `split` input is absent.
REVISED_WITHOUT_SIGNATURE_CHANGE = frozenset({"Split"})


def raise_opset_if_safe(graph: gs.Graph, required: int) -> bool:
    """Make the default-domain opset at least `required` when that changes no op's meaning.

    Raising is safe when every op in the graph keeps, at `required`, its inputs, outputs and
    attributes (new optional ones may appear) and every type it accepted: revisions that only
    add types (Reshape-19/21) are fine, ones that move an attribute to an input (ReduceMean-18,
    Split-18) are not. Then only the version number changes. Returns whether the graph's opset
    is now at least `required`.
    """
    current = default_opset(graph)
    if current >= required:
        return True
    for op in {node.op for node in graph.nodes if is_default_domain(node.domain)}:
        try:
            old, new = onnx.defs.get_schema(op, current, ""), onnx.defs.get_schema(op, required, "")
        except onnx.defs.SchemaError:
            return False
        if not _schema_compatible(old, new):
            return False
    graph.opset = required
    if graph.import_domains is not None:  # fresh protos: these are shared with the input model
        graph.import_domains = [
            onnx.helper.make_opsetid(
                opset_id.domain, required if is_default_domain(opset_id.domain) else opset_id.version
            )
            for opset_id in graph.import_domains
        ]
    return True


def converted_to_opset(model: onnx.ModelProto, required: int) -> tuple[onnx.ModelProto | None, str]:
    """`model` at default-domain opset `required` or above, and "" (the model itself when it
    already is); (None, the reason) when it cannot be brought there. Only the version number
    changes where no op's signature differs (`raise_opset_if_safe`); otherwise ONNX's version
    converter rewrites the ops whose signature changed (Squeeze, Split, ReduceSum... at 13)."""
    graph = gs.import_onnx(model)
    current = default_opset(graph)
    if current >= required:
        return model, ""
    if raise_opset_if_safe(graph, required):
        return export_graph(graph, model), ""
    try:
        converted = onnx.version_converter.convert_version(model, required)
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001 - the converter's own errors are this function's answer
        text = str(exc).strip()
        return None, f"ONNX's version converter failed: {text.splitlines()[0][:200] if text else type(exc).__name__}"
    return converted, ""


def _schema_compatible(old: onnx.defs.OpSchema, new: onnx.defs.OpSchema) -> bool:
    if old.since_version == new.since_version:
        return True
    if new.name in REVISED_WITHOUT_SIGNATURE_CHANGE:
        return False
    if new.deprecated or not set(old.attributes) <= set(new.attributes):
        return False
    for old_formals, new_formals in ((old.inputs, new.inputs), (old.outputs, new.outputs)):
        if len(new_formals) < len(old_formals) or [f.name for f in old_formals] != [
            f.name for f in new_formals[: len(old_formals)]
        ]:
            return False
        if (
            any(f.option == onnx.defs.OpSchema.FormalParameterOption.Single for f in new_formals[len(old_formals) :])
            and new_formals is new.inputs
        ):
            return False
    old_types = {c.type_param_str: set(c.allowed_type_strs) for c in old.type_constraints}
    new_types = {c.type_param_str: set(c.allowed_type_strs) for c in new.type_constraints}
    return all(types <= new_types.get(param, set()) for param, types in old_types.items())


def axes_of(node: gs.Node) -> list[int] | None:
    """A Reduce node's axes, from its attribute (older opsets) or its constant second input."""
    if "axes" in node.attrs:
        return [int(axis) for axis in node.attrs["axes"]]
    if len(node.inputs) >= 2 and node.inputs[1].name:
        value = constant_value(node.inputs[1])
        if value is None:
            return None
        return [int(axis) for axis in value.reshape(-1)]
    return None


def rank_of(tensor: gs.Tensor) -> int | None:
    if isinstance(tensor, gs.Constant):
        return tensor.values.ndim
    return None if tensor.shape is None else len(tensor.shape)


def static_dim(tensor: gs.Tensor, axis: int) -> int | None:
    """The size of `axis` of `tensor` when it is a known integer, else None."""
    shape = tensor.values.shape if isinstance(tensor, gs.Constant) else tensor.shape
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    dim = shape[axis]
    return int(dim) if isinstance(dim, (int, np.integer)) and dim >= 0 else None
