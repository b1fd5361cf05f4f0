"""The shape of a layer profile, what every target's `Target.layer_profile` returns: the op
taxonomy (`OP_CLASSES`, `op_class`), the precision names of the runtimes' profilers as ours, how
many runs a profiler times, and `finish_profile`, which turns a target's nodes into the profile.

Below the targets' profilers (`_onnxruntime_profile`, `_tensorrt_profile`) and `autotune.profile`,
which reads the profiles after a search and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autotune.errors import AutotuneError

TOP_NODES = 10
# Profiled runs: at least MIN_RUNS and MIN_PROFILE_S of them after WARMUP_RUNS, at most MAX_RUNS.
WARMUP_RUNS = 3
MIN_RUNS = 10
MIN_PROFILE_S = 0.3
MAX_RUNS = 200

OP_CLASSES = ("gemm", "attention", "normalization", "elementwise", "data_movement", "other")
CLASS_TITLES = {
    "gemm": "GEMM/conv",
    "attention": "attention",
    "normalization": "normalization",
    "elementwise": "element-wise",
    "data_movement": "data movement",
    "other": "other",
}

# ONNX ops and ONNX Runtime's fused/contrib ops, by class. Softmax counts as attention (it is
# the non-GEMM part of an attention block; its MatMuls count as GEMM). Casts and Q/DQ count as
# data movement: they are conversions a precision pass inserts, like TensorRT's reformats.
GEMM_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv", "NhwcFusedConv",
        "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul", "QGemm", "MatMulNBits", "MatMulBnb4", "TransposeMatMul", "Einsum",
    }
)  # fmt: skip
ATTENTION_OPS = frozenset(
    {
        "Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "QAttention",
        "DecoderMaskedMultiHeadAttention", "SparseAttention", "Softmax", "LogSoftmax",
    }
)  # fmt: skip
NORMALIZATION_OPS = frozenset(
    {
        "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
        "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
        "EmbedLayerNormalization", "LpNormalization", "MeanVarianceNormalization", "RMSNormalization",
        "GroupNorm", "SkipGroupNorm", "LRN",
    }
)  # fmt: skip
ELEMENTWISE_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Sum", "Mean", "PRelu", "Relu", "LeakyRelu",
        "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "FastGelu",
        "BiasGelu", "QuickGelu", "Mish", "Softplus", "Softsign", "Clip", "Abs", "Neg", "Exp", "Log", "Sqrt",
        "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Equal", "Greater", "Less",
        "GreaterOrEqual", "LessOrEqual", "And", "Or", "Not", "Xor", "Where", "IsNaN", "IsInf", "BiasAdd",
        "BiasSplitGelu", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "ThresholdedRelu",
        "Swish", "SiLU", "BitShift",
    }
)  # fmt: skip
DATA_MOVEMENT_OPS = frozenset(
    {
        "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Gather", "GatherElements",
        "GatherND", "Slice", "Pad", "Expand", "Tile", "Identity", "Shape", "Size", "DepthToSpace",
        "SpaceToDepth", "ScatterND", "ScatterElements", "Cast", "CastLike", "QuantizeLinear",
        "DequantizeLinear", "DynamicQuantizeLinear", "ReorderInput", "ReorderOutput", "MemcpyToHost",
        "MemcpyFromHost", "QLinearConcat", "Compress", "OneHot", "Trilu", "EyeLike",
    }
)  # fmt: skip
# The precision names ONNX Runtime's profiler and TensorRT's layer table write, as ours.
PRECISION_NAMES = {
    "float": "fp32",
    "float32": "fp32",
    "Float": "fp32",
    "FP32": "fp32",
    "float16": "fp16",
    "Half": "fp16",
    "FP16": "fp16",
    "bfloat16": "bf16",
    "BFloat16": "bf16",
    "BF16": "bf16",
    "int8": "int8",
    "Int8": "int8",
    "INT8": "int8",
    "uint8": "uint8",
    "float8e4m3fn": "fp8",
    "FP8": "fp8",
}


class ProfileError(AutotuneError):
    """A configuration could not be profiled (its model does not load or run)."""


def op_class(op_type: str) -> str:
    """The class of an ONNX (or ONNX Runtime contrib) op type: one of `OP_CLASSES`."""
    if op_type in GEMM_OPS:
        return "gemm"
    if op_type in ATTENTION_OPS:
        return "attention"
    if op_type in NORMALIZATION_OPS:
        return "normalization"
    if op_type in ELEMENTWISE_OPS:
        return "elementwise"
    if op_type in DATA_MOVEMENT_OPS:
        return "data_movement"
    return "other"


def summarize(nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Time by class, the GEMM-class share and the top nodes of timed `nodes` (each with
    `time_ms`, `class`); counts by class when no node is timed."""
    timed = [n for n in nodes if n.get("time_ms") is not None]
    by_class_ms = {c: 0.0 for c in OP_CLASSES}
    counts = {c: 0 for c in OP_CLASSES}
    for node in nodes:
        counts[node["class"]] += 1
    for node in timed:
        by_class_ms[node["class"]] += float(node["time_ms"])
    total = sum(by_class_ms.values())
    if not timed:
        return {"timed": False, "total_ms": None, "by_class_ms": None, "gemm_share": None, "count_by_class": counts}
    return {
        "timed": True,
        "total_ms": total,
        "by_class_ms": by_class_ms,
        "gemm_share": by_class_ms["gemm"] / total if total > 0 else None,
        "count_by_class": counts,
    }


def finish_profile(nodes: list[dict[str, Any]], facts: dict[str, Any]) -> dict[str, Any]:
    """A target's profile from its `nodes` (each with `name`, `op_type`, `class`, `precision`,
    `time_ms` or None) and `facts` (`source`, `note`, `runs`, `run_ms`, `timing`): `summarize`'s
    totals, each node's share, the nodes slowest first (engine order when untimed) and the top
    `TOP_NODES`."""
    summary = summarize(nodes)
    total = summary["total_ms"] or 0.0
    for node in nodes:
        node["share"] = node["time_ms"] / total if node.get("time_ms") is not None and total > 0 else None
    ordered = sorted(nodes, key=lambda n: -(n.get("time_ms") or 0.0)) if summary["timed"] else list(nodes)
    return {**facts, **summary, "nodes": ordered, "top": ordered[:TOP_NODES]}


__all__ = [
    "ATTENTION_OPS",
    "CLASS_TITLES",
    "DATA_MOVEMENT_OPS",
    "ELEMENTWISE_OPS",
    "GEMM_OPS",
    "MAX_RUNS",
    "MIN_PROFILE_S",
    "MIN_RUNS",
    "NORMALIZATION_OPS",
    "OP_CLASSES",
    "PRECISION_NAMES",
    "TOP_NODES",
    "WARMUP_RUNS",
    "ProfileError",
    "finish_profile",
    "op_class",
    "summarize",
]
