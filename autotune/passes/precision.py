"""Precision as a graph transformation: FP16/BF16 casts and INT8/FP8 Q/DQ.

TensorRT 11 has no FP16/INT8 builder flags (strong typing only): the network computes in the
types the ONNX graph states. So reduced precision is produced here, on the graph, for every
target alike: Casts around the nodes that run in FP16/BF16, explicit QuantizeLinear/
DequantizeLinear pairs for INT8/FP8. TF32 stays a builder flag, so "tf32" leaves the graph as
it is.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.calibrate import entropy
from onnxruntime.quantization.quant_utils import smooth_distribution
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from autotune.passes._graph import (
    converted_to_opset,
    copy_model,
    export_graph,
    is_default_domain,
    make_variable,
    unique_name,
)
from autotune.passes.batchnorm import fold_affine_into_conv, fold_batchnorm_into_conv

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
QUANTIZATION_SCHEMES = ("symmetric", "asymmetric_u8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# How INT8 is applied: "static" (calibrated Q/DQ pairs on every layer that takes them) or
# "dynamic" (ONNX Runtime's dynamic quantization: MatMul/Gemm weights INT8, each activation
# quantized with its own range at every run; no calibration). QUANTIZATION_KNOB is the pipeline
# knob that picks one.
QUANTIZATION_KNOB = "quantization"
QUANTIZATION_MODES = ("static", "dynamic")
DYNAMIC_OPS = ("MatMul", "Gemm")
KERNEL_SOURCES = ("onnx_schema", "onnxruntime_cpu", "onnxruntime_cuda")
_KERNEL_PROVIDERS = {"onnxruntime_cpu": "CPUExecutionProvider", "onnxruntime_cuda": "CUDAExecutionProvider"}

# Ops kept in FP32 under fp16/bf16 by default: reductions and normalizations accumulate sums
# of squares that overflow FP16 (max 65504) or lose BF16's 8-bit mantissa; exp/log/pow have
# large dynamic range. Softmax is not here: TensorRT and ONNX Runtime accumulate it in FP32.
DEFAULT_FP32_BLOCK_LIST = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "Pow",
    "Exp",
    "Log",
    "Softplus",
    "Reciprocal",
)

# Ops never cast: they define their output type themselves, hold subgraphs, or are shape
# plumbing on integers.
NEVER_CAST_OPS = frozenset(
    {
        "Cast", "CastLike", "Constant", "ConstantOfShape", "DequantizeLinear", "EyeLike", "If",
        "Loop", "Multinomial", "QuantizeLinear", "RandomNormal", "RandomNormalLike",
        "RandomUniform", "RandomUniformLike", "Range", "Scan", "Shape", "Size",
    }
)  # fmt: skip

# Normalizations stay in float: their 1-D scale is not a per-channel weight (ONNX Runtime's
# quantizer quantizes it along axis 1 and emits a Q/DQ that does not run), and TensorRT runs
# them in float anyway.
# Softmax's probabilities (median ~1/tokens) vanish on an 8-bit grid scaled to their max, as
# do products with them: Softmax and activation-by-activation MatMuls (attention) stay float,
# as in NVIDIA's INT8 recipes.
NEVER_QUANTIZED_OPS = frozenset(
    {"BatchNormalization", "GroupNormalization", "InstanceNormalization", "LayerNormalization", "Softmax"}
)

# FP8 Q/DQ goes where TensorRT has FP8 kernels: the GEMM-like ops. (ONNX Runtime's FP8
# scales come from each tensor's standard deviation, which is 0, hence NaN, for an all-zero
# bias of an Add.)
FP8_OPSET = 19  # the first opset whose QuantizeLinear/DequantizeLinear take FP8
# Per-channel Q/DQ (the `axis` attribute of QuantizeLinear/DequantizeLinear) and BF16 in the
# schemas of the arithmetic ops both arrive with opset 13. Below it, ONNX Runtime's quantizer
# writes per-channel DequantizeLinear nodes that the opset forbids (INVALID_GRAPH at load), and
# no op's schema admits bfloat16, so a "bf16" model would be the FP32 one under another name.
MIN_OPSET = {"int8": 13, "bf16": 13, "fp8": FP8_OPSET}
FP8_QUANTIZED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

# TensorRT's explicit quantization (symmetric scheme): Q/DQ on the inputs of the layers it has
# INT8 kernels for, as NVIDIA's recipes place them. Quantizing element-wise ops' constants (a
# LayerNorm epsilon, a bias Add) makes TensorRT refuse the network: "Quantized constant ... is
# only allowed before DQ" (seen with TensorRT-RTX on the bundled example).
TENSORRT_INT8_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

_LOW_PRECISION_TYPES = {
    "fp16": (onnx.TensorProto.FLOAT16, np.dtype(np.float16), "tensor(float16)"),
    "bf16": (onnx.TensorProto.BFLOAT16, np.dtype(ml_dtypes.bfloat16), "tensor(bfloat16)"),
}


class PrecisionError(ValueError):
    """A precision, scheme, calibration method or calibration set that cannot be applied."""


def apply_precision(
    model: onnx.ModelProto,
    precision: str,
    *,
    calibration_feeds: Sequence[dict[str, np.ndarray]] = (),
    scheme: str = "symmetric",
    calibration_method: str = "minmax",
    fp32_block_list: Sequence[str] = DEFAULT_FP32_BLOCK_LIST,
    kernels: str = "onnx_schema",
    keep_float: Sequence[str] = (),
) -> onnx.ModelProto:
    """Return `model` rewritten to compute in `precision`; never mutates `model`.

    Args:
        model: an FP32 model.
        precision: one of `PRECISIONS`. "fp32" and "tf32" return a copy (TF32 is a builder
            flag); "fp16"/"bf16" cast (see `cast_to_low_precision`); "int8"/"fp8" insert
            calibrated Q/DQ pairs: with NVIDIA ModelOpt when it is installed (symmetric scheme,
            minmax or entropy calibration; see `quantize_with_modelopt`), else with ONNX
            Runtime's quantizer (see `quantize_qdq`). The model's metadata names which
            (`autotune.quantizer`).
        calibration_feeds: input batches (input name -> array) to calibrate on; required, and
            only used, for "int8"/"fp8".
        scheme: "symmetric" (default; TensorRT: int8 activations and weights, zero point 0) or
            "asymmetric_u8" (ONNX Runtime CPU: uint8 activations, int8 weights). "fp8" is
            always symmetric E4M3 (PrecisionError otherwise).
        calibration_method: "minmax" (default), "entropy" or "percentile", for "int8"/"fp8".
        fp32_block_list: op types kept in FP32 under "fp16"/"bf16"
            (default `DEFAULT_FP32_BLOCK_LIST`).
        kernels: which ops may be cast under "fp16"/"bf16": "onnx_schema" (default, every op
            whose ONNX schema allows the type: what TensorRT runs) or "onnxruntime_cpu" (only
            ops with an ONNX Runtime CPU kernel in that type, so the model runs there too).
        keep_float: for "int8"/"fp8", node names left unquantized (ONNX Runtime's quantizer,
            `nodes_to_exclude`); names as `prepare_for_quantization` gives them. Default: none.

    Raises:
        PrecisionError: an unknown precision, scheme, method or kernel source, or "int8"/"fp8"
            without calibration feeds.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision in ("fp32", "tf32"):
        return copy_model(model)
    if precision in ("fp16", "bf16"):
        return cast_to_low_precision(model, precision, fp32_block_list=fp32_block_list, kernels=kernels)
    modelopt = modelopt_quantize()
    if modelopt is not None and scheme == "symmetric" and calibration_method in MODELOPT_METHODS and not keep_float:
        if not calibration_feeds:
            raise PrecisionError(f"{precision} needs calibration_feeds (at least one input batch), got none")
        return quantize_with_modelopt(
            modelopt, model, precision, calibration_feeds=calibration_feeds, calibration_method=calibration_method
        )
    quantized = quantize_qdq(
        model,
        precision,
        calibration_feeds=calibration_feeds,
        scheme=scheme,
        calibration_method=calibration_method,
        keep_float=keep_float,
    )
    _mark_quantizer(quantized, "onnxruntime")
    return quantized


# --- FP16 / BF16 -----------------------------------------------------------------------------


def cast_to_low_precision(
    model: onnx.ModelProto,
    precision: str,
    *,
    fp32_block_list: Sequence[str] = DEFAULT_FP32_BLOCK_LIST,
    kernels: str = "onnx_schema",
) -> onnx.ModelProto:
    """Run every castable FP32 node in FP16 or BF16, keeping inputs, outputs and blocked ops FP32.

    Each castable node gets Casts to the low type on its FP32 inputs (constants are converted
    once instead, FP16 ones clipped to its finite range) and a Cast back to FP32 on each output;
    then `Cast(to=fp32) -> Cast(to=low)` pairs between two castable nodes are removed, so Casts
    remain only at the borders of low-precision regions. A node is castable when its op is not
    in `fp32_block_list` or `NEVER_CAST_OPS`, every type variable bound to an FP32 tensor allows
    the low type in the node's ONNX schema, and (with `kernels="onnxruntime_cpu"`) ONNX Runtime
    has a CPU kernel for it in that type. The model stays valid ONNX by construction.

    Args:
        model: an FP32 model.
        precision: "fp16" or "bf16".
        fp32_block_list: op types to keep in FP32 (default `DEFAULT_FP32_BLOCK_LIST`).
        kernels: "onnx_schema" (default) or "onnxruntime_cpu", as in `apply_precision`.
    """
    if precision not in _LOW_PRECISION_TYPES:
        raise PrecisionError(f"cast precision must be 'fp16' or 'bf16', got {precision!r}")
    if kernels not in KERNEL_SOURCES:
        raise PrecisionError(f"unknown kernel source {kernels!r}; expected one of {KERNEL_SOURCES}")
    onnx_type, numpy_type, type_string = _LOW_PRECISION_TYPES[precision]
    if precision in MIN_OPSET:
        model = at_least_opset(model, MIN_OPSET[precision], precision)
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    blocked = set(fp32_block_list) | NEVER_CAST_OPS
    opset = int(graph.opset)
    casted_inputs: dict[str, gs.Tensor] = {}
    casts_back: list[gs.Node] = []
    for node in list(graph.nodes):
        if node.op in blocked or not is_default_domain(node.domain):
            continue
        float_positions = _castable_positions(node, opset, type_string)
        if float_positions is None or (
            kernels in _KERNEL_PROVIDERS
            and not _has_ort_kernel(node.op, opset, type_string, _KERNEL_PROVIDERS[kernels])
        ):
            continue
        input_positions, output_positions = float_positions
        for index in input_positions:
            tensor = node.inputs[index]
            if tensor.name not in casted_inputs:
                casted_inputs[tensor.name] = _low_precision_version(graph, tensor, onnx_type, numpy_type)
            node.inputs[index] = casted_inputs[tensor.name]
        for index in output_positions:
            result = node.outputs[index]
            low = make_variable(graph, f"{result.name}_{precision}", dtype=numpy_type, shape=result.shape)
            node.outputs[index] = low
            cast_back = gs.Node("Cast", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[low], outputs=[result])
            graph.nodes.append(cast_back)
            casts_back.append(cast_back)
    if not casts_back:
        # The promise is a model that computes in `precision`; an unchanged graph is not one.
        raise PrecisionError(f"{precision}: no operator of this model can run in {precision} (opset {opset})")
    _remove_cast_round_trips(graph, casts_back, onnx_type)
    exported = export_graph(graph, model)
    onnx.checker.check_model(exported)
    return exported


def _is_float32(tensor: gs.Tensor) -> bool:
    dtype = tensor.values.dtype if isinstance(tensor, gs.Constant) else tensor.dtype
    if dtype is None:
        return False
    if isinstance(dtype, int):
        return dtype == onnx.TensorProto.FLOAT
    return np.dtype(dtype) == np.float32


def _castable_positions(node: gs.Node, opset: int, type_string: str) -> tuple[list[int], list[int]] | None:
    """The FP32 input and output positions to cast, or None when the node cannot be cast."""
    try:
        schema = onnx.defs.get_schema(node.op, opset, "")
    except onnx.defs.SchemaError:
        return None
    allowed = {constraint.type_param_str: set(constraint.allowed_type_strs) for constraint in schema.type_constraints}

    def positions(tensors: Sequence[gs.Tensor], formals) -> list[int] | None:
        chosen = []
        for index, tensor in enumerate(tensors):
            if not tensor.name or not formals:
                continue
            formal = formals[min(index, len(formals) - 1)]
            if not isinstance(tensor, gs.Constant) and tensor.dtype is None:
                return None
            if not _is_float32(tensor) or formal.type_str not in allowed:
                continue
            if type_string not in allowed[formal.type_str]:
                return None
            chosen.append(index)
        return chosen

    inputs, outputs = positions(node.inputs, schema.inputs), positions(node.outputs, schema.outputs)
    if inputs is None or outputs is None or not outputs:
        return None
    return inputs, outputs


@functools.cache
def _ort_cpu_kernels(provider: str = "CPUExecutionProvider") -> dict[str, list[tuple[tuple[int, int], set[str]]]]:
    kernels: dict[str, list[tuple[tuple[int, int], set[str]]]] = {}
    for kernel in ort_state.get_all_opkernel_def():
        if kernel.provider == provider and kernel.domain in ("", "ai.onnx"):
            types = {type_ for types in kernel.type_constraints.values() for type_ in types}
            kernels.setdefault(kernel.op_name, []).append((tuple(kernel.version_range), types))
    return kernels


def _has_ort_kernel(op: str, opset: int, type_string: str, provider: str) -> bool:
    since = onnx.defs.get_schema(op, opset, "").since_version
    kernels = _ort_cpu_kernels(provider).get(op, [])
    return any(low <= since <= high and type_string in types for (low, high), types in kernels)


def _low_precision_version(graph: gs.Graph, tensor: gs.Tensor, onnx_type: int, numpy_type: np.dtype) -> gs.Tensor:
    if isinstance(tensor, gs.Constant):
        values = np.asarray(tensor.values, dtype=np.float32)
        if numpy_type == np.float16:
            finite = float(np.finfo(np.float16).max)
            values = np.clip(values, -finite, finite)
        return gs.Constant(
            unique_name(graph, f"{tensor.name}_{numpy_type.name}"), np.asarray(values.astype(numpy_type))
        )
    low = make_variable(graph, f"{tensor.name}_{numpy_type.name}", dtype=numpy_type, shape=tensor.shape)
    graph.nodes.append(gs.Node("Cast", attrs={"to": onnx_type}, inputs=[tensor], outputs=[low]))
    return low


def _remove_cast_round_trips(graph: gs.Graph, casts_back: list[gs.Node], onnx_type: int) -> None:
    """Let readers of `Cast(to=low)(Cast(to=fp32)(t_low))` read `t_low` directly."""
    for cast_back in casts_back:
        low, fp32 = cast_back.inputs[0], cast_back.outputs[0]
        for reader in list(fp32.outputs):
            if reader.op != "Cast" or reader.attrs.get("to") != onnx_type:
                continue
            if any(output is reader.outputs[0] for output in graph.outputs):
                continue
            for consumer in list(reader.outputs[0].outputs):
                for index, tensor in enumerate(consumer.inputs):
                    if tensor is reader.outputs[0]:
                        consumer.inputs[index] = low


# --- INT8 / FP8 ------------------------------------------------------------------------------


def quantize_qdq(
    model: onnx.ModelProto,
    precision: str,
    *,
    calibration_feeds: Sequence[dict[str, np.ndarray]],
    scheme: str = "symmetric",
    calibration_method: str = "minmax",
    keep_float: Sequence[str] = (),
    float_output_tail: bool = True,
) -> onnx.ModelProto:
    """Insert calibrated QuantizeLinear/DequantizeLinear pairs with ONNX Runtime's quantizer.

    Weights are quantized per channel. "symmetric" gives int8 activations and weights with
    zero point 0 and leaves biases in FP32: TensorRT's explicit quantization accepts only that
    (no int32 bias Q/DQ). "asymmetric_u8" gives uint8 activations with int8 weights, which ONNX
    Runtime's CPU kernels run fastest (1.60x FP32 vs 0.41x for symmetric, measured on a YOLO-
    class detector). "fp8" is E4M3 for activations and weights, symmetric, and calibrated with
    the same calibration as symmetric INT8, rescaled to E4M3's range (max 448), on Conv,
    ConvTranspose, Gemm and MatMul only (where TensorRT has FP8 kernels); the opset is
    raised to 19 (ONNX's version converter) for FP8 Q/DQ.

    Args:
        model: an FP32 model.
        precision: "int8" or "fp8".
        calibration_feeds: input batches (input name -> array); at least one.
        scheme: "symmetric" (default) or "asymmetric_u8" (int8 only).
        calibration_method: "minmax" (default), "entropy" or "percentile".
        keep_float: names of nodes (as `prepare_for_quantization` names them) left in float:
            ONNX Runtime's `nodes_to_exclude` (mixed precision; see `autotune.sensitivity`).
        float_output_tail: leave the output's post-processing (`output_tail`) in float.
            Default: True.
    """
    if precision not in ("int8", "fp8"):
        raise PrecisionError(f"Q/DQ precision must be 'int8' or 'fp8', got {precision!r}")
    if scheme not in QUANTIZATION_SCHEMES:
        raise PrecisionError(f"unknown quantization scheme {scheme!r}; expected one of {QUANTIZATION_SCHEMES}")
    if calibration_method not in CALIBRATION_METHODS:
        raise PrecisionError(
            f"unknown calibration method {calibration_method!r}; expected one of {CALIBRATION_METHODS}"
        )
    if not calibration_feeds:
        raise PrecisionError(f"{precision} needs calibration_feeds (at least one input batch), got none")
    if precision == "fp8" and scheme != "symmetric":
        raise PrecisionError(f"fp8 is symmetric E4M3 only, got scheme {scheme!r}")

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = iter(calibration_feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    # FP8 reuses the symmetric INT8 calibration (weights kept in float behind a Q/DQ pair) and
    # rescales it to E4M3's range afterwards: ONNX Runtime's own FP8 calibration derives scales
    # from standard deviations, which measured 59% max error on the test model against 2% here.
    extra_options = {
        "WeightSymmetric": True,
        "ActivationSymmetric": scheme == "symmetric",
        "AddQDQPairToWeight": precision == "fp8",
        # The quantizer drops a Relu/Clip after a quantized op (the Q range clips instead); kept,
        # the graph still computes them when a layer is later left in float (autotune.sensitivity).
        "QDQKeepRemovableActivations": True,
    }
    activation_type = QuantType.QInt8 if scheme == "symmetric" else QuantType.QUInt8
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibration_method]
    if scheme == "symmetric":
        extra_options["QuantizeBias"] = False
    model = prepare_for_quantization(model, precision)
    if precision == "fp8":
        op_types = sorted(FP8_QUANTIZED_OPS)
    elif scheme == "symmetric":
        op_types = sorted(TENSORRT_INT8_OPS)
    else:
        op_types = sorted((QDQRegistry.keys() | QLinearOpsRegistry.keys()) - NEVER_QUANTIZED_OPS)
    initializers = {initializer.name for initializer in model.graph.initializer}
    activation_matmuls = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(name in initializers for name in node.input)
    ]
    # The output's post-processing stays float (what NVIDIA's and ONNX Runtime's recipes exclude by
    # hand): YOLOX's decode concatenates boxes in pixels (range ~600) with scores (range ~1), and
    # one 8-bit scale for the Concat rounds every score to 0; it is small tensors, no INT8 gain.
    tail = output_tail(model) if float_output_tail else []
    excluded = activation_matmuls + [name for name in tail if name not in activation_matmuls]
    quantizable = [n for n in model.graph.node if n.op_type in op_types and n.name not in excluded]
    if not quantizable:
        # ONNX Runtime's calibrators fail obscurely ("Histogram has not been collected") here.
        raise PrecisionError(
            f"{precision}: the model has no operator to quantize (none of {', '.join(op_types[:8])}...)"
        )
    with (
        tempfile.TemporaryDirectory(prefix="autotune-quantize-") as directory,
        _entropy_histogram_bins(calibration_method),
    ):
        source, target = Path(directory) / "model.onnx", Path(directory) / "quantized.onnx"
        onnx.save(model, str(source))
        quantize_static(
            str(source),
            str(target),
            FeedReader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            nodes_to_exclude=excluded + [name for name in keep_float if name not in excluded],
            per_channel=True,
            activation_type=activation_type,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_providers=["CPUExecutionProvider"],
            extra_options=extra_options,
        )
        quantized = onnx.load(str(target))
    return _int8_qdq_to_fp8(quantized) if precision == "fp8" else quantized


def quantize_dynamic_int8(model: onnx.ModelProto, *, op_types: Sequence[str] = DYNAMIC_OPS) -> onnx.ModelProto:
    """INT8 by ONNX Runtime's dynamic quantization: each MatMul/Gemm with a constant weight gets
    INT8 weights (per tensor) and quantizes its activation at every run with that run's own range
    (DynamicQuantizeLinear -> MatMulInteger); nothing is calibrated. What ONNX Runtime
    recommends for recurrent and transformer models on the CPU, and what ddddocr ships for its
    own CPU recognizer (`common_old.onnx`). Convolutions stay float: dynamic ConvInteger ran 4x
    slower than FP32 on ddddocr's recognizer (bench/INT8_CPU.md). Constant-node weights
    (paddle2onnx's) become initializers first: the quantizer takes only those.

    Raises:
        PrecisionError: no MatMul/Gemm of the model has a constant weight, or the quantizer
            quantized none of them (an unchanged model is not an INT8 one).
    """
    model = copy_model(model)
    _constants_to_initializers(model)
    weighted = dynamic_quantizable(model, op_types)
    if not weighted:
        raise PrecisionError(f"int8 dynamic: the model has no {'/'.join(op_types)} with a constant weight to quantize")
    with tempfile.TemporaryDirectory(prefix="autotune-quantize-") as directory:
        source, target = Path(directory) / "model.onnx", Path(directory) / "quantized.onnx"
        onnx.save(model, str(source))
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=False,
            op_types_to_quantize=list(op_types),
        )
        quantized = onnx.load(str(target))
    if not dynamic_layer_count(quantized):
        raise PrecisionError(
            f"int8 dynamic: ONNX Runtime's quantizer quantized none of the {weighted} {'/'.join(op_types)} layers"
        )
    _mark_quantizer(quantized, "onnxruntime-dynamic")
    return quantized


def dynamic_quantizable(model: onnx.ModelProto, op_types: Sequence[str] = DYNAMIC_OPS) -> int:
    """How many layers dynamic quantization can take: MatMul/Gemm whose weight (input B) is a
    constant, an initializer or a Constant node."""
    constants = {initializer.name for initializer in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return sum(1 for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in constants)


def dynamic_layer_count(model: onnx.ModelProto) -> int:
    """Layers a dynamically quantized model runs in INT8 (MatMulInteger / ConvInteger)."""
    return sum(1 for node in model.graph.node if node.op_type in ("MatMulInteger", "ConvInteger"))


# Entropy (KL) calibration picks a clipping threshold among histogram widths; with as many
# histogram bins as quantized bins there is one width to pick, the full range: minmax. ONNX
# Runtime's EntropyCalibrater defaults to 128 and 128 and `quantize_static` passes no option to
# change them, so "entropy" gave minmax's scales exactly (every one of YOLOX's 296). 2048 bins,
# 128 quantized bins: TensorRT's entropy calibration, and ORT's own percentile default.
ENTROPY_HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


@contextlib.contextmanager
def _entropy_histogram_bins(calibration_method: str) -> Iterator[None]:
    """While quantizing with "entropy", ONNX Runtime's calibrator gets `ENTROPY_HISTOGRAM_BINS`
    and searches thresholds with `entropy_threshold` (its own loop, in Python, takes 0.4-0.6 s per
    tensor at 2048 bins: minutes for a detector's ~300 tensors)."""
    if calibration_method != "entropy":
        yield
        return
    # the module, not the `quantize` function the package exports under the same name
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")
    ort_calibrate = importlib.import_module("onnxruntime.quantization.calibrate")
    original_create = ort_quantize.create_calibrator
    original_threshold = ort_calibrate.HistogramCollector.get_entropy_threshold

    def create_calibrator(*args: Any, extra_options: dict | None = None, **kwargs: Any) -> Any:
        options = {"num_bins": ENTROPY_HISTOGRAM_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
        return original_create(*args, extra_options={**options, **(extra_options or {})}, **kwargs)

    setattr(ort_quantize, "create_calibrator", create_calibrator)  # noqa: B010 - a module from import_module
    ort_calibrate.HistogramCollector.get_entropy_threshold = lambda _self, histogram, bins: entropy_threshold(
        histogram, bins
    )
    try:
        yield
    finally:
        setattr(ort_quantize, "create_calibrator", original_create)  # noqa: B010
        ort_calibrate.HistogramCollector.get_entropy_threshold = original_threshold


def entropy_threshold(histogram: Sequence[Any], num_quantized_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's `HistogramCollector.get_entropy_threshold`, the same arithmetic with the
    inner loops in NumPy: the symmetric range around the histogram's centre whose clipped
    distribution, merged into `num_quantized_bins` bins, is closest (KL divergence) to the
    histogram. `histogram` is (counts, edges, min, max); returns (low, high) clipped to min/max."""
    hist, edges = np.asarray(histogram[0]), np.asarray(histogram[1])
    zero_bin, half = hist.size // 2, num_quantized_bins // 2
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    best, best_divergence = None, np.inf
    for i in range(half, zero_bin + 1):
        start, end = zero_bin - i, min(zero_bin + i + 1, hist.size)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += cumulative[start]
        p[-1] += cumulative[-1] - cumulative[end]
        merged = sliced.size // num_quantized_bins
        blocks = sliced[: num_quantized_bins * merged].reshape(num_quantized_bins, merged).sum(axis=1)
        blocks[-1] += sliced[num_quantized_bins * merged :].sum()
        nonzero = (p[: num_quantized_bins * merged] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
        # ORT writes block / count into an int64 array: truncated, and 0 where the block is empty
        spread = np.where(nonzero != 0, blocks / np.maximum(nonzero, 1), 0).astype(np.int64)
        q = np.zeros(p.size, dtype=np.int64)
        q[: num_quantized_bins * merged] = np.repeat(spread, merged)
        p_smooth, q_smooth = smooth_distribution(p), smooth_distribution(q)
        divergence = np.inf if p_smooth is None or q_smooth is None else float(entropy(p_smooth, q_smooth))
        if best is None or divergence < best_divergence:
            best, best_divergence = (edges[start], edges[end]), divergence
    assert best is not None  # the loop runs at least once: num_quantized_bins // 2 <= the zero bin
    low, high = best
    if low < histogram[2]:
        low = histogram[2]
    if high > histogram[3]:
        high = histogram[3]
    return np.asarray(low, dtype=edges.dtype), np.asarray(high, dtype=edges.dtype)


# The ops that do a network's arithmetic (what INT8 speeds up); the nodes after the last of them
# on every path to an output are its post-processing.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def output_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from which no Conv/ConvTranspose/Gemm/MatMul is reachable downstream
    (and which are none of those): the output's post-processing (decode, activation, reshape),
    in graph order. Nodes are read from `model.graph.node`, which ONNX keeps topologically sorted."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_compute: dict[int, bool] = {}
    for node in reversed(model.graph.node):
        feeds_compute[id(node)] = any(
            reader.op_type in COMPUTE_OPS or feeds_compute.get(id(reader), False)
            for name in node.output
            for reader in consumers.get(name, ())
        )
    return [
        node.name
        for node in model.graph.node
        if not feeds_compute[id(node)] and node.op_type not in COMPUTE_OPS and node.name
    ]


def _default_opset(model: onnx.ModelProto) -> int:
    return next((opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")), 0)


def prepare_for_quantization(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """A copy of `model` at the opset `precision`'s Q/DQ needs, BatchNormalization and constant
    Mul/Add/Sub folded into the Conv/ConvTranspose/Gemm before them (`fold_affine_into_conv`: each
    left apart is one more 8-bit rounding of the activation), every node named (the quantizer
    excludes nodes by name, and sensitivities name them): what `quantize_qdq` quantizes.

    BatchNormalization is never quantized, so left in the graph it sits between two Q/DQ pairs
    that keep ONNX Runtime from fusing it into the Conv as it does in FP32: a float pass over the
    activation and one more rounding per layer. On the PP-OCR direction classifier (PaddlePaddle
    exports keep BN apart) static INT8 ran 4x faster folded and its worst probability error fell
    from 0.74 to 0.45 (bench/INT8_CPU.md). Folding is exact arithmetic, as in ONNX Runtime's own
    quantization pre-processing."""
    model = copy_model(at_least_opset(model, MIN_OPSET[precision], precision))
    _constants_to_initializers(model)
    model, _ = fold_batchnorm_into_conv(model)
    model, _ = fold_affine_into_conv(model)
    taken = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name, suffix = f"{node.op_type}_{index}", 0
        while name in taken:  # exporters use this pattern too (yolox: "Mul_295")
            suffix += 1
            name = f"{node.op_type}_{index}_{suffix}"
        node.name = name
        taken.add(name)
    return model


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes -> initializers, in place. Exporters such as paddle2onnx write every weight
    as a Constant node; the quantizer takes only initializers for weights, so a Constant weight
    would get a per-tensor activation Q/DQ (uint8 under asymmetric_u8) instead of per-channel
    int8: PP-OCR's classifier measured 6.2% error that way, against 0.5% with per-channel."""
    outputs = {output.name for output in model.graph.output}
    kept = []
    for node in model.graph.node:
        value = node.attribute[0] if len(node.attribute) == 1 else None
        if (
            node.op_type == "Constant"
            and is_default_domain(node.domain)
            and value is not None
            and value.name == "value"
            and node.output[0] not in outputs
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            kept.append(node)
    if len(kept) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(kept)


def at_least_opset(model: onnx.ModelProto, required: int, precision: str) -> onnx.ModelProto:
    """`model` at default-domain opset `required` or above (a copy when raised).

    Only the version number changes where no op's signature differs between the two opsets
    (`raise_opset_if_safe`); otherwise ONNX's version converter rewrites the ops whose
    signature changed (Split, Squeeze, ReduceSum... move attributes to inputs at 13).

    Raises:
        PrecisionError: the converter cannot bring the model to `required`.
    """
    current = _default_opset(model)
    if not model.opset_import or current >= required:
        return model
    converted, why = converted_to_opset(model, required)
    if converted is None:
        raise PrecisionError(f"{precision} needs opset {required} (the model is opset {current}) and {why}")
    return converted


def precision_unavailable(model: onnx.ModelProto, precisions: Sequence[str]) -> dict[str, str]:
    """The precisions among `precisions` this model cannot be given, each with the reason: a
    study removes them from its space at start rather than failing them trial after trial."""
    reasons = {}
    for precision in precisions:
        if precision not in MIN_OPSET or _default_opset(model) >= MIN_OPSET[precision]:
            continue
        try:
            at_least_opset(model, MIN_OPSET[precision], precision)
        except PrecisionError as exc:
            reasons[precision] = str(exc)
    return reasons


def _int8_qdq_to_fp8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Symmetric INT8 Q/DQ -> FP8 E4M3 Q/DQ: scales times 127/448, zero points FP8 zeros."""
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    rescale = np.float32(127.0 / 448.0)
    converted: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        scale_name, zero_point_name = node.input[1], node.input[2]
        for name in (scale_name, zero_point_name):
            if name in converted or name not in initializers:
                continue
            old = initializers[name]
            values = onnx.numpy_helper.to_array(old)
            if name == scale_name:
                new = onnx.numpy_helper.from_array((values * rescale).astype(values.dtype), name)
            else:
                new = onnx.helper.make_tensor(
                    name, onnx.TensorProto.FLOAT8E4M3FN, values.shape, np.zeros(values.size, np.float32)
                )
            old.CopyFrom(new)
            converted.add(name)
    onnx.checker.check_model(model)
    return model


# --- NVIDIA ModelOpt (optional) ---------------------------------------------------------------

# ModelOpt's calibrators by our names; it has no percentile calibrator (that stays with ORT's).
MODELOPT_METHODS = {"minmax": "max", "entropy": "entropy"}
QUANTIZER_KEY = "autotune.quantizer"  # metadata_props entry naming which quantizer wrote the Q/DQ


def modelopt_quantize() -> Callable[..., Any] | None:
    """ModelOpt's ONNX post-training quantizer (`modelopt.onnx.quantization.quantize`), or None
    when ModelOpt (the `modelopt` extra) is not installed or its ONNX dependencies are missing."""
    try:
        from modelopt.onnx.quantization import quantize  # lazy: ModelOpt is the optional `modelopt` extra
    except ImportError:
        return None
    return quantize


def quantize_with_modelopt(
    quantize: Callable[..., Any],
    model: onnx.ModelProto,
    precision: str,
    *,
    calibration_feeds: Sequence[dict[str, np.ndarray]],
    calibration_method: str,
) -> onnx.ModelProto:
    """Explicit INT8/FP8 Q/DQ by ModelOpt, which places Q/DQ by TensorRT's fusion rules.

    Non-quantized layers stay FP32 (`high_precision_dtype="fp32"`): reduced float precision is
    a separate knob. Calibration runs on ONNX Runtime's CPU provider, batches concatenated.
    """
    names = list(calibration_feeds[0])
    data = {name: np.concatenate([feed[name] for feed in calibration_feeds]) for name in names}
    with tempfile.TemporaryDirectory(prefix="autotune-modelopt-") as directory:
        source, target = Path(directory) / "model.onnx", Path(directory) / "quantized.onnx"
        onnx.save(model, str(source))
        quantize(
            onnx_path=str(source),
            quantize_mode=precision,
            calibration_data=data,
            calibration_method=MODELOPT_METHODS[calibration_method],
            calibration_eps=["cpu"],
            high_precision_dtype="fp32",
            output_path=str(target),
            log_level="WARNING",
        )
        quantized = onnx.load(str(target))
    _mark_quantizer(quantized, "modelopt")
    return quantized


def _mark_quantizer(model: onnx.ModelProto, name: str) -> None:
    entry = next((p for p in model.metadata_props if p.key == QUANTIZER_KEY), None) or model.metadata_props.add()
    entry.key, entry.value = QUANTIZER_KEY, name
