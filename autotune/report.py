"""Reading a study back: Pareto front, the chosen best, the paired speedup, best/ and report.md."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autotune.trial import MODEL_FILE

BEST_DIR = "best"
REPORT_FILE = "report.md"
MANIFEST_FILE = "manifest.json"
PARETO_PLOT = "pareto.png"
INPUTS_FILE = "inputs.npz"


def _complete(study: Any) -> list[Any]:
    import optuna

    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def details(trial: Any) -> dict[str, Any]:
    """The nested facts of a trial: measurement, errors_per_output, timings_s, build, rewrites."""
    return dict(trial.user_attrs.get("details", {}))


def is_feasible(trial: Any) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", [1.0]))


def measured_trials(study: Any) -> list[Any]:
    """Complete trials that were measured themselves (not copies of an identical configuration)."""
    return [t for t in _complete(study) if "duplicate_of" not in t.user_attrs]


def pareto_front(study: Any) -> list[Any]:
    """Feasible, measured trials on the (throughput ↑, error ↓) front, fastest first."""
    if study.user_attrs.get("build_only"):
        return []
    candidates = [t for t in measured_trials(study) if is_feasible(t) and t.values]
    front = []
    for t in candidates:
        dominated = any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and tuple(o.values) != tuple(t.values)
            for o in candidates
        )
        if not dominated:
            front.append(t)
    unique = {}
    for t in sorted(front, key=lambda t: t.number):
        unique.setdefault(tuple(t.values), t)
    return sorted(unique.values(), key=lambda t: -t.values[0])


def best_trial(study: Any) -> Any | None:
    """The fastest feasible measured trial (highest throughput), or None."""
    front = pareto_front(study)
    return front[0] if front else None


def chosen_trial(study: Any) -> Any | None:
    """The trial finalize chose (by paired re-measurement), else the fastest feasible one."""
    number = study.user_attrs.get("best_trial")
    if number is not None:
        chosen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if chosen is not None:
            return chosen
    return best_trial(study)


def default_trial(study: Any) -> Any | None:
    return next((t for t in measured_trials(study) if t.number == 0), None)


def config_summary(params: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """Knobs that differ from trial 0, as `k=v` pairs ("defaults" when none differ)."""
    defaults = defaults or {}
    parts = [f"{k}={v}" for k, v in params.items() if defaults.get(k, object()) != v]
    return ", ".join(parts) if parts else "defaults"


def trial_row(trial: Any, defaults: dict[str, Any]) -> dict[str, Any]:
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


def failure_reasons(study: Any) -> dict[str, int]:
    """Failure and pruning reasons, summarized by their first clause, with counts."""
    import optuna

    reasons: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED):
            reason = str(t.user_attrs.get("reason", "no reason recorded"))
            key = reason.split(" (")[0][:120]
            reasons[key] = reasons.get(key, 0) + 1
    return reasons


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the libraries a result depends on (plus `extra` packages)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in (
        *extra,
        "autotune",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "onnx-graphsurgeon",
        "polygraphy",
        "optuna",
        "ray",
        "numpy",
        "tensorrt",
        "tensorrt-rtx-cu13",
        "tensorrt_rtx",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
    }
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            facts["gpus"] = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return facts


@dataclass
class Speedup:
    """The paired speedup of the best configuration over trial 0 (the target's defaults)."""

    median: float
    p25: float
    p75: float
    rounds: int
    default_ms_per_sample: float
    best_ms_per_sample: float


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


def plot_pareto(study: Any, out: Path) -> Path | None:
    """Scatter of throughput against error: feasible, infeasible, and the front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_xscale("log")
    ax.set_xlabel("output error (max abs error / max |reference|, floored at 1e-4)")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title(f"{study.study_name}: {len(trials)} measured trials")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def render_report(study: Any, speedup: Speedup | None, best: Any | None) -> str:
    from autotune.study import count_trials

    zero = default_trial(study)
    defaults = zero.params if zero is not None else {}
    counts = count_trials(study)
    attrs = study.user_attrs
    lines = [
        f"# autotune report: {study.study_name}",
        "",
        f"- model: `{attrs.get('model_path')}` (sha256 {str(attrs.get('model_sha256', ''))[:12]})",
        f"- target: {attrs.get('target')}{' (build only)' if attrs.get('build_only') else ''}",
        f"- trials: {counts['complete']} complete, {counts['failed']} failed, {counts['pruned']} pruned",
        f"- tolerance: atol {attrs.get('atol')}, rtol {attrs.get('rtol')} against the FP32 reference",
        f"- wall time: {fmt(attrs.get('elapsed_s'))} s",
        f"- written: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
    ]
    for warning in attrs.get("warnings", []):
        lines += [f"> **Warning**: {warning}", ""]
    if best is not None:
        lines += [
            "## Best feasible configuration",
            "",
            f"Trial {best.number}: {config_summary(best.params, defaults)}",
            "",
        ]
        candidates = study.user_attrs.get("paired_candidates", {})
        if speedup is None and candidates:
            ratios = ", ".join("trial {}: {:.2f}x".format(n, c["median"]) for n, c in candidates.items())
            lines += [
                f"No configuration beat the defaults in the paired re-measurement of the finalists ({ratios}): "
                "the defaults are the answer.",
                "",
            ]
        if speedup is not None:
            lines += [
                f"**Speedup over trial 0 (defaults): {speedup.median:.2f}x** (median of {speedup.rounds} interleaved "
                f"pair ratios, IQR {speedup.p25:.2f}-{speedup.p75:.2f}x; {speedup.default_ms_per_sample:.4g} -> "
                f"{speedup.best_ms_per_sample:.4g} ms per sample)",
                "",
            ]
    candidates = study.user_attrs.get("paired_candidates", {})
    if len(candidates) > 1:
        ratios = ", ".join(
            "trial {}: {:.2f}x (IQR {:.2f}-{:.2f})".format(n, c["median"], c["p25"], c["p75"])
            for n, c in candidates.items()
        )
        lines += [
            f"Finalists re-measured interleaved against trial 0 (median per-sample throughput ratio): {ratios}",
            "",
        ]
    front = pareto_front(study)
    if front:
        lines += ["## Pareto front", "", markdown_table([trial_row(t, defaults) for t in front], PARETO_COLUMNS), ""]
        lines += [f"![Pareto front]({PARETO_PLOT})", ""]
    if attrs.get("build_only"):
        rows = build_rows(study, defaults)
        if rows:
            lines += ["## Builds", "", markdown_table(rows, BUILD_COLUMNS), ""]
    study_dir = Path(attrs.get("study_dir", "."))
    compared = best if best is not None else _fewest_layers(study)
    if compared is not None and zero is not None:
        lines += layer_comparison(study_dir, zero.number, compared.number)
    reasons = failure_reasons(study)
    if reasons:
        lines += ["## Failed and pruned trials", ""]
        lines += [f"- {count} x {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines.append("")
    return "\n".join(lines)


BUILD_COLUMNS = ["trial", "build_time_s", "engine_size_bytes", "layer_count", "identical_engine_to", "config"]
LAYER_COLUMNS = ["name", "type", "onnx_nodes", "datatypes", "tactic"]
MAX_LAYER_ROWS = 80


def build_rows(study: Any, defaults: dict[str, Any]) -> list[dict[str, Any]]:
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


def _fewest_layers(study: Any) -> Any | None:
    built = [t for t in _complete(study) if details(t).get("build", {}).get("layer_count")]
    return min(built, key=lambda t: (details(t)["build"]["layer_count"], t.number)) if built else None


def trial_layers(study_dir: Path, number: int) -> list[dict[str, Any]]:
    """The per-layer table a target recorded for trial `number` (empty when it has none)."""
    path = study_dir / "trials" / str(number) / "metrics.json"
    try:
        return list(json.loads(path.read_text()).get("build", {}).get("layers", []))
    except (OSError, json.JSONDecodeError):
        return []


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


def write_deploy_dir(study: Any, trial: Any, dest: Path, *, speedup: Speedup | None = None) -> list[Path]:
    """Writes the deployable files of `trial` into `dest`: model after passes, target files,
    manifest.json with configuration, measurements, errors, versions and host, and commands."""
    from autotune.study import FLAT_ACCURACY, FLAT_MEASUREMENTS
    from autotune.targets import target_class
    from autotune.targets.base import Built, TargetOptions

    study_dir = Path(study.user_attrs.get("study_dir", ""))
    source_dir = study_dir / "trials" / str(trial.number)
    model = source_dir / MODEL_FILE
    if not model.exists():
        model = regenerate_model(study, trial, source_dir)
    dest.mkdir(parents=True, exist_ok=True)
    written = [dest / MODEL_FILE]
    shutil.copyfile(model, dest / MODEL_FILE)
    target_name = study.user_attrs["target"]
    target = target_class(target_name)(
        TargetOptions(cache_dir=study_dir, build_only=bool(study.user_attrs.get("build_only")))
    )
    artifact = _trial_artifact(source_dir, target_name) or model
    built = Built(
        artifact=artifact, info=dict(details(trial).get("build", {})), digest=trial.user_attrs.get("digest", "")
    )
    if artifact != model:
        written += target.export(built, trial.params, dest)
    commands = target.deploy_commands(built, trial.params)
    for name, text in commands.items():
        suffix = {"python": ".py"}.get(name, ".sh")
        path = dest / f"{name.replace(' ', '_')}{suffix}"
        path.write_text(text + "\n")
        written.append(path)
    manifest = {
        "study": study.study_name,
        "trial": trial.number,
        "target": target_name,
        "config": trial.params,
        "measurements": {
            **{k: trial.user_attrs[k] for k in (*FLAT_MEASUREMENTS, "batch_size") if k in trial.user_attrs},
            **details(trial).get("measurement", {}),
        },
        "errors": {
            **{k: trial.user_attrs[k] for k in FLAT_ACCURACY if k in trial.user_attrs},
            "per_output": details(trial).get("errors_per_output", {}),
        },
        "tolerance": {"atol": study.user_attrs.get("atol"), "rtol": study.user_attrs.get("rtol")},
        "build": details(trial).get("build", {}),
        "rewrites": details(trial).get("rewrites", {}),
        "speedup_over_defaults": speedup.__dict__ if speedup else None,
        "commands": commands,
        "versions": library_versions(),
        "host": host_facts(),
        "model_sha256": study.user_attrs.get("model_sha256"),
    }
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    written.append(dest / MANIFEST_FILE)
    return written


def _trial_artifact(source_dir: Path, target_name: str) -> Path | None:
    if target_name == "onnxruntime":
        return None
    for name in ("engine.plan", "engine.trt"):
        if (source_dir / name).exists():
            return source_dir / name
    return None


def regenerate_model(study: Any, trial: Any, source_dir: Path) -> Path:
    """Re-applies a trial's passes and precision (deterministic) when its files were pruned."""
    import numpy as np

    from autotune.targets import target_class
    from autotune.trial import calibration_feeds, transform_model

    study_dir = Path(study.user_attrs["study_dir"])
    with np.load(study_dir / INPUTS_FILE) as data:
        pool = {k: data[k] for k in data.files}
    source_dir.mkdir(parents=True, exist_ok=True)
    out = source_dir / MODEL_FILE
    transform_model(
        Path(study.user_attrs["model_path"]),
        trial.params,
        out,
        calibration_feeds=calibration_feeds(pool, bool(study.user_attrs.get("dynamic_batch"))),
        scheme=target_class(study.user_attrs["target"]).quantization_scheme,
    )
    return out
