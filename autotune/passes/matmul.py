"""reshape_4d_matmul_to_2d and pad_matmul_to_multiple: MatMul shapes Tensor Cores like."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    constant_value,
    default_opset,
    make_constant,
    make_variable,
    rank_of,
    run_graph_rewrite,
    static_dim,
)

# Slice/Pad/Reshape with their parameters as inputs (and negative Slice axes) need opset 13.
MIN_OPSET = 13


def reshape_4d_matmul_to_2d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite `MatMul(x[B, H, M, K], W[K, N])` (W constant) as a 2-D MatMul between Reshapes.

    A MatMul whose activation has 4 or more dims against a constant 2-D weight (or one whose
    leading dims are all 1) is one GEMM of `[B*H*M, K] x [K, N]`, but TensorRT plans a batched
    matrix multiply over the leading dims, with a worse tactic choice and no fusion with the
    following bias/activation. Reshaping to 2-D (and back, with the original leading dims, read
    from `Shape(x)` when they are dynamic) is exact: it only reinterprets memory.

    Returns the new model and the number of MatMuls rewritten.
    """
    return run_graph_rewrite(model, _reshape_4d_matmuls, infer_shapes=True)


def pad_matmul_to_multiple(model: onnx.ModelProto, multiple: int = 8) -> tuple[onnx.ModelProto, int]:
    """Zero-pad a constant MatMul/Gemm weight's K and N to a multiple of `multiple`.

    Tensor Core GEMMs need K and N aligned (8 elements for FP16, 16 for 2:4 sparsity, 32 for
    INT8); an unaligned weight such as `[1000, 2047]` makes TensorRT fall back to slower,
    non-Tensor-Core or padded-at-run-time kernels. The weight is padded with zero rows (K) and
    columns (N) once, the activation gets a zero Pad on K (zeros times zero rows add nothing,
    so the sum is exact), and a Slice restores the original N.

    Returns the new model and the number of MatMul/Gemm nodes padded.
    """
    if multiple < 1:
        raise ValueError(f"pad multiple must be a positive integer, got {multiple!r}")
    return run_graph_rewrite(model, lambda graph: _pad_matmuls(graph, multiple), infer_shapes=True)


def _reshape_4d_matmuls(graph: gs.Graph) -> int:
    if default_opset(graph) < MIN_OPSET:
        return 0
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "MatMul" or not node.outputs:
            continue
        x, weight_tensor = node.inputs
        weights = constant_value(weight_tensor)
        rank = rank_of(x)
        if weights is None or rank is None or rank < 4 or weights.ndim < 2:
            continue
        if any(dim != 1 for dim in weights.shape[:-2]):
            continue
        k, n = weights.shape[-2:]
        flat = make_variable(graph, f"{x.name}_2d", dtype=x.dtype)
        graph.nodes.append(
            gs.Node(
                "Reshape",
                inputs=[x, make_constant(graph, "matmul_2d_shape", np.array([-1, k], np.int64))],
                outputs=[flat],
            )
        )
        node.inputs[0] = flat
        if weights.ndim > 2:
            node.inputs[1] = make_constant(graph, f"{weight_tensor.name}_2d", weights.reshape(k, n))
        result = node.outputs[0]
        product = make_variable(graph, f"{result.name}_2d", dtype=result.dtype)
        node.outputs[0] = product
        graph.nodes.append(gs.Node("Reshape", inputs=[product, _output_shape(graph, x, rank, n)], outputs=[result]))
        rewritten += 1
    return rewritten


def _output_shape(graph: gs.Graph, x: gs.Tensor, rank: int, n: int) -> gs.Tensor:
    """x's shape with the last dim replaced by n: a constant if static, else from Shape(x)."""
    leading = [static_dim(x, axis) for axis in range(rank - 1)]
    if all(dim is not None for dim in leading):
        return make_constant(graph, "matmul_4d_shape", np.array(leading + [n], np.int64))
    shape = make_variable(graph, f"{x.name}_shape", dtype=np.int64)
    leading_shape = make_variable(graph, f"{x.name}_leading_shape", dtype=np.int64)
    full_shape = make_variable(graph, f"{x.name}_matmul_shape", dtype=np.int64)
    graph.nodes.extend(
        [
            gs.Node("Shape", inputs=[x], outputs=[shape]),
            gs.Node(
                "Slice",
                inputs=[
                    shape,
                    make_constant(graph, "leading_start", np.array([0], np.int64)),
                    make_constant(graph, "leading_end", np.array([-1], np.int64)),
                ],
                outputs=[leading_shape],
            ),
            gs.Node(
                "Concat",
                attrs={"axis": 0},
                inputs=[leading_shape, make_constant(graph, "matmul_n", np.array([n], np.int64))],
                outputs=[full_shape],
            ),
        ]
    )
    return full_shape


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_matmuls(graph: gs.Graph, multiple: int) -> int:
    if default_opset(graph) < MIN_OPSET:
        return 0
    padded = 0
    for node in list(graph.nodes):
        if node.op == "MatMul" and node.outputs:
            padded += _pad_matmul(graph, node, multiple)
        elif node.op == "Gemm" and node.outputs:
            padded += _pad_gemm(graph, node, multiple)
    return padded


def _pad_matmul(graph: gs.Graph, node: gs.Node, multiple: int) -> int:
    x, weight_tensor = node.inputs
    weights = constant_value(weight_tensor)
    rank = rank_of(x)
    if weights is None or weights.ndim != 2 or rank is None or rank < 2:
        return 0
    k, n = weights.shape
    k_padded, n_padded = _round_up(k, multiple), _round_up(n, multiple)
    if (k, n) == (k_padded, n_padded):
        return 0
    node.inputs[1] = make_constant(
        graph, f"{weight_tensor.name}_padded", np.pad(weights, ((0, k_padded - k), (0, n_padded - n)))
    )
    if k_padded != k:
        node.inputs[0] = _zero_pad(graph, x, rank, rank - 1, k_padded - k)
    if n_padded != n:
        _slice_output(graph, node, axis=-1, length=n)
    return 1


def _pad_gemm(graph: gs.Graph, node: gs.Node, multiple: int) -> int:
    a, weight_tensor = node.inputs[:2]
    weights = constant_value(weight_tensor)
    bias_tensor = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    bias = constant_value(bias_tensor)
    if weights is None or weights.ndim != 2 or (bias_tensor is not None and bias is None):
        return 0
    transposed = bool(node.attrs.get("transB", 0))
    (n, k) = weights.shape if transposed else weights.shape[::-1]
    k_padded, n_padded = _round_up(k, multiple), _round_up(n, multiple)
    if (k, n) == (k_padded, n_padded):
        return 0
    if bias_tensor is not None and bias is not None and bias.ndim > 0 and bias.shape[-1] == n and n_padded != n:
        widths = [(0, 0)] * (bias.ndim - 1) + [(0, n_padded - n)]
        node.inputs[2] = make_constant(graph, f"{bias_tensor.name}_padded", np.pad(bias, widths))
    elif bias is not None and bias.ndim > 0 and bias.shape[-1] != 1:
        return 0
    k_widths, n_widths = (0, k_padded - k), (0, n_padded - n)
    node.inputs[1] = make_constant(
        graph,
        f"{weight_tensor.name}_padded",
        np.pad(weights, (n_widths, k_widths) if transposed else (k_widths, n_widths)),
    )
    if k_padded != k:
        node.inputs[0] = _zero_pad(graph, a, 2, 0 if node.attrs.get("transA", 0) else 1, k_padded - k)
    if n_padded != n:
        _slice_output(graph, node, axis=1, length=n)
    return 1


def _zero_pad(graph: gs.Graph, x: gs.Tensor, rank: int, axis: int, amount: int) -> gs.Tensor:
    pads = np.zeros(2 * rank, np.int64)
    pads[rank + axis] = amount
    padded = make_variable(graph, f"{x.name}_padded", dtype=x.dtype)
    graph.nodes.append(gs.Node("Pad", inputs=[x, make_constant(graph, "matmul_k_pads", pads)], outputs=[padded]))
    return padded


def _slice_output(graph: gs.Graph, node: gs.Node, axis: int, length: int) -> None:
    result = node.outputs[0]
    wide = make_variable(graph, f"{result.name}_padded", dtype=result.dtype)
    node.outputs[0] = wide
    graph.nodes.append(
        gs.Node(
            "Slice",
            inputs=[
                wide,
                make_constant(graph, "matmul_n_start", np.array([0], np.int64)),
                make_constant(graph, "matmul_n_end", np.array([length], np.int64)),
                make_constant(graph, "matmul_n_axis", np.array([axis], np.int64)),
            ],
            outputs=[result],
        )
    )
