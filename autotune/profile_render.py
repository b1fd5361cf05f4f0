"""The "Where the time goes" section of report.md (and `autotune profile`'s text), rendered from
a stored profile (`autotune.profile.load_profile`): shares by op class with their spread over the
repeats, what moved between the defaults and the answer, and the diagnoses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.diagnoses import status_phrase
from autotune.profile import spread_statement
from autotune.targets.layer_profile import CLASS_TITLES, OP_CLASSES


def spread_phrase(statement: Mapping[str, Any]) -> str:
    """`spread_statement` in words: "range of 5 interleaved runs (holds the median share with 94%
    confidence; a single further run falls outside it with probability 33%)"."""
    if statement.get("median_confidence") is None:
        return f"{statement['interval']} (a single run: no spread)"
    return (
        f"{statement['interval']} (holds the median share with {statement['median_confidence']:.0%} confidence, "
        f"whatever the distribution; a single further run falls outside it with probability "
        f"{statement['next_run_outside']:.0%})"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _share_cell(profile: Mapping[str, Any], cls: str) -> str:
    """A class's share: the median with its range over the repeats, or the one profile's share."""
    spread = (profile.get("share_spread") or {}).get(cls)
    if spread is not None and (profile.get("repeats") or 1) > 1:
        return f"{spread['median']:.1%} ({spread['low']:.1%}-{spread['high']:.1%})"
    ms = (profile.get("by_class_ms") or {}).get(cls)
    total = profile.get("total_ms") or 0.0
    return _pct(ms / total if ms is not None and total else None)


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
        repeats = defaults.get("repeats") or 1
        if repeats > 1:
            lines += [
                f"Each configuration profiled {repeats} times, interleaved with the other; times are medians, "
                "each share the median of the repeats with their range (low-high): the "
                + spread_phrase(data.get("spread") or spread_statement(repeats))
                + ".",
                "",
            ]
        lines += [head, "|---|" + "---|---|" * len(columns)]
        for cls in OP_CLASSES:
            cells = []
            for _, profile in columns:
                ms = (profile.get("by_class_ms") or {}).get(cls)
                cells += [_ms(ms), _share_cell(profile, cls)]
            lines.append(f"| {CLASS_TITLES[cls]} | " + " | ".join(cells) + " |")
        totals = []
        for _, profile in columns:
            totals += [_ms(profile.get("total_ms")), f"run {_ms(profile.get('run_ms'))} ms"]
        lines += ["| total | " + " | ".join(totals) + " |", ""]
        shares = " -> ".join(f"{_share_cell(p, 'gemm')} ({name})" for name, p in columns)
        change = (data.get("moved") or {}).get("shares", {}).get("gemm") if len(columns) > 1 else None
        verdict = ""
        if change is not None:
            verdict = (
                f" The change ({change['change'] * 100:+.1f} points) is inside the spread of the repeats: no "
                "measured difference."
                if change["within_spread"]
                else f" The change ({change['change'] * 100:+.1f} points) is outside the spread of the repeats."
            )
        lines += [f"GEMM-class share: {shares}.{verdict}", ""]
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
        inside = [CLASS_TITLES[c] for c, row in (change.get("shares") or {}).items() if row["within_spread"]]
        outside = [CLASS_TITLES[c] for c, row in (change.get("shares") or {}).items() if not row["within_spread"]]
        if inside or outside:
            lines += [
                "Shares that moved beyond the spread of the repeats: "
                + (", ".join(outside) if outside else "none")
                + "; inside it (no measured difference): "
                + (", ".join(inside) if inside else "none")
                + ".",
                "",
            ]
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
        if nodes and item.get("nodes_from"):
            nodes = f"in the graph that ran for {item['nodes_from']}: {nodes}"
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
