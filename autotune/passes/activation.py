"""fuse_hardswish: the decomposed `x * Clip(x + 3, 0, 6) / 6` back to one activation."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from autotune.passes._graph import (
    constant_value,
    make_variable,
    other_input,
    raise_opset_if_safe,
    replace_tensor,
    run_graph_rewrite,
    sole_consumer,
)

HARDSWISH_OPSET = 14


def fuse_hardswish(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite decomposed HardSwish, `x * Clip(x + 3, 0, 6) / 6` (the Mul and the Div by 6 in
    either order), into one HardSwish node (opset 14), or, where the opset cannot be raised by
    the number alone, into `x * HardSigmoid(x)` (HardSigmoid, alpha 1/6 and beta 0.5, exists
    since opset 6). Paddle's and older PyTorch exporters emit four element-wise nodes per
    activation; in PP-OCRv4's recognizer they are 28 of its activations and about 40% of its
    time (issue 30). TensorRT runs HardSwish and HardSigmoid as activation layers it fuses into
    the preceding convolution.

    Returns the new model and the number of HardSwishes fused.
    """
    return run_graph_rewrite(model, _fuse_hardswishes)


def _scalar(tensor: gs.Tensor | None, expected: float) -> bool:
    value = constant_value(tensor)
    return value is not None and value.size == 1 and math.isclose(float(value.reshape(-1)[0]), expected, rel_tol=1e-6)


def _clip_bounds(clip: gs.Node) -> tuple[float | None, float | None]:
    """A Clip's (min, max): its inputs from opset 11, its attributes before."""
    if len(clip.inputs) > 1:
        low = constant_value(clip.inputs[1]) if clip.inputs[1].name else None
        high = constant_value(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2].name else None
        return (
            float(low.reshape(-1)[0]) if low is not None and low.size == 1 else None,
            float(high.reshape(-1)[0]) if high is not None and high.size == 1 else None,
        )
    return clip.attrs.get("min"), clip.attrs.get("max")


def _fuse_hardswishes(graph: gs.Graph) -> int:
    fused = 0
    for clip in list(graph.nodes):
        if clip.op == "Clip" and clip.outputs and clip.inputs:
            fused += _fuse_hardswish_at(graph, clip)
    return fused


def _fuse_hardswish_at(graph: gs.Graph, clip: gs.Node) -> int:
    add = clip.inputs[0].inputs[0] if clip.inputs[0].inputs else None
    if add is None or add.op != "Add" or len(add.outputs[0].outputs) != 1:
        return 0
    x = next((t for t in add.inputs if _scalar(other_input(add, t), 3.0)), None)
    if x is None or _clip_bounds(clip) != (0.0, 6.0):
        return 0
    clipped = clip.outputs[0]
    first = sole_consumer(clipped, graph)
    if first is None:
        return 0
    if first.op == "Mul" and other_input(first, clipped) is x:  # (x * clip) / 6
        last = sole_consumer(first.outputs[0], graph, "Div")
        if last is None or last.inputs[0] is not first.outputs[0] or not _scalar(last.inputs[1], 6.0):
            return 0
    elif first.op == "Div" and first.inputs[0] is clipped and _scalar(first.inputs[1], 6.0):  # x * (clip / 6)
        last = sole_consumer(first.outputs[0], graph, "Mul")
        if last is None or other_input(last, first.outputs[0]) is not x:
            return 0
    else:
        return 0
    result = last.outputs[0]
    dtype = x.dtype if x is not None and x.dtype is not None else np.float32
    name = clip.name or "hardswish"
    output = make_variable(graph, f"{name}_hardswish", dtype=dtype)
    if raise_opset_if_safe(graph, HARDSWISH_OPSET):
        graph.nodes.append(gs.Node("HardSwish", name=f"{name}_HardSwish", inputs=[x], outputs=[output]))
    else:
        gate = make_variable(graph, f"{name}_hardsigmoid", dtype=dtype)
        graph.nodes.append(
            gs.Node("HardSigmoid", name=f"{name}_HardSigmoid", attrs={"alpha": 1 / 6, "beta": 0.5},
                    inputs=[x], outputs=[gate])
        )  # fmt: skip
        graph.nodes.append(gs.Node("Mul", name=f"{name}_HardSwish", inputs=[x, gate], outputs=[output]))
    replace_tensor(graph, result, output)
    add.inputs.clear()
    return 1
