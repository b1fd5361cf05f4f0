"""Graph passes: small, named, idempotent ONNX -> ONNX rewrites, each a knob of the search.

`PASSES` lists them in their canonical order, the order `apply_passes` runs any subset in:

1. `fold_constants` first, so that every later pass sees weights as constants;
2. `remove_redundant_transposes` before the pattern matchers, which expect the un-transposed
   layout;
3. `fold_batchnorm_into_conv` before anything reshapes Conv/Gemm outputs;
4. `fuse_layernorm` before `fuse_gelu`, because removing the ReduceMeans (revised in opset 18)
   is what lets the GELU fusion raise the opset to 20 safely; `fuse_groupnorm` between them;
5. `reshape_4d_matmul_to_2d` and `move_reduce_axis_last`, layout rewrites;
6. `pad_matmul_to_multiple` last: it sees the final MatMuls, and its Pad/Slice would hide the
   patterns above.

Each pass takes an `onnx.ModelProto` and returns `(new_model, rewrites)`; with no rewrite the
model comes back unchanged (a copy). Precision, also a graph transformation, is
`apply_precision` (see `autotune.passes.precision`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx

from autotune.passes._graph import PassFn, copy_model
from autotune.passes.activation import fuse_hardswish
from autotune.passes.batchnorm import fold_affine_into_conv, fold_batchnorm_into_conv
from autotune.passes.constants import fold_constants
from autotune.passes.gelu import fuse_gelu
from autotune.passes.matmul import pad_matmul_to_multiple, reshape_4d_matmul_to_2d
from autotune.passes.normalization import fuse_groupnorm, fuse_layernorm, layernorm_blocked
from autotune.passes.precision import (
    CALIBRATION_METHODS,
    DEFAULT_FP32_BLOCK_LIST,
    PRECISIONS,
    QUANTIZATION_KNOB,
    QUANTIZATION_MODES,
    QUANTIZATION_SCHEMES,
    PrecisionError,
    apply_precision,
    dynamic_layer_count,
    quantize_dynamic_int8,
)
from autotune.passes.reduce import move_reduce_axis_last
from autotune.passes.transposes import remove_redundant_transposes

PASSES: dict[str, PassFn] = {
    "fold_constants": fold_constants,
    "remove_redundant_transposes": remove_redundant_transposes,
    "fold_batchnorm_into_conv": fold_batchnorm_into_conv,
    "fuse_layernorm": fuse_layernorm,
    "fuse_groupnorm": fuse_groupnorm,
    "fuse_gelu": fuse_gelu,
    "fuse_hardswish": fuse_hardswish,
    "reshape_4d_matmul_to_2d": reshape_4d_matmul_to_2d,
    "move_reduce_axis_last": move_reduce_axis_last,
    "pad_matmul_to_multiple": pad_matmul_to_multiple,
}


class UnknownPassError(ValueError):
    """A pass name that is not a key of `PASSES`."""


def apply_passes(
    model: onnx.ModelProto, names: Iterable[str], *, pad_multiple: int = 8
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Apply the named passes in canonical (`PASSES`) order, whatever order `names` has.

    Args:
        model: the model; never mutated.
        names: pass names, keys of `PASSES`.
        pad_multiple: the multiple `pad_matmul_to_multiple` pads K and N to (default 8: FP16
            Tensor Cores; 16 for sparsity, 32 for INT8).

    Returns:
        The new model and the number of rewrites of each named pass.

    Raises:
        UnknownPassError (a ValueError): a name that is not a pass, named in the message.
    """
    selected = set(names)
    unknown = sorted(selected - PASSES.keys())
    if unknown:
        raise UnknownPassError(f"unknown pass {', '.join(map(repr, unknown))}; known passes: {', '.join(PASSES)}")
    rewrites: dict[str, int] = {}
    current = copy_model(model)
    for name, graph_pass in PASSES.items():
        if name not in selected:
            continue
        if name == "pad_matmul_to_multiple":
            current, rewrites[name] = graph_pass(current, multiple=pad_multiple)
        else:
            current, rewrites[name] = graph_pass(current)
    return current, rewrites


def inert_passes(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, str]:
    """The passes among `names` that rewrite nothing in `model`, with the reason in words.

    A pass is inert when it finds no match both in the canonical chain of all `names` (where
    an earlier pass can expose a pattern, e.g. folded constants) and applied alone. Such a
    pass is a knob that cannot change the engine: searching it only repeats measurements.
    """
    selected = [n for n in PASSES if n in set(names)]
    _, chained = apply_passes(model, selected)
    inert = {}
    for name in selected:
        if chained.get(name, 0) > 0:
            continue
        _, alone = apply_passes(model, [name])
        if alone.get(name, 0) == 0:
            blocked = BLOCKED[name](model) if name in BLOCKED else None
            inert[name] = (
                blocked or "0 rewrites on this model: the pattern is absent (alone and after the other passes)"
            )
    return inert


# Passes that can say why a pattern present in a model is not rewritten (issue 30: "pattern absent"
# and "present but not rewritable here" are different answers; the second is a diagnosis).
BLOCKED: dict[str, Callable[[onnx.ModelProto], str | None]] = {"fuse_layernorm": layernorm_blocked}


__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_FP32_BLOCK_LIST",
    "PASSES",
    "PRECISIONS",
    "QUANTIZATION_KNOB",
    "QUANTIZATION_MODES",
    "QUANTIZATION_SCHEMES",
    "PassFn",
    "PrecisionError",
    "UnknownPassError",
    "apply_passes",
    "apply_precision",
    "dynamic_layer_count",
    "fold_affine_into_conv",
    "fold_batchnorm_into_conv",
    "fold_constants",
    "fuse_gelu",
    "fuse_hardswish",
    "fuse_groupnorm",
    "fuse_layernorm",
    "inert_passes",
    "move_reduce_axis_last",
    "pad_matmul_to_multiple",
    "quantize_dynamic_int8",
    "remove_redundant_transposes",
    "reshape_4d_matmul_to_2d",
]
