"""Where the time goes: a per-layer profile of the defaults and of the study's answer, with
diagnoses of the seed's slow patterns.

Taken once per configuration after the search, never inside a timed measurement (a profiler
slows every node down by its own bookkeeping), by the study's target (`Target.layer_profile`):

- ONNX Runtime: its built-in profiler over a few warm runs, per node
  (`autotune.targets._onnxruntime_profile`).
- TensorRT / TensorRT-RTX: the layer table the target recorded at build, always; per-layer times
  through TensorRT's `IProfiler` only where a GPU runs the engine
  (`autotune.targets._tensorrt_profile`).

Time is grouped by op class (`OP_CLASSES`); the GEMM-class share is the part of the time in
convolutions and matrix multiplies, what a well-tuned engine spends ≥ 90% of its GPU time on.
`diagnose` names the nodes of each seed pattern and the pass or knob that addresses it, and
`search_status` says whether the search tried it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from autotune.errors import AutotuneError, UsageError
from autotune.layout import PROFILE_FILE
from autotune.passes.reduce import REDUCE_OPS

if TYPE_CHECKING:
    import optuna

    from autotune.targets.base import Target

TOP_NODES = 10
# Profiled runs: at least MIN_RUNS and MIN_PROFILE_S of them after WARMUP_RUNS, at most MAX_RUNS.
WARMUP_RUNS = 3
MIN_RUNS = 10
MIN_PROFILE_S = 0.3
MAX_RUNS = 200
# A data-movement share above this in the answer's profile is worth a diagnosis.
DATA_MOVEMENT_NOTE_SHARE = 0.15

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
LOW_PRECISIONS = ("fp16", "bf16", "int8", "fp8")


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


# ---------------------------------------------------------------- diagnoses


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose unnamed nodes are named `node_of_<first output>` (TensorRT's parser names
    them the same way), so that a pass's touched nodes can be named."""
    from autotune.passes._graph import copy_model

    named = copy_model(model)
    seen: set[str] = set()
    for index, node in enumerate(named.graph.node):
        if not node.name or node.name in seen:
            node.name = f"node_of_{node.output[0]}" if node.output and node.output[0] else f"{node.op_type}_{index}"
        seen.add(node.name)
    return named


def _signature(node: onnx.NodeProto) -> tuple:
    attrs = tuple(sorted((a.name, a.SerializeToString()) for a in node.attribute))
    return node.op_type, tuple(node.input), tuple(node.output), attrs


def touched_nodes(before: onnx.ModelProto, after: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of `before` that `after` removed or changed (inputs, outputs, attributes), by name."""
    now = {node.name: _signature(node) for node in after.graph.node}
    return [node for node in before.graph.node if now.get(node.name) != _signature(node)]


# (kind, pass, op types whose touched nodes are named (None: all), title, why it is slow)
PASS_DIAGNOSES: tuple[tuple[str, str, frozenset[str] | None, str, str], ...] = (
    (
        "redundant_transposes",
        "remove_redundant_transposes",
        frozenset({"Transpose"}),
        "redundant Transpose pair",
        "Transposes that cancel out (directly or across element-wise ops): each is a full copy, "
        "and on TensorRT a shuffle that breaks Conv+activation fusion",
    ),
    (
        "batchnorm_not_folded",
        "fold_batchnorm_into_conv",
        frozenset({"BatchNormalization", "Conv", "ConvTranspose", "Gemm"}),
        "BatchNorm not folded into its Conv",
        "an extra pass over the activation; folded, the Conv+bias+ReLU pattern fuses",
    ),
    (
        "decomposed_layernorm",
        "fuse_layernorm",
        None,
        "decomposed LayerNorm",
        "nine element-wise/reduce kernels instead of one fused normalization (and FP16 overflow "
        "risk in Pow/ReduceMean)",
    ),
    (
        "decomposed_groupnorm",
        "fuse_groupnorm",
        None,
        "decomposed GroupNorm",
        "two shuffles, a normalization and two element-wise kernels instead of one",
    ),
    (
        "decomposed_gelu",
        "fuse_gelu",
        None,
        "decomposed GELU",
        "five element-wise kernels over the MLP's widest activation instead of a GEMM epilogue",
    ),
    (
        "matmul_4d",
        "reshape_4d_matmul_to_2d",
        frozenset({"MatMul"}),
        "4-D MatMul against a 2-D weight",
        "planned as a batched matrix multiply (worse tactics, no bias/activation fusion) where one 2-D GEMM would do",
    ),
    (
        "reduce_not_last_axis",
        "move_reduce_axis_last",
        REDUCE_OPS,
        "reduction over a non-last axis",
        "a strided read; reductions are fastest over the innermost, contiguous axis",
    ),
    (
        "gemm_not_aligned",
        "pad_matmul_to_multiple",
        frozenset({"MatMul", "Gemm"}),
        "MatMul/Gemm with K or N not a multiple of 8",
        "Tensor Core GEMMs under FP16 need K and N aligned to 8; unaligned ones fall back to "
        "slower or padded-at-run-time kernels",
    ),
)


def _describe(nodes: Sequence[onnx.NodeProto], limit: int = 12) -> list[str]:
    names = [f"{n.op_type} {n.name}" for n in nodes]
    return names if len(names) <= limit else [*names[:limit], f"... {len(names) - limit} more"]


def diagnose(model: onnx.ModelProto, *, precision: str = "fp32", gpu: bool = False) -> list[dict[str, Any]]:
    """The seed's slow patterns in `model`, each naming its nodes and the knob that addresses it.

    Each graph pass is applied alone to a copy; its rewrite count and the nodes it removed or
    changed are the match (the passes are the pattern matchers). The alignment of K and N
    matters only under FP16/BF16/INT8/FP8 (`precision`) or on a GPU target (`gpu`), where such
    precisions are in reach. Under a low precision, the nodes still computing in FP32 are
    listed too.

    Returns:
        [{"kind", "title", "why", "nodes": ["Op name", ...], "count", "knob"}]
    """
    from autotune.passes import PASSES

    named = _named(model)
    chained = named  # the model after every earlier pass, in canonical order
    found = []
    by_pass = {d[1]: d for d in PASS_DIAGNOSES}
    for pass_name, graph_pass in PASSES.items():
        diagnosis = by_pass.get(pass_name)
        try:
            # Alone first; else after the earlier passes (fuse_gelu can raise the opset only
            # once fuse_layernorm removed the ReduceMeans), as `inert_passes` decides.
            before, (after, count) = named, graph_pass(named) if diagnosis else (named, 0)
            if diagnosis and not count and chained is not named:
                before, (after, count) = chained, graph_pass(chained)
            chained = graph_pass(chained)[0]
        except Exception as exc:  # noqa: BLE001 - a pass that cannot run here diagnoses nothing
            logging.getLogger("autotune").info("diagnosis by %s skipped: %s", pass_name, exc)
            continue
        if diagnosis is None or not count:
            continue
        kind, _, ops, title, why = diagnosis
        if kind == "gemm_not_aligned" and not (gpu or precision in LOW_PRECISIONS):
            continue
        nodes = [n for n in touched_nodes(before, after) if ops is None or n.op_type in ops]
        found.append(
            {
                "kind": kind,
                "title": title,
                "why": why,
                "nodes": _describe(nodes),
                "count": int(count),
                "knob": f"pass.{pass_name}",
            }
        )
    left = left_in_fp32(named, precision)
    if left:
        found.append(left)
    return found


def left_in_fp32(model: onnx.ModelProto, precision: str) -> dict[str, Any] | None:
    """Under fp16/bf16: compute nodes whose outputs are still FP32; under int8/fp8: GEMM-class
    nodes with no DequantizeLinear feeding them (not quantized). None when there are none."""
    if precision not in LOW_PRECISIONS:
        return None
    if precision in ("fp16", "bf16"):
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001
            inferred = model
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
        skip = {"Cast", "CastLike", "Constant", "Shape", "Size", "Identity"}
        nodes = [
            n
            for n in model.graph.node
            if n.op_type not in skip and any(types.get(o) == onnx.TensorProto.FLOAT for o in n.output)
        ]
        why = (
            "the precision pass keeps its block list (autotune.passes.precision.DEFAULT_FP32_BLOCK_LIST: "
            "reductions, normalizations) and ops without a low-precision kernel in FP32"
        )
    else:
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        nodes = [
            n
            for n in model.graph.node
            if op_class(n.op_type) == "gemm"
            and n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")
            and producers.get(n.input[0]) != "DequantizeLinear"
        ]
        why = "the quantizer left these GEMM-class nodes unquantized (no Q/DQ on their input)"
    if not nodes:
        return None
    by_op: dict[str, int] = {}
    for node in nodes:
        by_op[node.op_type] = by_op.get(node.op_type, 0) + 1
    ops = ", ".join(f"{op} x{count}" for op, count in sorted(by_op.items(), key=lambda kv: -kv[1]))
    return {
        "kind": "left_in_fp32",
        "title": f"layers left in FP32 under {precision}",
        "why": f"{why}: {ops}",
        "nodes": _describe(nodes),
        "count": len(nodes),
        "knob": "precision",
    }


def search_status(study: optuna.Study, knob: str, value: Any = True) -> dict[str, Any]:
    """Whether the search tried `knob=value`: how many complete trials ran it, which of them
    were feasible, whether the answer has it, or why the knob was dropped before the search."""
    import optuna

    dropped = (study.user_attrs.get("dropped_knobs") or {}).get(knob)
    trials = study.get_trials(deepcopy=False)
    in_space = any(knob in t.params for t in trials)
    complete = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.params.get(knob) == value
        and "duplicate_of" not in t.user_attrs
    ]
    feasible = [t.number for t in complete if all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))]
    from autotune.answer import chosen_trial

    best = chosen_trial(study)
    return {
        "knob": knob,
        "value": value,
        "in_space": in_space,
        "dropped": dropped,
        "tried_trials": [t.number for t in complete],
        "feasible_trials": feasible,
        "in_answer": best is not None and best.params.get(knob) == value,
        "measured": not study.user_attrs.get("build_only"),
    }


def status_phrase(status: Mapping[str, Any] | None, *, label: bool = True) -> str:
    """`search_status` in words (`label`: starting with the knob's name)."""
    if not status:
        return "not a searched knob"
    value = status["value"]
    name = (status["knob"] if value is True else f"{status['knob']}={value}") + " " if label else ""
    if status.get("dropped"):
        return f"{name}dropped before the search ({status['dropped']})"
    tried = status.get("tried_trials") or []
    if not tried:
        return (
            f"{name}never tried (in the search space)" if status.get("in_space") else f"{name}not in the search space"
        )
    feasible = status.get("feasible_trials") or []
    shown = ", ".join(map(str, tried[:8])) + (" ..." if len(tried) > 8 else "")
    answer = "the answer has it" if status.get("in_answer") else "the answer does not have it"
    plural = "trial" if len(tried) == 1 else "trials"
    if not status.get("measured", True):
        return f"{name}built in {len(tried)} {plural} ({shown}); {answer}"
    return f"{name}tried in {len(tried)} {plural} ({shown}), {len(feasible)} within tolerance; {answer}"


# ---------------------------------------------------------------- a study


def _trial_inputs(
    study: optuna.Study, trial: optuna.trial.FrozenTrial
) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """The trial's model (regenerated when pruned), configuration and feeds at its batch."""
    from autotune.model import feeds_at_batch
    from autotune.report import INPUTS_FILE, regenerate_model
    from autotune.trial import MODEL_FILE

    study_dir = Path(study.user_attrs["study_dir"])
    trial_dir = study_dir / "trials" / str(trial.number)
    model = trial_dir / MODEL_FILE
    if not model.exists():
        model = regenerate_model(study, trial, trial_dir)
    with np.load(study_dir / INPUTS_FILE) as data:
        pool = {k: data[k] for k in data.files}
    dynamic = bool(study.user_attrs.get("dynamic_batch"))
    batch = int(trial.user_attrs.get("batch_size", trial.params.get("batch_size", 1))) if dynamic else 1
    return model, dict(trial.params), feeds_at_batch(pool, batch, dynamic)


def _study_target(study: optuna.Study) -> Target:
    """The study's target, constructed as its trials ran (build-only or not)."""
    from autotune.targets import target_class
    from autotune.targets.base import TargetOptions

    name = str(study.user_attrs.get("target"))
    try:
        cls = target_class(name)
    except UsageError as exc:  # a plugin not importable here
        raise ProfileError(f"target {name!r}: no profiler here ({exc})") from None
    study_dir = Path(study.user_attrs["study_dir"])
    return cls(TargetOptions(cache_dir=study_dir, build_only=bool(study.user_attrs.get("build_only"))))


def profile_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The profile of one trial of `study` on its target (`Target.layer_profile`).

    Raises:
        ProfileError: the target has no profiler, or the trial cannot be profiled.
    """
    from autotune.answer import details
    from autotune.report import trial_layers
    from autotune.targets.base import Built

    model_path, config, feeds = _trial_inputs(study, trial)
    target = _study_target(study)
    study_dir = Path(study.user_attrs["study_dir"])
    # The build as the trial left it: its artifact (the model when pruned or when the target has
    # none) and its facts, with the layer table only metrics.json keeps.
    info = {**details(trial).get("build", {}), "layers": trial_layers(study_dir, trial.number)}
    artifact = target.trial_artifact(study_dir / "trials" / str(trial.number)) or model_path
    built = Built(artifact=artifact, info=info, digest=trial.user_attrs.get("digest", ""))
    profile = target.layer_profile(built, model_path, config, feeds)
    if profile is None:
        raise ProfileError(f"target {target.name!r}: no profiler (its Target.layer_profile returns None)")
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    return {"trial": trial.number, "batch_size": int(batch), "config": config, **profile}


def moved(defaults: Mapping[str, Any], best: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults vs best: time by class and by op type before and after (timed profiles), or
    node counts by class (untimed)."""
    timed = bool(defaults.get("timed")) and bool(best.get("timed"))
    if not timed:
        return {
            "timed": False,
            "count_by_class": {
                c: [defaults.get("count_by_class", {}).get(c, 0), best.get("count_by_class", {}).get(c, 0)]
                for c in OP_CLASSES
            },
        }

    def by_op(profile: Mapping[str, Any]) -> dict[str, float]:
        totals: dict[str, float] = {}
        for node in profile.get("nodes", []):
            totals[node["op_type"]] = totals.get(node["op_type"], 0.0) + float(node.get("time_ms") or 0.0)
        return totals

    before, after = by_op(defaults), by_op(best)
    ops: list[dict[str, Any]] = [
        {"op_type": op, "defaults_ms": before.get(op, 0.0), "best_ms": after.get(op, 0.0)}
        for op in set(before) | set(after)
    ]
    for row in ops:
        row["delta_ms"] = row["best_ms"] - row["defaults_ms"]
    ops.sort(key=lambda r: -abs(r["delta_ms"]))
    return {
        "timed": True,
        "total_ms": [defaults["total_ms"], best["total_ms"]],
        "run_ms": [defaults.get("run_ms"), best.get("run_ms")],
        "gemm_share": [defaults["gemm_share"], best["gemm_share"]],
        "by_class_ms": {c: [defaults["by_class_ms"][c], best["by_class_ms"][c]] for c in OP_CLASSES},
        "by_op_type": ops[:TOP_NODES],
    }


def _gpu_target(study: optuna.Study) -> bool:
    """Whether the study's target runs its candidates on a GPU (asked as if measuring: a
    build-only TensorRT study still tunes for one)."""
    from autotune.targets import target_class
    from autotune.targets.base import TargetOptions

    return target_class(str(study.user_attrs.get("target"))).needs_gpu(TargetOptions(build_only=False))


def study_diagnoses(
    study: optuna.Study,
    zero: optuna.trial.FrozenTrial,
    best: optuna.trial.FrozenTrial | None,
    profiles: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Diagnoses on the defaults' model and on the answer's model: each with the knob's
    `search_status` and whether it is still present in the answer."""
    gpu = _gpu_target(study)
    study_dir = Path(study.user_attrs["study_dir"])
    found: dict[str, dict[str, Any]] = {}
    for role, trial in (("defaults", zero), ("best", best)):
        if trial is None:
            continue
        from autotune.trial import MODEL_FILE

        path = study_dir / "trials" / str(trial.number) / MODEL_FILE
        if not path.exists():
            path, _, _ = _trial_inputs(study, trial)
        model = onnx.load(str(path))  # the passes match on weight values: external data too
        for item in diagnose(model, precision=str(trial.params.get("precision", "fp32")), gpu=gpu):
            entry = found.setdefault(item["kind"], {**item, "in_defaults": False, "in_best": False})
            entry[f"in_{role}"] = True
            if role == "best":
                entry.update({k: item[k] for k in ("nodes", "count", "why", "title")})
    if best is None or (zero is not None and best.number == zero.number):
        for entry in found.values():
            entry["in_best"] = entry["in_defaults"]
    for entry in found.values():
        knob = entry["knob"]
        entry["search"] = search_status(study, knob, True) if knob.startswith("pass.") else None
    for entry in found.values():
        entry["runtime_note"] = _runtime_note(entry["kind"], profiles.get("defaults"), entry.get("nodes") or [])
    note = _data_movement_note(profiles.get("best") or profiles.get("defaults"))
    if note is not None:
        found[note["kind"]] = note
    fp32 = _whole_model_fp32(study, best or zero)
    if fp32 is not None:
        found[fp32["kind"]] = fp32
    return list(found.values())


# An op whose absence from the defaults' (timed, per-node) profile shows that the runtime's
# own graph optimizations already did what the pass does.
_MARKER_OPS = {
    "redundant_transposes": "Transpose",
    "batchnorm_not_folded": "BatchNormalization",
    "decomposed_layernorm": "Pow",
    "decomposed_gelu": "Erf",
    "decomposed_groupnorm": "InstanceNormalization",
}


def _runtime_note(kind: str, profile: Mapping[str, Any] | None, nodes: Sequence[str] = ()) -> str | None:
    """A note when the runtime already removed the diagnosed nodes: judged by the names of the
    diagnosed `marker` nodes (`"OpType name"` strings), or by any `marker` node when none is named."""
    marker = _MARKER_OPS.get(kind)
    if marker is None or not profile or not profile.get("timed") or "provider" not in profile:
        return None
    named = {text.split(" ", 1)[1] for text in nodes if text.startswith(f"{marker} ") and " " in text}
    profiled = [n for n in profile.get("nodes", []) if n.get("op_type") == marker]
    if any(n.get("name") in named for n in profiled) if named else profiled:
        return None
    which = f"none of the diagnosed {marker} nodes is" if named else f"no {marker} node is"
    return (
        f"The runtime's own graph optimizations already handle it for the defaults ({which} in "
        "their profile): the pass can at best match that"
    )


# Data-movement ops and what addresses them, for the profile's data-movement diagnosis.
_MOVEMENT_FIX = {
    "Transpose": "pass.remove_redundant_transposes (when they cancel out)",
    "ReorderInput": "ONNX Runtime's NCHWc layout (graph_optimization_level=all): its reorders buy faster Conv kernels",
    "ReorderOutput": "ONNX Runtime's NCHWc layout (graph_optimization_level=all): its reorders buy faster Conv kernels",
    "Cast": "precision: the casts the precision pass inserts around its FP32 block list",
    "Reformat": "precision and layout: TensorRT reformats between layers of different formats",
}


def _data_movement_note(profile: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not profile or not profile.get("timed") or not profile.get("total_ms"):
        return None
    share = profile["by_class_ms"]["data_movement"] / profile["total_ms"]
    if share < DATA_MOVEMENT_NOTE_SHARE:
        return None
    movers = [n for n in profile["nodes"] if n["class"] == "data_movement"][:6]
    fixes = sorted({_MOVEMENT_FIX[n["op_type"]] for n in movers if n["op_type"] in _MOVEMENT_FIX})
    return {
        "kind": "data_movement",
        "title": f"data movement is {share:.0%} of the profiled time",
        "why": "copies, layout changes and conversions do no arithmetic; "
        + ("addressed by: " + "; ".join(fixes) if fixes else "no graph pass addresses these ops"),
        "nodes": [f"{n['op_type']} {n['name']} ({n['time_ms']:.3g} ms)" for n in movers],
        "count": len(movers),
        "knob": "-",
        "in_defaults": None,
        "in_best": True,
        "search": None,
        "runtime_note": None,
    }


def _whole_model_fp32(study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> dict[str, Any] | None:
    """The answer runs in FP32 although the search offered a lower precision: say what became
    of those trials."""
    if (
        trial is None
        or study.user_attrs.get("build_only")
        or str(trial.params.get("precision", "fp32")) in LOW_PRECISIONS
    ):
        return None
    offered = sorted({str(t.params["precision"]) for t in study.get_trials(deepcopy=False) if "precision" in t.params})
    lower = [p for p in offered if p in LOW_PRECISIONS]
    if not lower:
        return None
    statuses = [search_status(study, "precision", p) for p in lower]
    return {
        "kind": "answer_in_fp32",
        "title": "the answer computes in FP32",
        "why": "; ".join(status_phrase(s) for s in statuses),
        "nodes": [],
        "count": 0,
        "knob": "precision",
        "in_defaults": True,
        "in_best": True,
        "search": statuses[0],
        "search_all": statuses,
    }


def profile_study(study: optuna.Study, trial_number: int | None = None) -> dict[str, Any]:
    """Profiles the defaults and the study's answer (or trial `trial_number`), diagnoses both
    models, and writes `profile.json` into the study directory (the whole comparison) and
    into each profiled trial's directory (its own profile and diagnoses).

    Raises:
        ProfileError: no baseline trial, or a configuration that cannot be profiled.
    """
    from autotune.answer import chosen_trial, default_trial, defaults_at_batch
    from autotune.report import trial_by_number

    study_dir = Path(study.user_attrs["study_dir"])
    zero = default_trial(study)
    if zero is None:
        raise ProfileError(f"study {study.study_name}: no measured baseline (trial 0) to profile")
    if trial_number is not None:
        best = trial_by_number(study, trial_number)
        role = f"trial {trial_number}"
    else:
        best = chosen_trial(study)
        role = "the answer"
    if best is not None:
        # The defaults at the answer's batch, where they were measured: the study compares
        # only at equal batch (a batch-8 profile against batch 1 says nothing about either).
        batch = int(best.user_attrs.get("batch_size", 1))
        zero = defaults_at_batch(study, zero, batch) or zero
    profiles: dict[str, Any] = {"defaults": profile_trial(study, zero)}
    if best is not None and best.number != zero.number:
        profiles["best"] = profile_trial(study, best)
    elif best is not None:
        profiles["best"] = profiles["defaults"]
    diagnoses = study_diagnoses(study, zero, best, profiles)
    data = {
        "study": study.study_name,
        "target": study.user_attrs.get("target"),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "best_role": role if best is not None else None,
        "defaults": profiles["defaults"],
        "best": profiles.get("best"),
        "moved": moved(profiles["defaults"], profiles["best"]) if "best" in profiles else None,
        "diagnoses": diagnoses,
    }
    (study_dir / PROFILE_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n")
    for key, trial in (("defaults", zero), ("best", best)):
        if trial is None or key not in profiles:
            continue
        trial_dir = study_dir / "trials" / str(trial.number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        own = [d for d in diagnoses if d.get(f"in_{key}")]
        (trial_dir / PROFILE_FILE).write_text(
            json.dumps({"study": study.study_name, **profiles[key], "diagnoses": own}, indent=2, default=str) + "\n"
        )
    return data


def profile_after_search(study: optuna.Study) -> dict[str, Any] | None:
    """`profile_study` for finalize: a failure is logged and recorded in the study
    (`profile_error`), never raised (a profile is a report, not the answer)."""
    try:
        data = profile_study(study)
    except Exception as exc:  # noqa: BLE001 - finalize must never fail on a profile
        message = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        logging.getLogger("autotune").warning("profile skipped: %s", message)
        (Path(study.user_attrs.get("study_dir", ".")) / PROFILE_FILE).unlink(missing_ok=True)  # never a stale one
        try:
            study.set_user_attr("profile_error", message)
        except Exception:  # noqa: BLE001
            pass
        return None
    if study.user_attrs.get("profile_error"):
        study.set_user_attr("profile_error", None)
    return data


def load_profile(study_dir: Path) -> dict[str, Any] | None:
    """The study's stored `profile.json`, or None."""
    try:
        return json.loads((Path(study_dir) / PROFILE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------- markdown


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_section(data: Mapping[str, Any]) -> list[str]:
    """report.md's "Where the time goes" section from a `profile_study` result."""
    defaults, best = data.get("defaults") or {}, data.get("best")
    same = best is not None and best.get("trial") == defaults.get("trial")
    role = data.get("best_role") or "the answer"
    label = (f"the answer (trial {best['trial']})" if role == "the answer" else role) if best else None
    where_best = "the answer" if role == "the answer" else role
    lines = ["## Where the time goes", ""]
    lines += [
        f"Profiled after the search, outside every timed measurement: {defaults.get('source', '?')}; "
        f"{defaults.get('note', '')}."
        + (
            f" Times are the mean per run over {defaults.get('runs', 0)} warm runs, summed per node "
            "(parallel nodes overlap, so the sum can exceed the run)."
            if defaults.get("timed")
            else ""
        ),
        "",
    ]
    first = f"defaults (trial {defaults.get('trial')}, batch {defaults.get('batch_size', 1)})"
    if best is not None and not same:
        label = f"{label}, batch {best.get('batch_size', 1)}"
    columns = [(first, defaults)] + ([] if best is None or same else [(label, best)])
    if defaults.get("timed"):
        head = "| class | " + " | ".join(f"{name} ms | share" for name, _ in columns) + " |"
        lines += [head, "|---|" + "---|---|" * len(columns)]
        for cls in OP_CLASSES:
            cells = []
            for _, profile in columns:
                ms = (profile.get("by_class_ms") or {}).get(cls)
                total = profile.get("total_ms") or 0.0
                cells += [_ms(ms), _pct(ms / total if ms is not None and total else None)]
            lines.append(f"| {CLASS_TITLES[cls]} | " + " | ".join(cells) + " |")
        totals = []
        for _, profile in columns:
            totals += [_ms(profile.get("total_ms")), f"run {_ms(profile.get('run_ms'))} ms"]
        lines += ["| total | " + " | ".join(totals) + " |", ""]
        shares = " -> ".join(f"{_pct(p.get('gemm_share'))} ({name})" for name, p in columns)
        lines += [f"GEMM-class share: {shares}.", ""]
    else:
        head = "| class | " + " | ".join(f"{name} layers" for name, _ in columns) + " |"
        lines += [head, "|---|" + "---|" * len(columns)]
        for cls in OP_CLASSES:
            counts = [str((p.get("count_by_class") or {}).get(cls, 0)) for _, p in columns]
            lines.append(f"| {CLASS_TITLES[cls]} | " + " | ".join(counts) + " |")
        lines += ["", "No per-layer times: the GEMM-class share needs a timed profile (a GPU).", ""]
    shown = best if best is not None else defaults
    title = label if best is not None and not same else first if best is None else f"{label}: {first}"
    top = shown.get("top") or []
    if top:
        what = "nodes" if shown.get("timed") else "layers (untimed, in engine order)"
        lines += [f"### Top {len(top)} {what}: {title}", ""]
        lines += ["| node | op type | class | precision | ms | share |", "|---|---|---|---|---|---|"]
        for node in top:
            name = str(node.get("name", ""))[:70]
            lines.append(
                f"| {name} | {node.get('op_type', '')} | {CLASS_TITLES.get(node.get('class', ''), '')} | "
                f"{node.get('precision', '')} | {_ms(node.get('time_ms'))} | {_pct(node.get('share'))} |"
            )
        lines.append("")
    change = data.get("moved")
    if change and change.get("timed") and not same:
        lines += [f"### What moved: defaults -> {label}", ""]
        lines += ["| op type | defaults ms | best ms | change ms |", "|---|---|---|---|"]
        for row in change.get("by_op_type", []):
            lines.append(
                f"| {row['op_type']} | {_ms(row['defaults_ms'])} | {_ms(row['best_ms'])} | {row['delta_ms']:+.3g} |"
            )
        lines.append("")
    diagnoses = data.get("diagnoses") or []
    lines += ["### Diagnoses", ""]
    if not diagnoses:
        lines += ["None of the seed's patterns (redundant Transposes, unfolded BatchNorm, unaligned or 4-D "
                  "GEMMs, inner-axis reductions, decomposed LayerNorm/GELU, FP32 leftovers) is in these models.", ""]  # fmt: skip
    for item in diagnoses:
        where = []
        if item.get("in_defaults") is not None:
            where.append("in the defaults" if item.get("in_defaults") else "not in the defaults")
        if best is not None and not same:
            where.append(f"still in {where_best}" if item.get("in_best") else f"gone in {where_best}")
        nodes = ", ".join(item.get("nodes") or [])
        search = status_phrase(item.get("search"), label=False) if item.get("knob", "-") != "-" else ""
        if item.get("kind") == "answer_in_fp32":
            search = ""
        lines.append(
            f"- **{item['title']}** ({'; '.join(where) or 'profile'})"
            + (f": {nodes}" if nodes else "")
            + f". {item['why'][:1].upper()}{item['why'][1:]}."
            + (f" Addressed by `{item['knob']}`: {search}." if search else "")
            + (f" {item['runtime_note']}." if item.get("runtime_note") else "")
        )
    lines.append("")
    return lines


__all__ = [
    "OP_CLASSES",
    "PROFILE_FILE",
    "ProfileError",
    "diagnose",
    "finish_profile",
    "left_in_fp32",
    "load_profile",
    "moved",
    "op_class",
    "profile_after_search",
    "profile_study",
    "profile_trial",
    "render_section",
    "search_status",
    "status_phrase",
    "summarize",
    "touched_nodes",
]
