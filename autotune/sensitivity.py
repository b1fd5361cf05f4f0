"""Which quantized layers cost the accuracy, and the fewest to keep in float so the gate passes.

`layer_sensitivity` ranks every quantized node of a Q/DQ model by the quantization noise on its
inputs (activations and weights), measured with ONNX Runtime's QDQ debugging utilities
(`onnxruntime.quantization.qdq_loss_debug`): the signal-to-quantization-noise ratio of each
tensor before and after its Q/DQ pair, on calibration samples. `keep_float` removes the Q/DQ
pairs in front of the given nodes (they compute in float, as `nodes_to_exclude` would have
placed them, without calibrating again). `repair` finds the smallest k such that keeping the k
most sensitive nodes in float passes the accuracy gate, by bisection over k, as Polygraphy's
`debug precision` does over layers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.qdq_loss_debug import create_weight_matching

from autotune.passes.precision import apply_precision, prepare_for_quantization
from autotune.verify import Tolerance, compare_outputs

OUTPUT_PREFIX = "output:"  # names a graph output's own Q/DQ in rankings and `keep_float`
TOP_OFFENDERS = 10  # sensitivities kept with a trial and shown in the report
SENSITIVITY_SAMPLES = 4  # calibration batches the ranking runs on (intermediate tensors are big)
REPAIR_SAMPLES = 64  # batches the repair's gate checks
MIN_REPAIR_SPLIT = 4  # with at least twice this many calibration batches, the repair checks half
RANKING_CACHE_DIR = "sensitivity-cache"  # beside the trial directories: one ranking per quantized model
GEMM_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
RANKING_VERSION = b"2"  # in the cache key: rankings before 2 left every biased Conv/Gemm unmeasured


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized node: its quantization noise (relative to signal) and the worst input.

    Args:
        node (str): node name (as `nodes_to_exclude` takes it).
        op (str): op type.
        noise (float): summed noise-to-signal ratio of its quantized inputs (higher is worse).
        sqnr_db (float): the worst input's signal-to-quantization-noise ratio, in dB.
        tensor (str): that input's name.
    """

    node: str
    op: str
    noise: float
    sqnr_db: float
    tensor: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def layer_sensitivity(
    float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]
) -> list[LayerSensitivity]:
    """Every quantized node of `qdq_model`, most sensitive first.

    A node's sensitivity is the error quantization adds to its output on its own: the node runs
    once on its FP32 inputs (the float model's activations and weights) and once on the same
    inputs passed through their Q/DQ pairs, and the noise is |difference| / |float output| (norms).
    Upstream error does not leak into a node's score, so the layer that breaks comes first, not
    the layers after it. The float activations come from `qdq_loss_debug`'s intermediate-output
    model, the dequantized weights from its weight matching.

    Args:
        float_model: the model the quantizer received (its weights are the reference).
        qdq_model: its Q/DQ version.
        feeds: calibration batches (at most `SENSITIVITY_SAMPLES` are used).
    """
    samples = list(feeds)[:SENSITIVITY_SAMPLES]
    activations = _float_activations(float_model, samples)
    with tempfile.TemporaryDirectory(prefix="autotune-sensitivity-") as directory:
        float_path, qdq_path = Path(directory) / "float.onnx", Path(directory) / "qdq.onnx"
        onnx.save(float_model, str(float_path))
        onnx.save(qdq_model, str(qdq_path))
        weights = create_weight_matching(str(float_path), str(qdq_path))
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in qdq_model.graph.initializer}
    float_initializers = {i.name: onnx.numpy_helper.to_array(i) for i in float_model.graph.initializer}
    producers = {output: node for node in qdq_model.graph.node for output in node.output}
    opset = [o for o in qdq_model.opset_import]
    ranking = []
    for node in qdq_model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        float_inputs: list[list[np.ndarray] | None] = []
        quantized_inputs: list[list[np.ndarray] | None] = []
        quantized_any = False
        for name in node.input:
            source = _dequantized_source(name, producers)
            if not name:
                float_inputs.append(None)
                quantized_inputs.append(None)
                continue
            if source is None:
                values = activations.get(name) or ([initializers[name]] if name in initializers else None)
                float_inputs.append(values)
                quantized_inputs.append(values)
                continue
            original, is_weight = source
            if is_weight:
                matched = weights.get(original)
                if matched is None:
                    float_inputs.append(None)
                    break
                # (ONNX Runtime dequantizes an int32 bias in float64: the node reads the float's type)
                float_inputs.append([matched["float"]])
                quantized_inputs.append([np.asarray(matched["dequantized"]).astype(matched["float"].dtype)])
            else:
                values = activations.get(original) or (
                    [float_initializers[original]] if original in float_initializers else None
                )
                if values is None:
                    float_inputs.append(None)
                    break
                dq = producers[name]
                float_inputs.append(values)
                quantized_inputs.append([_fake_quantize(v, dq, initializers) for v in values])
            quantized_any = True
        if (
            not quantized_any
            or len(float_inputs) != len(node.input)
            or any(v is None for v, name in zip(float_inputs, node.input, strict=True) if name)
        ):
            continue
        try:
            noise = _output_noise(node, opset, float_inputs, quantized_inputs)
        except Exception:  # noqa: BLE001 - a node ONNX Runtime will not run alone (a subgraph, a custom domain)
            noise = math.nan  # unmeasured: ranked last, so keeping every layer float is all-float
        sqnr = -20 * math.log10(noise) if noise > 0 else (math.inf if noise == 0 else math.nan)
        worst = next(source[0] for name in node.input if (source := _dequantized_source(name, producers)))
        ranking.append(LayerSensitivity(node.name, node.op_type, noise, float(sqnr), worst))
    # A graph output the quantizer ends with Q/DQ is a "layer" too: nothing downstream can undo
    # its rounding (YOLOX's boxes and scores share one uint8 range at the final Concat).
    for output in qdq_model.graph.output:
        dq = producers.get(output.name)
        values = activations.get(output.name)
        if dq is None or dq.op_type != "DequantizeLinear" or not values:
            continue
        noise = relative_noise(values, [_fake_quantize(np.asarray(v), dq, initializers) for v in values])
        sqnr = -20 * math.log10(noise) if noise > 0 else math.inf
        ranking.append(LayerSensitivity(f"{OUTPUT_PREFIX}{output.name}", "output", noise, sqnr, output.name))
    # Graph outputs first: a Q/DQ on an output enables no INT8 kernel, it only rounds the result
    # (and the gate reads the output per field, where a shared range hurts most); then layers by
    # noise, unmeasured ones last.
    ranking.sort(
        key=lambda layer: (
            not layer.node.startswith(OUTPUT_PREFIX),
            -layer.noise if math.isfinite(layer.noise) else math.inf,
        )
    )
    return ranking


def _float_activations(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Every tensor of the float model (inputs and node outputs), one array per feed."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {output.name for output in augmented.graph.output}
    for node in augmented.graph.node:
        for name in node.output:
            if name and name not in present:
                augmented.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    activations: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            activations[name].append(value)
        for name, value in feed.items():
            activations.setdefault(name, []).append(value)
    return activations


def _fake_quantize(values: np.ndarray, dq: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> np.ndarray:
    """`values` through the Q/DQ pair ending in `dq` (per-tensor scale and zero point)."""
    scale = initializers[dq.input[1]].astype(np.float32)
    zero_point = initializers[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.uint8)
    dtype = zero_point.dtype
    if scale.ndim == 1 and scale.size > 1:  # per channel, along the node's axis (default 1)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % values.ndim
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape) if zero_point.size > 1 else zero_point
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        zp = zero_point.astype(np.float32)
        q = np.clip(np.round(values / scale) + zp, info.min, info.max)
        return ((q - zp) * scale).astype(np.float32)
    # FP8 (E4M3): saturate to the type's range, round to its grid.
    limit = float(ml_dtypes.finfo(dtype).max)
    q = np.clip(values / scale, -limit, limit).astype(dtype).astype(np.float32)
    return (q * scale).astype(np.float32)


def _output_noise(
    node: onnx.NodeProto,
    opset: Sequence[onnx.OperatorSetIdProto],
    float_inputs: Sequence[Sequence[np.ndarray] | None],
    quantized_inputs: Sequence[Sequence[np.ndarray] | None],
) -> float:
    """‖node(quantized inputs) − node(float inputs)‖ / ‖node(float inputs)‖ over the samples."""
    names = [f"in{i}" if name else "" for i, name in enumerate(node.input)]
    outputs = ["out"] + [f"out{i}" for i in range(1, len(node.output))]
    single = onnx.helper.make_node(node.op_type, names, outputs, domain=node.domain)
    single.attribute.extend(node.attribute)
    samples = max(len(v) for v in float_inputs if v is not None)
    first = [v[0] if v is not None else None for v in float_inputs]
    graph = onnx.helper.make_graph(
        [single],
        "layer",
        [
            onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), None)
            for n, v in zip(names, first, strict=True)
            if n and v is not None
        ],
        [onnx.ValueInfoProto(name=name) for name in outputs],
    )
    model = onnx.helper.make_model(graph, opset_imports=list(opset))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def feed(inputs: Sequence[Sequence[np.ndarray] | None], index: int) -> dict[str, np.ndarray]:
        return {
            n: np.asarray(v[min(index, len(v) - 1)]) for n, v in zip(names, inputs, strict=True) if n and v is not None
        }

    references, quantized = [], []
    for index in range(samples):
        references.append(session.run(None, feed(float_inputs, index))[0])
        quantized.append(session.run(None, feed(quantized_inputs, index))[0])
    return relative_noise(references, quantized)


def relative_noise(references: Sequence[np.ndarray], candidates: Sequence[np.ndarray]) -> float:
    """‖candidate − reference‖ / ‖reference‖, the worst of the whole tensor and of each slice
    along axis 1 (channels) and the last axis (fields): a channel or field that quantization
    wipes out (a small-range one sharing a scale with a large one, as YOLOX's scores with its
    boxes) scores ~1 even when it is a sliver of the tensor's energy (1e-7 of it for YOLOX).
    Only slices with no energy to speak of (under 1e-12 of the largest: dead channels) are
    ignored."""
    reference = np.concatenate([np.asarray(r, np.float64).reshape(1, *np.shape(r)) for r in references])
    difference = np.concatenate([np.asarray(c, np.float64).reshape(1, *np.shape(c)) for c in candidates]) - reference
    worst = math.sqrt(float(np.sum(difference**2)) / max(float(np.sum(reference**2)), 1e-30))
    for axis in {2, reference.ndim - 1} if reference.ndim >= 3 else ():
        others = tuple(a for a in range(reference.ndim) if a != axis)
        signal = np.sum(reference**2, axis=others)
        noise = np.sum(difference**2, axis=others)
        alive = signal > 1e-12 * max(float(signal.max()), 1e-30)
        if alive.any():
            worst = max(worst, float(np.sqrt(np.max(noise[alive] / signal[alive]))))
    return worst


def _dequantized_source(name: str, producers: dict[str, onnx.NodeProto]) -> tuple[str, bool] | None:
    """(the float tensor a DequantizeLinear output stands for, whether it is a weight), or None."""
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producers.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return q.input[0], False
    quantized = dq.input[0]
    return (quantized[: -len("_quantized")] if quantized.endswith("_quantized") else quantized), True


def keep_float(
    qdq_model: onnx.ModelProto, float_model: onnx.ModelProto, nodes: Sequence[str], *, fused: bool = False
) -> onnx.ModelProto:
    """A copy of `qdq_model` where the named nodes read float tensors: the DequantizeLinear in
    front of each of their inputs is bypassed (activations: the tensor its QuantizeLinear read;
    weights and biases: the float initializer of `float_model`), then unused Q/DQ are removed.

    With `fused`, a named node still reads the rounded output of a Conv/ConvTranspose/Gemm/MatMul
    that stays quantized: ONNX Runtime runs DQ -> Conv -> Q as one INT8 kernel only while that Q
    is there, and bypassing it made the convolution float in all but name (bench/PRECISION.md)."""
    keep = set(nodes)
    model = onnx.ModelProto()
    model.CopyFrom(qdq_model)
    producers = {output: node for node in model.graph.node for output in node.output}
    present = {initializer.name for initializer in model.graph.initializer}
    float_initializers = {initializer.name: initializer for initializer in float_model.graph.initializer}
    for name in keep:
        if name.startswith(OUTPUT_PREFIX):
            _unquantize_output(model, name[len(OUTPUT_PREFIX) :], producers)
    for node in model.graph.node:
        if node.name not in keep:
            continue
        for index, name in enumerate(node.input):
            source = _dequantized_source(name, producers)
            if source is None:
                continue
            original, is_weight = source
            producer = producers.get(original)
            if fused and producer is not None and producer.op_type in GEMM_OPS and producer.name not in keep:
                continue  # a quantized GEMM's output: its Q stays, so the GEMM stays an INT8 kernel
            if is_weight:
                if original not in float_initializers:
                    continue  # a tensor the quantizer made itself: leave its Q/DQ
                float_name = original if original not in producers else f"{original}_float"
                if float_name not in present:  # (ONNX Runtime names a bias's DQ output as the bias)
                    initializer = onnx.TensorProto()
                    initializer.CopyFrom(float_initializers[original])
                    initializer.name = float_name
                    model.graph.initializer.append(initializer)
                    present.add(float_name)
                original = float_name
            node.input[index] = original
    return _without_unused_nodes(model)


def _unquantize_output(model: onnx.ModelProto, output: str, producers: dict[str, onnx.NodeProto]) -> None:
    """Let the node before a graph output's Q/DQ pair write the output itself."""
    dq = producers.get(output)
    q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    if dq is None or q is None or q.op_type != "QuantizeLinear" or q.input[0] not in producers:
        return
    source = q.input[0]
    dq.output[0] = f"{output}_unused_dequantized"
    for node in model.graph.node:
        node.output[:] = [output if name == source else name for name in node.output]
        if node is not q:
            node.input[:] = [output if name == source else name for name in node.input]
    q.input[0] = output


def _without_unused_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    used = {output.name for output in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(output in used for output in node.output):
            kept.append(node)
            used.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    initializers = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    return model


@dataclass(frozen=True)
class Repair:
    """The outcome of `repair`: how many of the ranked nodes stay float, which, and the model.

    Args:
        kept_float (list): node names computing in float, most sensitive first.
        model (onnx.ModelProto): the repaired model.
        passed (bool): whether it passes the gate (False: even all-float did not).
        checks (int): gate evaluations the bisection made.
        bisected (dict): order ("ranking", "graph") -> the float layers its bisection needed
            (None: even all of them float failed), before the give-back.
    """

    kept_float: list[str]
    model: onnx.ModelProto
    passed: bool
    checks: int
    bisected: dict[str, int | None] = field(default_factory=dict)


def repair(
    qdq_model: onnx.ModelProto,
    float_model: onnx.ModelProto,
    ranking: Sequence[LayerSensitivity],
    passes: Callable[[onnx.ModelProto], bool],
    *,
    always_float: Sequence[str] = (),
    fused: bool = False,
    passes_with_margin: Callable[[onnx.ModelProto], bool] | None = None,
) -> Repair:
    """The fewest float layers that pass `passes`, and that model: the smallest k such that
    `keep_float(always_float + order[:k])` passes, bisected (assuming more float never hurts) in
    two orders, the sensitivity `ranking` and the graph's order from its inputs (`graph_order`),
    and the smaller of the two taken. The fully quantized model is checked first (nothing kept
    float when it passes), then `always_float` alone (k = 0). `fused` is `keep_float`'s.
    `give_back` then returns float layers to INT8 while `passes_with_margin` (default:
    `passes`) still holds.

    The graph's order is there because a layer's own quantization noise (the ranking) misses how
    much the layers after it amplify it, and a float prefix leaves one boundary between float and
    INT8 where a ranked set leaves many, each a DQ/Q pair. Measured (bench/INT8_CPU.md, float
    layers each bisection needed): ddddocr's recognizer, percentile calibration, ranking 46 and
    graph 44 of 61 (the repair then passed held-out lines with 32 INT8, where it had failed with
    25); minmax, 45 and 61; PP-OCRv4's recognizer, 306 and 323 of 323: there the prefix does not
    help, and costs the bisection's log2(n) checks."""
    by_rank = [layer.node for layer in ranking]

    def build(chosen: Sequence[str]) -> onnx.ModelProto:
        return keep_float(qdq_model, float_model, [*always_float, *chosen], fused=fused)

    checks = 1
    if passes(qdq_model):
        return Repair([], qdq_model, True, checks)
    if always_float:
        checks += 1
        start = build([])
        if passes(start):
            return Repair(list(always_float), start, True, checks)
    found: list[tuple[int, list[str], onnx.ModelProto | None]] = []
    bisected: dict[str, int | None] = {}
    in_graph = graph_order(by_rank, float_model)
    for label, names in (("ranking", by_rank), ("graph", in_graph)):
        if label == "graph" and in_graph == by_rank:
            bisected[label] = bisected["ranking"]
            continue
        high, best, spent = _smallest_passing_prefix(names, build, passes)
        checks += spent
        found.append((high, names, best))
        bisected[label] = high if best is not None else None
    # a passing one, fewest float; on a tie the ranking's
    high, names, best = min(found, key=lambda item: (item[2] is None, item[0]))
    if best is None:
        return Repair([*always_float, *names[:high]], build(names[:high]), False, checks, bisected)
    floated, model, spent = give_back(names[:high], build, passes_with_margin or passes)
    return Repair([*always_float, *floated], model or best, True, checks + spent, bisected)


def _smallest_passing_prefix(
    names: Sequence[str], build: Callable[[Sequence[str]], onnx.ModelProto], passes: Callable[[onnx.ModelProto], bool]
) -> tuple[int, onnx.ModelProto | None, int]:
    """(k, the model with `names[:k]` float, gate checks): bisection for the smallest passing k,
    the empty prefix known to fail; the model is None when even all of `names` float fails."""
    low, high, best, checks = 0, len(names), None, 0  # low fails; high is all-float, assumed to pass
    while high - low > 1:
        middle = (low + high) // 2
        candidate = build(names[:middle])
        checks += 1
        if passes(candidate):
            high, best = middle, candidate
        else:
            low = middle
    if best is None:
        best, checks = build(names[:high]), checks + 1
        if not passes(best):
            return high, None, checks
    return high, best, checks


def graph_order(names: Sequence[str], model: onnx.ModelProto) -> list[str]:
    """`names` (nodes, and graph outputs' `OUTPUT_PREFIX` Q/DQ) in the order of `model`'s nodes,
    the outputs' Q/DQ first, as in the ranking (floating an output's Q/DQ costs no kernel)."""
    position = {node.name: index for index, node in enumerate(model.graph.node)}
    return sorted(names, key=lambda name: -1 if name.startswith(OUTPUT_PREFIX) else position.get(name, len(position)))


GIVE_BACK_CHECKS = 16  # gate evaluations a repair may spend returning float layers to INT8
# The share of each limit's room a layer given back must leave (`Tolerance.tightened`): the gate
# sees the calibration samples only, and a repair given back up to the limit itself fails held-out
# samples more often. On the recognizers of bench/INT8_CPU.md it changed nothing (2026-12-07: the
# same layer counts were given back with it as without it, and the same held-out lines failed).
GIVE_BACK_MARGIN = 0.5


def give_back(
    floated: Sequence[str],
    build: Callable[[list[str]], onnx.ModelProto],
    passes: Callable[[onnx.ModelProto], bool],
    budget: int = GIVE_BACK_CHECKS,
) -> tuple[list[str], onnx.ModelProto | None, int]:
    """Returns to INT8 the float layers the gate does not need, after the bisection.

    The bisection keeps a prefix of the sensitivity ranking float, and the ranking is a proxy
    (each layer's own quantization noise), not the output's judge: on PP-OCRv4's recognizer the
    prefix that passed kept 306 of 323 layers float, and one early block's layers were most of
    the damage. Runs of the floated layers, least sensitive first, are given back to INT8 while
    the gate still passes, the run length halving after each sweep (group testing), for at most
    `budget` gate checks.

    Returns:
        (layers still float, most sensitive first; the last passing model, or None when nothing
        was given back; gate checks spent).
    """
    outputs = [name for name in floated if name.startswith(OUTPUT_PREFIX)]  # an output's Q/DQ buys no kernel
    kept, model, checks = [name for name in floated if name not in outputs], None, 0
    size = len(kept) // 2
    while size >= 1 and checks < budget:
        end = len(kept)
        while end > 0 and checks < budget:
            start = max(0, end - size)
            trial = outputs + kept[:start] + kept[end:]
            checks += 1
            candidate = build(trial)
            if passes(candidate):
                kept, model = kept[:start] + kept[end:], candidate
            end = start
        size //= 2
    return outputs + kept, model, checks


KEEP_FLOAT_KNOB = "keep_float_layers"  # pipeline knob: 0, k, "auto", "non_gemm", "non_gemm_auto", "gemm_auto"
NON_GEMM = "non_gemm"  # every layer but Conv/ConvTranspose/Gemm/MatMul float
NON_GEMM_AUTO = "non_gemm_auto"  # non_gemm, then the fewest most-sensitive GEMM layers float that pass
GEMM_AUTO = "gemm_auto"  # full INT8 but the fewest most-sensitive GEMM layers float that pass


def quantize_mixed(
    model: onnx.ModelProto,
    precision: str,
    *,
    calibration_feeds: Sequence[dict[str, np.ndarray]],
    scheme: str = "symmetric",
    calibration_method: str = "minmax",
    keep: int | str = 0,
    tolerance: Tolerance | None = None,
    ranking_cache: Path | None = None,
    repair_feeds: Sequence[dict[str, np.ndarray]] | None = None,
) -> tuple[onnx.ModelProto, dict[str, object]]:
    """INT8/FP8 Q/DQ with some layers left in float, and what was measured on the way.

    The whole graph is quantized; when `keep` needs them, its layers are ranked
    (`layer_sensitivity`, on the calibration feeds) and `keep` decides how many of the most
    sensitive stay float: an int k, or "auto", the smallest k whose model passes `tolerance`
    against the float model on the calibration feeds (`repair`; the trial's own verification
    stays on held-out samples). The final model is quantized again with ONNX Runtime's
    `nodes_to_exclude` naming those layers, and the Q/DQ that quantized neighbours still place on
    their inputs are bypassed (`keep_float`).

    The ranking costs seconds per layer set (10-20 s on a 640x640 detector), so a fully quantized
    model (`keep` 0) is not ranked: it needs no ranking, and its details carry one only when
    `ranking_cache` already holds it. With `ranking_cache` (a directory), a ranking is computed once
    per quantized model and calibration set and read back by every later trial that quantizes the
    same graph on the same feeds (the key is a digest of the three, so a hit is the same answer).

    `keep` = "non_gemm" ranks nothing: every layer but Conv/ConvTranspose/Gemm/MatMul stays float.
    `keep` = "non_gemm_auto" is the repair for speed on ONNX Runtime's CPU kernels: the fully
    quantized graph if it passes, else `non_gemm` (its GEMM layers fused INT8 kernels), else that
    with the fewest most-sensitive GEMM layers float too (`repair` with `always_float`, `fused`);
    the model returned is the one checked (no second quantization). `keep` = "gemm_auto" is the
    same repair from the fully quantized graph: only GEMM layers are floated, every other layer
    stays INT8.

    Args:
        keep: 0 (default), a count, "auto", "non_gemm", "non_gemm_auto" or "gemm_auto".
        tolerance: the gate "auto" repairs to (default `Tolerance()`).
        ranking_cache: a directory for rankings shared between trials (created); default None.
        repair_feeds: the samples the repair's gate is checked on; default None: for the
            repairs, every second calibration batch (the quantizer calibrates on the others),
            or the calibration batches themselves when there are fewer than 8.

    Returns:
        (model, details): details has "quantized_layers" and "kept_float" (node names); when a
        ranking exists, "sensitivity" (the `TOP_OFFENDERS` worst layers) and "ranking_cached"
        (whether it was read from `ranking_cache`); for "auto", "non_gemm_auto" and "gemm_auto",
        "repair_passed" and "repair_checks"; for the last two, "kept_float_gemm" (the GEMM layers
        among "kept_float").
    """
    if keep not in ("auto", NON_GEMM, NON_GEMM_AUTO, GEMM_AUTO) and (not str(keep).isdigit()):
        raise ValueError(
            f"{KEEP_FLOAT_KNOB} {keep!r}: expected a count >= 0, 'auto', '{NON_GEMM}', '{NON_GEMM_AUTO}' or '{GEMM_AUTO}'"
        )
    prepared = prepare_for_quantization(model, precision)
    repairing = keep in ("auto", NON_GEMM_AUTO, GEMM_AUTO)
    if repairing and repair_feeds is None and len(calibration_feeds) >= 2 * MIN_REPAIR_SPLIT:
        # The repair judges its gate on samples the quantizer did not calibrate on: checked on its
        # own calibration samples, ddddocr's recognizer repaired to CER <= 1% read 1.8% on
        # held-out lines (its scales fit those samples); checked on the other half, 0.9%.
        feeds = list(calibration_feeds)
        calibration_feeds, repair_feeds = feeds[0::2], feeds[1::2]
    options: dict[str, Any] = {
        "calibration_feeds": calibration_feeds,
        "scheme": scheme,
        "calibration_method": calibration_method,
    }
    if keep == NON_GEMM:
        # Only the GEMM-like layers in INT8. On ONNX Runtime's CPU kernels a partly float chain of
        # element-wise layers costs DQ/Q pairs and QLinear kernels that are no faster than float:
        # PP-OCRv4's text detector ran 1.38x FP32 this way (full INT8 1.4-1.5x) but 0.83x with 94
        # of its Adds/Muls float (a repair) (bench/PRECISION.md).
        names = [node.name for node in prepared.graph.node if node.op_type not in GEMM_OPS and node.name]
        quantized = apply_precision(prepared, precision, **options, keep_float=names)
        gemms = sum(1 for node in prepared.graph.node if node.op_type in GEMM_OPS)
        return quantized, {"kept_float": names, "quantized_layers": len(names) + gemms}  # (of the graph's nodes)
    needs_ranking = repairing or int(keep) > 0
    quantized = apply_precision(prepared, precision, **options)
    cache_file = (
        Path(ranking_cache) / f"{_ranking_key(prepared, quantized, calibration_feeds)}.json"
        if ranking_cache is not None
        else None
    )
    ranking = _read_ranking(cache_file)
    details: dict[str, object] = {"kept_float": [], "ranking_cached": ranking is not None}
    if ranking is None and needs_ranking:
        ranking = layer_sensitivity(prepared, quantized, calibration_feeds)
        _write_ranking(cache_file, ranking)
    if ranking is None:
        details["quantized_layers"] = _quantized_layer_count(quantized)
        return quantized, details
    details["sensitivity"] = [layer.as_dict() for layer in ranking[:TOP_OFFENDERS]]
    details["quantized_layers"] = len(ranking)
    if repairing:
        run_float = _runner(prepared)
        gate = tolerance if tolerance is not None else Tolerance()
        check = list(repair_feeds if repair_feeds is not None else calibration_feeds)[:REPAIR_SAMPLES]
        check_feeds, references = _gate_batches(run_float, check, gate)

        def gated(tolerance: Tolerance) -> Callable[[onnx.ModelProto], bool]:
            def passes(candidate: onnx.ModelProto) -> bool:
                run = _runner(candidate)
                return all(
                    compare_outputs(run(feed), reference, tolerance).passed
                    for feed, reference in zip(check_feeds, references, strict=True)
                )

            return passes

        passes, with_margin = gated(gate), gated(gate.tightened(GIVE_BACK_MARGIN))

        if keep in (NON_GEMM_AUTO, GEMM_AUTO):
            # Speed first: the fully quantized graph; else (non_gemm_auto) only the GEMM layers in
            # INT8, their INT8 kernels kept fused (`fused`); else also the fewest most-sensitive
            # GEMM layers float. Calibrated once: every candidate is the same Q/DQ graph with
            # bypasses. A graph output's own Q/DQ ranks with the GEMM layers, by its noise (not
            # first, as in `layer_sensitivity`): when a GEMM writes the output, that Q makes it an
            # INT8 kernel.
            ranked = {layer.node for layer in ranking}  # the quantized layers
            always = [node.name for node in prepared.graph.node if node.op_type not in GEMM_OPS and node.name in ranked]
            if keep == GEMM_AUTO:
                always = []
            gemm_ranking = sorted(
                (layer for layer in ranking if layer.op in GEMM_OPS or layer.node.startswith(OUTPUT_PREFIX)),
                key=lambda layer: -layer.noise if math.isfinite(layer.noise) else math.inf,
            )
            repaired = repair(
                quantized, prepared, gemm_ranking, passes, always_float=always, fused=True,
                passes_with_margin=with_margin,
            )  # fmt: skip
            details["kept_float"] = repaired.kept_float
            elementwise = set(always)
            details["kept_float_gemm"] = [name for name in repaired.kept_float if name not in elementwise]
            details["repair_passed"], details["repair_checks"] = repaired.passed, repaired.checks
            details["repair_bisected"] = repaired.bisected
            _mostly_float(details)
            return repaired.model, details
        repaired = repair(quantized, prepared, ranking, passes, passes_with_margin=with_margin)
        names = repaired.kept_float
        details["repair_passed"], details["repair_checks"] = repaired.passed, repaired.checks
        details["repair_bisected"] = repaired.bisected
        details["kept_float"] = names
        _mostly_float(details)
    else:
        names = [layer.node for layer in ranking[: int(keep)]]
    details["kept_float"] = names
    if names:
        # nodes_to_exclude leaves a node unquantized, but a quantized producer's output Q/DQ still
        # feeds it: `keep_float` bypasses those too, so the model is the one the repair checked.
        layers = [name for name in names if not name.startswith(OUTPUT_PREFIX)]
        quantized = keep_float(apply_precision(prepared, precision, **options, keep_float=layers), prepared, names)
    return quantized, details


# A repair that keeps more than this share of the quantizable layers float is a float model
# with Q/DQ decorations: reported as "float, not INT8", never as a successful repair.
MOSTLY_FLOAT = 0.9


def _mostly_float(details: dict[str, object]) -> None:
    """Marks `details` "float, not INT8" when the repair kept over `MOSTLY_FLOAT` of the layers float."""
    kept = details.get("kept_float") or []
    total = details.get("quantized_layers") or 0
    share = len(kept) / total if isinstance(kept, list) and isinstance(total, int) and total else 0.0
    details["float_share"] = share
    if share > MOSTLY_FLOAT:
        details["mostly_float"] = True
        details["repair_passed"] = False


def _ranking_key(
    float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]
) -> str:
    """What `layer_sensitivity` depends on, digested: both models and the feeds it ranks on."""
    digest = hashlib.sha256(RANKING_VERSION)
    digest.update(float_model.SerializeToString())
    digest.update(qdq_model.SerializeToString())
    for feed in list(feeds)[:SENSITIVITY_SAMPLES]:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def _read_ranking(path: Path | None) -> list[LayerSensitivity] | None:
    if path is None:
        return None
    try:
        return [LayerSensitivity(**layer) for layer in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):  # absent, or written by another version: rank again
        return None


def _write_ranking(path: Path | None, ranking: Sequence[LayerSensitivity]) -> None:
    """Atomically (trials in parallel may write the same key; either copy is the same ranking)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps([layer.as_dict() for layer in ranking]))
        os.replace(partial, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next trial the ranking again


def _quantized_layer_count(qdq_model: onnx.ModelProto) -> int:
    """Nodes reading a DequantizeLinear output, plus graph outputs written by one: what a ranking
    would list, without computing it."""
    dequantized = {out for node in qdq_model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    nodes = sum(
        1
        for node in qdq_model.graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized.intersection(node.input)
    )
    return nodes + sum(1 for output in qdq_model.graph.output if output.name in dequantized)


def _gate_batches(
    run_float: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    feeds: list[dict[str, np.ndarray]],
    gate: Tolerance,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The feeds the repair's gate judges, and the float outputs on them. A task metric reads the
    calibration set as one batch where the model takes it, as the trial's verification reads its
    samples: a character error rate or an AP judged one sample at a time fails on a single
    character or box (it floated most of a recognizer). The error gates, and a model that will not
    take the batch, judge each feed (every one must pass)."""
    if gate.metric and len(feeds) > 1 and all(feed.keys() == feeds[0].keys() for feed in feeds):
        try:
            stacked = {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}
            return [stacked], [run_float(stacked)]
        except Exception:  # noqa: BLE001 - shapes differ, or a fixed batch: judged one by one
            pass
    return feeds, [run_float(feed) for feed in feeds]


def _runner(model: onnx.ModelProto) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """One ONNX Runtime CPU session of `model`: feed -> outputs by name."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(names, feed), strict=True))


__all__ = [
    "KEEP_FLOAT_KNOB",
    "NON_GEMM",
    "NON_GEMM_AUTO",
    "GEMM_AUTO",
    "RANKING_CACHE_DIR",
    "LayerSensitivity",
    "Repair",
    "keep_float",
    "layer_sensitivity",
    "quantize_mixed",
    "repair",
]
