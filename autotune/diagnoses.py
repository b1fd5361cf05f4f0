"""Diagnoses of a profile: the seed's slow patterns named in the model's graph and in the graph
that ran, each with the pass or knob that addresses it and what the search measured of it.

Pure functions over a model, a profile and a finished study (they profile nothing themselves:
`autotune.profile` does). `diagnose` names the nodes of each seed pattern (redundant Transposes,
an unfolded BatchNorm, a Reduce off the last axis, ...) and the pass that addresses it;
`diagnose_graph_that_ran` keeps only what runs in the configuration's optimized graph (ONNX
Runtime's, from its profile), named as it runs; `search_status` and `knob_values_status` say
whether the search tried the knob and what it measured; `moved` compares the defaults' profile
with the answer's; `study_diagnoses` puts them together for `autotune.profile.profile_study`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna

from autotune.answer import chosen_trial, is_feasible
from autotune.layout import INPUTS_FILE
from autotune.model import feeds_at_batch
from autotune.passes import PASSES
from autotune.passes._graph import copy_model
from autotune.passes.reduce import REDUCE_OPS
from autotune.study import regenerate_model
from autotune.targets import target_class
from autotune.targets.base import TargetOptions
from autotune.targets.layer_profile import OP_CLASSES, TOP_NODES, op_class
from autotune.trial import MODEL_FILE

# A data-movement share above this in the answer's profile is worth a diagnosis.
DATA_MOVEMENT_NOTE_SHARE = 0.15


LOW_PRECISIONS = ("fp16", "bf16", "int8", "fp8")


QUANTIZED_PRECISIONS = ("int8", "fp8")


# The pipeline knob that decides which layers an INT8/FP8 trial keeps in float (autotune.space).
KEEP_FLOAT_KNOB = "keep_float_layers"


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose unnamed nodes are named `node_of_<first output>` (TensorRT's parser names
    them the same way), so that a pass's touched nodes can be named."""

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


# Ops between a Conv and its BatchNorm that change no arithmetic (a quantized graph's Q/DQ pair).
_PASS_THROUGH_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast", "Identity"})


_BN_PRODUCER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})


def _producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    """The Conv/ConvTranspose/Gemm that computes `tensor`, through Q/DQ, Cast and Identity; None
    when something else does."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for _ in range(4):
        node = producers.get(tensor)
        if node is None or not node.input:
            return None
        if node.op_type in _BN_PRODUCER_OPS:
            return node
        if node.op_type not in _PASS_THROUGH_OPS:
            return None
        tensor = node.input[0]
    return None


def _batchnorm_pairs(
    model: onnx.ModelProto, batchnorms: Sequence[onnx.NodeProto]
) -> list[tuple[onnx.NodeProto | None, onnx.NodeProto]]:
    """(the Conv computing its input or None, the BatchNormalization) for each of `batchnorms`."""
    return [(_producer(model, bn.input[0]), bn) for bn in batchnorms]


def diagnose(model: onnx.ModelProto, *, precision: str = "fp32", gpu: bool = False) -> list[dict[str, Any]]:
    """The seed's slow patterns in `model`, each naming its nodes and the knob that addresses it.

    Each graph pass is applied alone to a copy; its rewrite count and the nodes it removed or
    changed are the match (the passes are the pattern matchers). The alignment of K and N
    matters only under FP16/BF16/INT8/FP8 (`precision`) or on a GPU target (`gpu`), where such
    precisions are in reach. Under a low precision, the nodes still computing in FP32 are
    listed too.

    Returns:
        [{"kind", "title", "why", "nodes": ["Op name", ...], "node_names", "count", "knob"}]; the
        BatchNorm diagnosis also has "pairs": [[Conv name or None, BatchNormalization name]].
    """

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
        item: dict[str, Any] = {
            "kind": kind,
            "title": title,
            "why": why,
            "count": int(count),
            "knob": f"pass.{pass_name}",
        }
        if kind == "batchnorm_not_folded":
            # The pass also rewires the folded Conv's consumers (another Conv reading the BN's
            # output): only the Conv that computes each BatchNorm's input is its pair.
            pairs = _batchnorm_pairs(before, [n for n in nodes if n.op_type == "BatchNormalization"])
            nodes = [n for pair in pairs for n in pair if n is not None]
            item["pairs"] = [[c.name if c is not None else None, b.name] for c, b in pairs]
        item.update({"nodes": _describe(nodes), "node_names": [n.name for n in nodes]})
        found.append(item)
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
        "node_names": [n.name for n in nodes],
        "count": len(nodes),
        # Under INT8/FP8 which layers stay float is the searched `keep_float_layers`; under
        # FP16/BF16 the block list is fixed and only `precision` itself is searched.
        "knob": KEEP_FLOAT_KNOB if precision in QUANTIZED_PRECISIONS else "precision",
    }


def _fastest(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """The fastest of `trials` by measured throughput (objective 0), as {trial, throughput}."""
    timed = [t for t in trials if t.values]
    if not timed:
        return None
    top = max(timed, key=lambda t: t.values[0])
    return {"trial": top.number, "throughput": float(top.values[0])}


def search_status(study: optuna.Study, knob: str, value: Any = True) -> dict[str, Any]:
    """Whether the search tried `knob=value` and what it measured: the complete trials that ran
    it (`tried_trials`; `copies`: those the runtime made identical to an earlier configuration,
    which share its measurement), which of them were feasible, the fastest feasible one and its
    throughput beside the answer's, whether the answer has it, or why the knob was dropped."""

    dropped = (study.user_attrs.get("dropped_knobs") or {}).get(knob)
    trials = study.get_trials(deepcopy=False)
    in_space = any(knob in t.params for t in trials)
    complete = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and knob in t.params and t.params[knob] == value
    ]
    feasible = [t for t in complete if is_feasible(t)]
    best = chosen_trial(study)
    return {
        "knob": knob,
        "value": value,
        "in_space": in_space,
        "dropped": dropped,
        "tried_trials": [t.number for t in complete],
        "copies": [t.number for t in complete if "duplicate_of" in t.user_attrs],
        "feasible_trials": [t.number for t in feasible],
        "fastest_feasible": _fastest(feasible),
        "answer": _fastest([best]) if best is not None else None,
        "in_answer": best is not None and best.params.get(knob) == value,
        "measured": not study.user_attrs.get("build_only"),
    }


def knob_values_status(study: optuna.Study, knob: str, current: Any = None) -> dict[str, Any]:
    """`search_status` of every value of `knob` the search ran (a categorical knob such as
    `keep_float_layers`), with `current`: the value of the configuration diagnosed."""

    seen: list[Any] = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE and knob in t.params and t.params[knob] not in seen:
            seen.append(t.params[knob])
    values = [search_status(study, knob, v) for v in seen]
    empty = search_status(study, knob, current)
    return {
        "knob": knob,
        "value": current,
        "values": values,
        "in_space": empty["in_space"],
        "dropped": empty["dropped"],
        "tried_trials": sorted(n for v in values for n in v["tried_trials"]),
        "measured": empty["measured"],
    }


def _throughput(value: float) -> str:
    return f"{value:.4g} samples/s"


def status_phrase(status: Mapping[str, Any] | None, *, label: bool = True) -> str:
    """`search_status` (or `knob_values_status`) in words (`label`: starting with the knob's name)."""
    if not status:
        return "not a searched knob"
    if "values" in status:
        return _values_phrase(status, label=label)
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
    copies = status.get("copies") or []
    if copies:
        shown += f"; {len(copies)} of them identical to an earlier configuration once optimized"
    if not status.get("measured", True):
        return f"{name}built in {len(tried)} {plural} ({shown}); {answer}"
    text = f"{name}tried in {len(tried)} {plural} ({shown}), {len(feasible)} within tolerance"
    fastest, theirs = status.get("fastest_feasible"), status.get("answer")
    if fastest and not status.get("in_answer"):
        text += f"; the fastest of them, trial {fastest['trial']}, measured {_throughput(fastest['throughput'])}"
        if theirs:
            text += f" (the answer: {_throughput(theirs['throughput'])})"
    return f"{text}; {answer}"


def _values_phrase(status: Mapping[str, Any], *, label: bool = True) -> str:
    name = f"{status['knob']} " if label else ""
    current = f"this configuration runs {status['knob']}={status['value']}; "
    if status.get("dropped"):
        return f"{current}{name}dropped before the search ({status['dropped']})"
    if not status.get("values"):
        where = "never tried (in the search space)" if status.get("in_space") else "not in the search space"
        return f"{current}{name}{where}"
    parts = []
    for item in status["values"]:
        tried, feasible = item["tried_trials"], item["feasible_trials"]
        part = f"{item['value']} in {len(tried)} ({len(feasible)} within tolerance"
        if item.get("fastest_feasible") and status.get("measured", True):
            part += f", best {_throughput(item['fastest_feasible']['throughput'])} in trial {item['fastest_feasible']['trial']}"
        parts.append(part + ")")
    answer = next((v["value"] for v in status["values"] if v.get("in_answer")), None)
    tail = f"; the answer has {status['knob']}={answer}" if answer is not None else ""
    return f"{current}{name}searched: " + "; ".join(parts) + tail


def _trial_inputs(
    study: optuna.Study, trial: optuna.trial.FrozenTrial
) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """The trial's model (regenerated when pruned), configuration and feeds at its batch."""

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


def within_spread(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two shares' ranges over their repeats overlap: their difference is inside the
    spread of the repeats, not a measured change."""
    return a["low"] <= b["high"] and b["low"] <= a["high"]


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
    shares: dict[str, Any] = {}
    for cls in OP_CLASSES:
        a = (defaults.get("share_spread") or {}).get(cls)
        b = (best.get("share_spread") or {}).get(cls)
        if a is None or b is None:
            continue
        shares[cls] = {
            "defaults": a,
            "best": b,
            "change": b["median"] - a["median"],
            "within_spread": within_spread(a, b),
        }
    return {
        "timed": True,
        "repeats": [defaults.get("repeats", 1), best.get("repeats", 1)],
        "shares": shares,
        "total_ms": [defaults["total_ms"], best["total_ms"]],
        "run_ms": [defaults.get("run_ms"), best.get("run_ms")],
        "gemm_share": [defaults["gemm_share"], best["gemm_share"]],
        "by_class_ms": {c: [defaults["by_class_ms"][c], best["by_class_ms"][c]] for c in OP_CLASSES},
        "by_op_type": ops[:TOP_NODES],
    }


def _gpu_target(study: optuna.Study) -> bool:
    """Whether the study's target runs its candidates on a GPU (asked as if measuring: a
    build-only TensorRT study still tunes for one)."""

    options = replace(TargetOptions.from_study_attrs(study.user_attrs), build_only=False)
    return target_class(str(study.user_attrs.get("target"))).needs_gpu(options)


def _ran_nodes(profile: Mapping[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """The nodes of the graph that ran, by name, from a timed per-node profile of ONNX Runtime
    (its optimized graph: what its graph optimizations fused away is absent); None where the
    profile does not list that graph (a TensorRT layer table)."""
    if not profile or not profile.get("timed") or "provider" not in profile:
        return None
    return {str(n["name"]): n for n in profile.get("nodes", [])}


def _ort_names(model: onnx.ModelProto) -> dict[str, str]:
    """The name ONNX Runtime gives each node of `model` (an unnamed node: `<OpType>_<index>`),
    keyed by the name `_named` gives it (`node_of_<output>`)."""
    names, seen = {}, set()
    for index, node in enumerate(model.graph.node):
        ours = node.name
        if not ours or ours in seen:
            ours = f"node_of_{node.output[0]}" if node.output and node.output[0] else f"{node.op_type}_{index}"
        seen.add(ours)
        names[ours] = node.name or f"{node.op_type}_{index}"
    return names


def _ran_text(node: Mapping[str, Any]) -> str:
    time_ms = node.get("time_ms")
    return f"{node['op_type']} {node['name']}" + (f" ({time_ms:.3g} ms)" if time_ms is not None else "")


def _batchnorms_that_ran(
    model: onnx.ModelProto, ran: Mapping[str, Mapping[str, Any]], aliases: Mapping[str, str]
) -> dict[str, Any] | None:
    """The BatchNormalizations that run unfolded in the graph that ran, each after the Conv that
    computes its input (named only when that Conv ran under its name), whatever kept them: no
    fold pass, or Q/DQ between them (an INT8 graph that ONNX Runtime cannot fold)."""
    named = _named(model)
    by_name = {aliases.get(n.name, n.name): n for n in named.graph.node}
    batchnorms = [n for n in ran.values() if n.get("op_type") == "BatchNormalization"]
    if not batchnorms:
        return None
    texts, pairs = [], []
    for bn in batchnorms:
        node = by_name.get(str(bn["name"]))
        conv = _producer(named, node.input[0]) if node is not None else None
        conv_name = aliases.get(conv.name, conv.name) if conv is not None else None
        if conv_name is not None and conv_name in ran:
            texts.append(_ran_text(ran[conv_name]))
        else:
            conv_name = None
        texts.append(_ran_text(bn))
        pairs.append([conv_name, bn["name"]])
    diagnosis = next(d for d in PASS_DIAGNOSES if d[0] == "batchnorm_not_folded")
    return {
        "kind": "batchnorm_not_folded",
        "title": diagnosis[3],
        "why": diagnosis[4],
        "nodes": texts[:12] + ([f"... {len(texts) - 12} more"] if len(texts) > 12 else []),
        "count": len(batchnorms),
        "knob": f"pass.{diagnosis[1]}",
        "pairs": pairs,
    }


def _fp32_gemm_that_ran(ran: Mapping[str, Mapping[str, Any]], precision: str) -> dict[str, Any] | None:
    """Under INT8/FP8: the GEMM-class nodes that ran in FP32 (ONNX Runtime's profile records
    each node's input types), the leftovers `keep_float_layers` decides."""
    nodes = [n for n in ran.values() if n.get("class") == "gemm" and n.get("precision") == "fp32"]
    if not nodes:
        return None
    total = sum(float(n.get("time_ms") or 0.0) for n in nodes)
    by_op: dict[str, int] = {}
    for node in nodes:
        by_op[node["op_type"]] = by_op.get(node["op_type"], 0) + 1
    ops = ", ".join(f"{op} x{count}" for op, count in sorted(by_op.items(), key=lambda kv: -kv[1]))
    texts = [_ran_text(n) for n in nodes]
    return {
        "kind": "left_in_fp32",
        "title": f"layers left in FP32 under {precision}",
        "why": f"these GEMM-class nodes ran with FP32 inputs in the graph that ran ({ops}; {total:.3g} ms)",
        "nodes": texts[:12] + ([f"... {len(texts) - 12} more"] if len(texts) > 12 else []),
        "count": len(nodes),
        "knob": KEEP_FLOAT_KNOB,
    }


def _renamed_markers(
    kind: str, ran: Mapping[str, Mapping[str, Any]], aliases: Mapping[str, str]
) -> list[Mapping[str, Any]]:
    """The nodes of a pattern's marker op that run under names the model does not have."""
    marker = _MARKER_OPS.get(kind)
    known = set(aliases.values())
    return [n for n in ran.values() if marker and n.get("op_type") == marker and n["name"] not in known]


def _checked(
    item: dict[str, Any], ran: Mapping[str, Mapping[str, Any]], aliases: Mapping[str, str]
) -> tuple[bool, dict[str, Any]]:
    """A model diagnosis checked against the graph that ran: (whether its nodes run there, the
    diagnosis naming only the nodes that ran, under the runtime's names, with their times). A
    pattern whose marker op (what the pass removes) no longer runs is gone, whatever else of it
    the runtime kept under the same names."""
    names = [aliases.get(n, n) for n in item.get("node_names", [])]
    present = [ran[n] for n in names if n in ran]
    marker = _MARKER_OPS.get(item["kind"])
    holds = any(n.get("op_type") == marker for n in present) if marker else bool(present)
    texts = [_ran_text(n) for n in present]
    return holds, {**item, "nodes": texts[:12] if holds else [], "count": len(present) if holds else 0}


def diagnose_graph_that_ran(
    model: onnx.ModelProto, profile: Mapping[str, Any] | None, *, precision: str = "fp32", gpu: bool = False
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """`diagnose` of a configuration's `model`, checked against the graph that ran for it (its
    timed ONNX Runtime `profile`): the diagnoses that hold there, by kind, naming only nodes that
    ran (with their times), and the kinds in the model that the runtime removed before running.
    Unfolded BatchNorms and, under INT8/FP8, the GEMM-class nodes left in FP32 are read from the
    graph that ran itself. Where the profile does not list the graph that ran (a TensorRT layer
    table), the model's diagnoses as they are."""
    items = diagnose(model, precision=precision, gpu=gpu)
    ran = _ran_nodes(profile)
    if ran is None:
        return {item["kind"]: item for item in items}, set()
    aliases = _ort_names(model)
    holding: dict[str, dict[str, Any]] = {}
    removed: set[str] = set()
    from_ran = {"batchnorm_not_folded"} | ({"left_in_fp32"} if precision in QUANTIZED_PRECISIONS else set())
    for item in items:
        if item["kind"] in from_ran:
            continue
        holds, checked = _checked(item, ran, aliases)
        renamed = _renamed_markers(item["kind"], ran, aliases) if not holds else []
        if holds:
            holding[item["kind"]] = checked
        elif renamed:
            # The runtime rewrote the pattern's nodes under new names (a quantized graph's
            # Transposes moved across Q/DQ): the nodes of its op that run are named, not the model's.
            why = f"{item['why']} (the runtime renamed the model's nodes: these are the {len(renamed)} that run)"
            holding[item["kind"]] = {**checked, "nodes": [_ran_text(n) for n in renamed][:12], "why": why}
        else:
            removed.add(item["kind"])
    batchnorms = _batchnorms_that_ran(model, ran, aliases)
    if batchnorms is not None:
        holding["batchnorm_not_folded"] = batchnorms
    elif any(item["kind"] == "batchnorm_not_folded" for item in items):
        removed.add("batchnorm_not_folded")
    if precision in QUANTIZED_PRECISIONS:
        left = _fp32_gemm_that_ran(ran, precision)
        if left is not None:
            holding["left_in_fp32"] = left
    return holding, removed


def _role_diagnoses(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, profile: Mapping[str, Any] | None, gpu: bool
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """`diagnose_graph_that_ran` of one profiled trial of `study`."""

    study_dir = Path(study.user_attrs["study_dir"])
    path = study_dir / "trials" / str(trial.number) / MODEL_FILE
    if not path.exists():
        path, _, _ = _trial_inputs(study, trial)
    model = onnx.load(str(path))  # the passes match on weight values: external data too
    precision = str(trial.params.get("precision", "fp32"))
    return diagnose_graph_that_ran(model, profile, precision=precision, gpu=gpu)


def study_diagnoses(
    study: optuna.Study,
    zero: optuna.trial.FrozenTrial,
    best: optuna.trial.FrozenTrial | None,
    profiles: Mapping[str, Any],
    *,
    best_label: str = "the answer",
) -> list[dict[str, Any]]:
    """Diagnoses of the defaults and of the answer, each checked against the graph that ran for
    that configuration (ONNX Runtime's optimized graph, from its profile; the model where the
    target's profile does not list its graph): the nodes named are nodes that ran, in the
    configuration the diagnosis talks about; each with its knob's `search_status` (for layers
    left in FP32 under INT8/FP8, `keep_float_layers`' values) and whether it is still there in
    the answer."""
    gpu = _gpu_target(study)
    roles = [("defaults", zero)] + ([("best", best)] if best is not None and best.number != zero.number else [])
    labels = {"defaults": f"the defaults (trial {zero.number})", "best": best_label}
    found: dict[str, dict[str, Any]] = {}
    removed_in: dict[str, list[str]] = {}
    for role, trial in roles:
        holding, removed = _role_diagnoses(study, trial, profiles.get(role), gpu)
        for kind, item in holding.items():
            entry = found.setdefault(kind, {**item, "in_defaults": False, "in_best": False})
            entry[f"in_{role}"] = True
            entry[f"nodes_{role}"] = item["nodes"]
            if role == "best" or not entry.get("nodes_from"):
                entry.update({k: item[k] for k in ("nodes", "count", "why", "title", "knob") if k in item})
                entry.update({"nodes_from": labels[role], "trial": trial.number})
                entry["pairs"] = item.get("pairs")
        for kind in removed:
            removed_in.setdefault(kind, []).append(role)
            if kind not in found:
                model_item = {"kind": kind, "nodes": [], "count": 0, "in_defaults": False, "in_best": False}
                found[kind] = {**_PASS_ITEMS.get(kind, {}), **model_item}
    if len(roles) == 1:
        for entry in found.values():
            entry["in_best"] = entry["in_defaults"]
    for entry in found.values():
        knob = entry["knob"]
        if knob == KEEP_FLOAT_KNOB:
            trial = best if entry.get("in_best") and best is not None else zero
            entry["search"] = knob_values_status(study, knob, trial.params.get(knob, 0))
        elif knob.startswith("pass."):
            entry["search"] = search_status(study, knob, True)
        else:
            entry["search"] = None
        entry["removed_in"] = removed_in.get(entry["kind"], [])
        entry["runtime_note"] = _runtime_note(entry["removed_in"], labels)
    note = _data_movement_note(profiles.get("best") or profiles.get("defaults"))
    if note is not None:
        found[note["kind"]] = note
    fp32 = _whole_model_fp32(study, best or zero)
    if fp32 is not None:
        found[fp32["kind"]] = fp32
    return list(found.values())


# A pass diagnosis's title, why and knob, for a pattern of the model the runtime removed.
_PASS_ITEMS = {d[0]: {"title": d[3], "why": d[4], "knob": f"pass.{d[1]}"} for d in PASS_DIAGNOSES}


# The op a pass removes: a pattern holds in the graph that ran while one of its named nodes of
# this op runs there (ONNX Runtime fuses a BatchNorm into its Conv and keeps the Conv's name).
_MARKER_OPS = {
    "redundant_transposes": "Transpose",
    "batchnorm_not_folded": "BatchNormalization",
    "decomposed_layernorm": "Pow",
    "decomposed_gelu": "Erf",
    "decomposed_groupnorm": "InstanceNormalization",
}


def _runtime_note(removed: Sequence[str], labels: Mapping[str, str]) -> str | None:
    """Which configurations' models have the pattern although their graph that ran does not:
    the runtime's own graph optimizations removed it there, and the pass can at best match that."""
    if not removed:
        return None
    where = " and ".join(labels[r] for r in removed)
    return (
        f"In {where} the pattern is in the model but not in the graph that ran: the runtime's own graph "
        "optimizations removed it, and the pass can at best match that there"
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
