"""Reading a study back: Pareto front, the chosen best, the paired speedup, best/ and report.md."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from autotune.answer import (
    EXPERT_MOVES,
    Answer,
    Speedup,
    _complete,
    chosen_trial,
    default_trial,
    details,
    is_feasible,
    measured_trials,
    pareto_front,
    shown_front,
    speedup_phrase,
    stored_aa,
    stored_answers,
    trial_by_number,
    trial_sources,
    wall_s,
)
from autotune.errors import condense_reason
from autotune.judges import roles_table
from autotune.layout import PARETO_PLOT
from autotune.profile import load_profile
from autotune.profile_render import render_section
from autotune.rules import failure_class
from autotune.sensitivity import MOSTLY_FLOAT
from autotune.study import count_trials, finished_count
from autotune.study._records import inputs_line, trial_layers

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def config_summary(params: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """Knobs that differ from trial 0, as `k=v` pairs ("defaults" when none differ)."""
    defaults = defaults or {}
    parts = [f"{k}={v}" for k, v in params.items() if defaults.get(k, object()) != v]
    return ", ".join(parts) if parts else "defaults"


def trial_row(trial: FrozenTrial, defaults: dict[str, Any]) -> dict[str, Any]:
    a = trial.user_attrs
    return {
        "trial": trial.number,
        "throughput": a.get("throughput"),
        "latency_ms_p50": a.get("latency_ms_p50"),
        "latency_ms_p90": a.get("latency_ms_p90"),
        "batch_size": a.get("batch_size", 1),
        "error": a.get("normalized_error"),
        "max_rel_error": a.get("max_rel_error"),
        "feasible": is_feasible(trial),
        "config": config_summary(trial.params, defaults),
    }


def failure_reasons(study: optuna.Study) -> dict[str, int]:
    """Failure and pruning reasons with counts, grouped by failure class (the reason with its
    numbers, paths and names blanked out, as failure rules group them; see `autotune.rules`)."""

    reasons: dict[str, int] = {}
    shown: dict[str, str] = {}  # class -> what is shown: the class, or its first trial's own reason
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED):
            reason = str(t.user_attrs.get("reason", "no reason recorded"))
            if reason.startswith("ruled out:"):
                key = "ruled out by a failure rule (not run)"
            elif reason.startswith("duplicate of"):
                key = "duplicate of an earlier trial (not run)"
            else:
                # The explanation comes last in runtime errors: condensed, not cut (issue 11).
                reason = condense_reason(reason, 160)
                cls = failure_class(reason) or reason
                key = shown.setdefault(cls, cls if "<n>" not in cls else f"{reason} (trial {t.number}; similar ones)")
            reasons[key] = reasons.get(key, 0) + 1
    return reasons


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


PARETO_COLUMNS = ["trial", "throughput", "latency_ms_p50", "batch_size", "error", "max_rel_error", "config"]


def plot_pareto(study: optuna.Study, out: Path) -> Path | None:
    """Scatter of throughput against error: feasible, infeasible, and the front joined."""
    import matplotlib  # lazy: only the Pareto plot draws (~0.5 s of every command otherwise)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display backend is ever chosen

    trials = [t for t in measured_trials(study) if t.values]
    if not trials:
        return None
    front = pareto_front(study)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    feasible = [t for t in trials if is_feasible(t)]
    infeasible = [t for t in trials if not is_feasible(t)]
    floor = 1e-9
    if feasible:
        ax.scatter(
            [max(t.values[1], floor) for t in feasible],
            [t.values[0] for t in feasible],
            c="tab:blue",
            s=18,
            label="feasible",
        )
    if infeasible:
        ax.scatter(
            [max(min(t.values[1], 1e3), floor) for t in infeasible],
            [t.values[0] for t in infeasible],
            c="tab:gray",
            marker="x",
            s=18,
            label="over tolerance",
        )
    if front:
        ordered = sorted(front, key=lambda t: t.values[1])
        ax.plot(
            [max(t.values[1], floor) for t in ordered],
            [t.values[0] for t in ordered],
            "-o",
            c="tab:red",
            label="Pareto front",
        )
    zero = default_trial(study)
    if zero is not None:
        ax.axhline(zero.values[0], ls="--", c="tab:green", lw=1, label="trial 0 (defaults)")
    answers = [e for e in shown_front(study) if e.mark]  # the one front's marks (autotune.answer)
    for entry in answers:
        values = entry.trial.values
        primary = entry.mark == "the answer"
        ax.scatter([max(values[1], floor)], [values[0]], marker="*", s=160 if primary else 90,
                   c="gold" if primary else "orange", edgecolors="black", zorder=5,
                   label=f"trial {entry.trial.number}: {entry.mark}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("output error (max abs error / max |reference|, floored at 1e-4)")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title(f"{study.study_name}: {len(trials)} measured trials")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def headline(study: optuna.Study) -> list[str]:
    """The two numbers a deployment is decided on, each against the defaults at the same
    batch: batch-1 latency, and the best throughput (under the latency SLA when given)."""
    answers = stored_answers(study)
    aa = stored_aa(study)
    lines = []
    one = answers.get(1)
    if one is not None:
        lines.append(f"batch-1 latency: {_answer_phrase(one, aa)}")
    best_batch = study.user_attrs.get("best_batch")
    top = answers.get(int(best_batch)) if best_batch is not None else None
    if top is not None and (top.batch_size != 1 or one is None):
        sla = study.user_attrs.get("latency_sla_ms")
        under = f" under the {sla:g} ms SLA" if sla else ""
        lines.append(f"best throughput{under}: {_answer_phrase(top, aa)}")
    elif top is not None:
        lines.append("best throughput: at batch 1 (no larger batch was faster per sample)")
    return lines


def _answer_phrase(answer: Answer, aa: Speedup | None) -> str:
    s = answer.speedup
    per_batch_ms = answer.ms_per_sample * answer.batch_size
    measured = f"{per_batch_ms:.4g} ms per batch of {answer.batch_size}, {answer.samples_per_s:.4g} samples/s"
    if s is None:
        return f"trial {answer.trial} (the defaults at batch {answer.batch_size}; nothing else feasible), {measured}"
    ratio = speedup_phrase(s, aa)
    if answer.verdict == "faster":
        return f"trial {answer.trial}, faster than the defaults at batch {answer.batch_size}: {ratio}; {measured}"
    if answer.verdict == "defaults fail the gate":
        return (
            f"trial {answer.trial}, the fastest configuration at batch {answer.batch_size} that passes the accuracy "
            f"gate (the defaults there do not; against them: {ratio}), {measured}"
        )
    why = "no measurable difference from" if answer.verdict == "no measurable difference" else "slower than"
    return (
        f"trial {answer.trial} (the defaults at batch {answer.batch_size}): the best finalist, trial "
        f"{answer.paired_winner}, measured {ratio}: {why} the defaults, so they stay the answer; {measured}"
    )


ANSWER_COLUMNS = ["batch", "answer trial", "verdict", "ms per batch", "samples/s", "paired vs defaults", "config"]


def answer_rows(study: optuna.Study, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for batch, answer in sorted(stored_answers(study).items()):
        trial = trial_by_number(study, answer.trial)
        s = answer.speedup
        rows.append(
            {
                "batch": batch,
                "answer trial": answer.trial,
                "verdict": answer.verdict,
                "ms per batch": answer.ms_per_sample * batch,
                "samples/s": answer.samples_per_s,
                "paired vs defaults": f"{s.median:.3f}x ({s.p25:.3f}-{s.p75:.3f}) trial {answer.paired_winner}"
                if s
                else "-",
                "config": config_summary(trial.params, defaults) if trial is not None else "?",
            }
        )
    return rows


def aa_line(study: optuna.Study) -> str | None:
    aa = study.user_attrs.get("aa_control")
    if not aa:
        return None
    return (
        f"Noise floor (A/A control: the defaults paired against themselves by the same procedure): "
        f"median {aa['median']:.3f}, IQR {aa['p25']:.3f}-{aa['p75']:.3f}, {aa['rounds']} rounds. A speedup is "
        "faster only when its IQR lies wholly above this one (and the per-side medians agree), slower when wholly "
        "below; otherwise no measurable difference."
    )


def rule_reason(rule: Mapping[str, Any]) -> str:
    """What a stored rule is shown as: its class when it has no blanked number in it, else
    its first trial's own reason (a class reads "median <n> ms ...": never shown)."""
    reason = str(rule.get("reason", ""))
    example = str(rule.get("example") or "")
    return example if "<n>" in reason and example else reason.replace("<n>", "N")


def dashboard_note(study: optuna.Study) -> str:
    """The study note optuna-dashboard shows above its plots: the answer, its headline figures
    and the one front (the same rows as report.md and `status`)."""
    zero = default_trial(study)
    defaults = zero.params if zero is not None else {}
    best = chosen_trial(study)
    lines = ["## The answer", ""]
    if best is None:
        lines += ["Not chosen yet (the study has not been finalized).", ""]
    else:
        lines += [f"Trial {best.number}: {config_summary(best.params, defaults)}", ""]
        lines += [f"- {line}" for line in headline(study)] + [""]
    front = shown_front(study)
    if front:
        rows = [trial_row(e.trial, defaults) | {"answer": e.mark, "on front": fmt(e.on_front)} for e in front]
        lines += ["## Pareto front", "", markdown_table(rows, [*PARETO_COLUMNS, "on front", "answer"]), ""]
    return "\n".join(lines)


def render_report(study: optuna.Study) -> str:
    """report.md from what the study stored (the answers finalize chose); chooses nothing."""

    zero = default_trial(study)
    defaults = zero.params if zero is not None else {}
    counts = count_trials(study)
    attrs = study.user_attrs
    best = chosen_trial(study)
    lines = [
        f"# autotune report: {study.study_name}",
        "",
        f"- model: `{attrs.get('model_path')}` (sha256 {str(attrs.get('model_sha256', ''))[:12]})",
        f"- target: {attrs.get('target')}{' (build only)' if attrs.get('build_only') else ''}",
        *([f"- inputs tuned: {inputs_line(attrs)}"] if inputs_line(attrs) else []),
        f"- trials: {counts['complete']} complete, {counts['failed']} failed, {counts['pruned']} pruned; "
        f"{_counted_line(study)}",
        f"- tolerance: {tolerance_line(attrs)}",
        f"- wall time: {wall_s(attrs):.1f} s (start-up and trials {float(attrs.get('elapsed_s', 0.0)):.1f} s, "
        f"finalize {float(attrs.get('finalize_s', 0.0) or 0.0):.1f} s)"
        + (f" of a {float(attrs['budget_s']):.0f} s budget" if attrs.get("budget_s") else ""),
        f"- written: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
    ]
    for warning in attrs.get("warnings", []):
        lines += [f"> **Warning**: {warning}", ""]
    roles = roles_table(attrs.get("output_roles", []))
    if roles:
        lines += [
            "## Output roles",
            "",
            "How each output is judged against FP32 (`--output-role NAME=ROLE` overrides):",
            "",
        ]
        lines += [*roles, ""]
    if best is not None:
        lines += ["## The answer", "", f"Trial {best.number}: {config_summary(best.params, defaults)}", ""]
        lines += [f"- {line}" for line in headline(study)] + [""]
        floor = aa_line(study)
        if floor:
            lines += [floor, ""]
        rows = answer_rows(study, defaults)
        if rows:
            lines += ["### Per deployment batch", "", markdown_table(rows, ANSWER_COLUMNS), ""]
    elif not attrs.get("build_only"):
        lines += ["## The answer", "", "Not chosen yet (the study has not been finalized).", ""]
    front = shown_front(study)
    if front:
        rows = [trial_row(e.trial, defaults) | {"answer": e.mark, "on front": fmt(e.on_front)} for e in front]
        lines += [
            "## Pareto front",
            "",
            "Feasible measured trials, throughput up and error down (each trial's own measurement), then any "
            "answer off that front (answers are chosen by paired re-measurement).",
            "",
            markdown_table(rows, [*PARETO_COLUMNS, "on front", "answer"]),
            "",
        ]
        lines += [f"![Pareto front]({PARETO_PLOT})", ""]
    lines += search_notes(study)
    if attrs.get("build_only"):
        rows = build_rows(study, defaults)
        if rows:
            lines += ["## Builds", "", markdown_table(rows, BUILD_COLUMNS), ""]
    study_dir = Path(attrs.get("study_dir", "."))
    compared = best if best is not None and not attrs.get("build_only") else _fewest_layers(study)
    if compared is not None and zero is not None:
        lines += layer_comparison(study_dir, zero.number, compared.number)
    lines += profile_section(study_dir)
    if attrs.get("profile_skipped"):
        lines += ["## Where the time goes", "", f"Not profiled in this study's budget: {attrs['profile_skipped']}.", ""]
    lines += sensitivity_section(study, best)
    rejected = rejected_trials(study)
    if rejected:
        lines += ["## Rejected by the accuracy gate", ""]
        lines += [f"- trial {r['trial']}: {r['rejected_by']}" for r in rejected]
        lines.append("")
    reasons = failure_reasons(study)
    if reasons:
        lines += ["## Failed and pruned trials", ""]
        lines += [f"- {count} x {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines.append("")
    return "\n".join(lines)


def sensitivity_section(study: optuna.Study, best: FrozenTrial | None) -> list[str]:
    """The layers that cost a quantized trial its accuracy (`autotune.sensitivity`): the answer's
    when it is quantized, else the most accurate quantized trial's; and which stayed in float."""
    # a fully quantized trial is not ranked (autotune.sensitivity): show one that was
    quantized = [
        t for t in _complete(study) if details(t).get("build", {}).get("mixed_precision", {}).get("sensitivity")
    ]
    if not quantized:
        return []
    if best is not None and best in quantized:
        trial = best
    else:
        trial = min(quantized, key=lambda t: (t.user_attrs.get("normalized_error", float("inf")), t.number))
    mixed = details(trial)["build"]["mixed_precision"]
    kept = list(mixed.get("kept_float", []))
    gemm = mixed.get("kept_float_gemm")  # keep_float_layers non_gemm_auto: the GEMM layers are the news
    named = kept if gemm is None else gemm
    kept_line = f"{len(kept)} of {mixed.get('quantized_layers', '?')} layers kept in float" + (
        f" (over {MOSTLY_FLOAT:.0%}: float, not INT8; not a successful repair)" if mixed.get("mostly_float") else ""
    ) + (
        "" if gemm is None or len(gemm) == len(kept) else
        f" (every layer but Conv/Gemm/MatMul, and {len(gemm)} of those)"
    )  # fmt: skip
    lines = [
        f"## Quantization sensitivity (trial {trial.number}, {trial.params.get('precision')})",
        "",
        "Error each quantized layer adds on its own (its output on Q/DQ inputs vs FP32 inputs, worst channel), "
        f"on calibration samples; {kept_line}"
        + (f": {', '.join(f'`{name}`' for name in named[:12])}{' ...' if len(named) > 12 else ''}" if named else "")
        + ".",
        "",
    ]
    rows = [
        {"layer": layer["node"], "op": layer["op"], "relative error": fmt(layer["noise"]),
         "SQNR dB": fmt(layer["sqnr_db"], 3), "worst input": layer["tensor"],
         "kept float": "yes" if layer["node"] in kept else ""}
        for layer in mixed.get("sensitivity", [])
    ]  # fmt: skip
    return [*lines, markdown_table(rows, ["layer", "op", "relative error", "SQNR dB", "worst input", "kept float"]), ""]


def _counted_line(study: optuna.Study) -> str:

    return f"{finished_count(study)} counted toward the goal (repeats and ruled-out configurations are not)"


def sources_section(study: optuna.Study) -> list[str]:
    """Where the trials came from and what each source brought (issue 27: what the sampled
    trials add over the recipes and the one-knob sweep)."""
    rows, reached = trial_sources(study)
    if not rows or study.user_attrs.get("build_only"):
        return []
    table = [
        {
            "origin": r.origin,
            "trials": r.asked,
            "wasted": r.wasted,
            "best throughput (samples/s)": f"{r.best_throughput:.4g}" if r.best_throughput else "-",
            "faster than the expert's first moves": r.beat_earlier if r.origin not in EXPERT_MOVES else "",
            "answers at batch": ", ".join(map(str, r.answers)),
        }
        for r in rows
    ]
    lines = [
        "## Where the trials came from",
        "",
        "Wasted: duplicates, ruled out, failed, or at least twice the defaults' time per sample. The expert's "
        "first moves are the defaults, the recipes, the one-knob sweep and its winners combined; a later trial "
        "counts as faster than them when its own throughput beats all of theirs at its batch.",
        "",
        markdown_table(table, list(table[0])),
        "",
    ]
    if reached["to_100"] is not None:
        lines += [
            f"The best trial so far reached 95% of the answer's own throughput at trial {reached['to_95']} and "
            f"100% at trial {reached['to_100']}.",
            "",
        ]
    return lines


def search_notes(study: optuna.Study) -> list[str]:
    """What the search learned and left out: where the trials came from, failure rules,
    dropped knobs, machine drift."""
    attrs = study.user_attrs
    lines: list[str] = sources_section(study)
    rules = [r for r in attrs.get("rules", []) if r.get("enforced")]
    if rules:
        lines += ["## Rules learned from failures (never proposed again)", ""]
        for rule in rules:
            knobs = ", ".join(f"{k}={v}" for k, v in rule["knobs"].items())
            source = f"trials {', '.join(map(str, rule['trials']))}" if rule["trials"] else "from the space file"
            lines.append(f"- {knobs}: {rule_reason(rule)} ({source})")
        lines.append("")
    dropped = attrs.get("dropped_knobs") or {}
    if dropped:
        lines += ["## Knobs dropped before the search", ""]
        lines += [f"- {knob}: {why}" for knob, why in dropped.items()] + [""]
    drift = attrs.get("drift") or []
    if drift:
        worst = max(drift, key=lambda d: abs(d["ratio_to_baseline"] - 1.0))
        lines += [
            "## Machine drift (the defaults re-measured during the study)",
            "",
            "| after trials | ms per sample | vs trial 0 |",
            "|---|---|---|",
        ]
        lines += [f"| {d['after_trials']} | {d['ms_per_sample']:.4g} | {d['ratio_to_baseline']:.3f}x |" for d in drift]
        flagged = sum(1 for t in measured_trials(study) if "drift_ratio" in t.user_attrs)
        lines += [
            "",
            f"Largest drift {worst['ratio_to_baseline']:.3f}x; {flagged} trials were measured after a control "
            "that drifted by more than 10% (attribute `drift_ratio`). The answers above come from the paired "
            "re-measurement, which drift does not bias.",
            "",
        ]
    return lines


BUILD_COLUMNS = ["trial", "build_time_s", "engine_size_bytes", "layer_count", "identical_engine_to", "config"]
LAYER_COLUMNS = ["name", "type", "onnx_nodes", "datatypes", "tactic"]
MAX_LAYER_ROWS = 80


def build_rows(study: optuna.Study, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per built trial of a build-only study."""
    rows = []
    for trial in _complete(study):
        build = details(trial).get("build", {})
        rows.append(
            {
                "trial": trial.number,
                "build_time_s": build.get("build_time_s"),
                "engine_size_bytes": build.get("engine_size_bytes"),
                "layer_count": build.get("layer_count"),
                "identical_engine_to": trial.user_attrs.get("shared_measurement_with_trial"),
                "config": config_summary(trial.params, defaults),
            }
        )
    return rows


def _fewest_layers(study: optuna.Study) -> FrozenTrial | None:
    built = [t for t in _complete(study) if details(t).get("build", {}).get("layer_count")]
    return min(built, key=lambda t: (details(t)["build"]["layer_count"], t.number)) if built else None


def layer_comparison(study_dir: Path, default_number: int, other_number: int) -> list[str]:
    """Markdown: the engine layers of trial 0 and of the compared trial (which ONNX nodes
    fused into which layer, datatypes, tactics)."""
    lines: list[str] = []
    for title, number in (("trial 0 (defaults)", default_number), (f"trial {other_number}", other_number)):
        layers = trial_layers(study_dir, number)
        if not layers or (number == other_number and number == default_number and lines):
            continue
        rows = [
            {
                "name": layer.get("name"),
                "type": layer.get("type"),
                "onnx_nodes": ", ".join(layer.get("onnx_nodes", []))[:120],
                "datatypes": ", ".join(layer.get("datatypes", [])),
                "tactic": str(layer.get("tactic", ""))[:60],
            }
            for layer in layers[:MAX_LAYER_ROWS]
        ]
        more = f" (first {MAX_LAYER_ROWS} of {len(layers)})" if len(layers) > MAX_LAYER_ROWS else ""
        lines += [f"## Engine layers: {title}, {len(layers)} layers{more}", "", markdown_table(rows, LAYER_COLUMNS), ""]
    return lines


def tolerance_line(attrs: dict[str, Any]) -> str:
    """The accuracy gate of a study, in words, from its user attributes.

    Studies recorded before the scale gate existed have no `accuracy_mode`: they were elementwise.
    """
    mode = attrs.get("accuracy_mode") or "elementwise"
    if mode == "auto":
        roles = attrs.get("output_roles", [])
        judged = ", ".join(f"{r['output']}: {r['role']}" for r in roles) or "roles inferred per trial"
        gate = (
            f"each output judged by its role ({judged}; see Output roles), generic outputs by max abs error ≤ "
            f"{float(attrs.get('max_error', 1e-2)) * 100:g}% of their range (auto)"
        )
    elif mode == "scale":
        gate = (
            f"max abs error ≤ {float(attrs.get('max_error', 1e-2)) * 100:g}% of each output's range "
            f"and cosine ≥ {float(attrs.get('min_cosine', 0.99)):g} (scale)"
        )
    else:
        gate = (
            f"every element within atol {float(attrs.get('atol', 1e-2)):g} or rtol {float(attrs.get('rtol', 1e-2)):g} "
            "(elementwise)"
        )
    gate += " against the FP32 reference"
    metric = attrs.get("metric")
    return f"task metric {metric} decides pass/fail; per-output errors recorded under {gate}" if metric else gate


def rejected_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """Measured trials that completed but are infeasible, with what rejected each.

    Each is `{"trial": n, "rejected_by": str, "error": float}`: the accuracy criterion that
    rejected it and by how much (its `rejected_by` attribute), and/or the latency SLA it missed.
    Copies of an identical configuration (`duplicate_of`) are left out: their original is listed.
    """
    rejected = []
    for trial in measured_trials(study):
        if is_feasible(trial):
            continue
        attrs = trial.user_attrs
        reasons = [str(attrs["rejected_by"])] if attrs.get("rejected_by") else []
        constraints = attrs.get("constraints", [])
        if len(constraints) > 1 and constraints[1] > 0:
            reasons.append(
                f"median latency {fmt(attrs.get('latency_ms_p50'))} ms is {constraints[1]:.3g} ms over the latency SLA"
            )
        if not reasons:
            reasons.append("no reason recorded" if attrs.get("passed", True) else "over the accuracy tolerance")
        rejected.append(
            {"trial": trial.number, "rejected_by": "; ".join(reasons), "error": attrs.get("normalized_error")}
        )
    return rejected


def profile_section(study_dir: Path) -> list[str]:
    """The "Where the time goes" section from the study's `profile.json` (none without one)."""

    data = load_profile(study_dir)
    return render_section(data) if data else []
