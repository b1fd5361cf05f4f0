"""Finalizing a study: paired speedup of the best over the defaults, best/, report, pruning."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.report import (
    BEST_DIR,
    INPUTS_FILE,
    PARETO_PLOT,
    REPORT_FILE,
    Speedup,
    best_trial,
    chosen_trial,
    default_trial,
    pareto_front,
    plot_pareto,
    regenerate_model,
    render_report,
    write_deploy_dir,
)
from autotune.study import prune_trial_dirs
from autotune.targets.base import TargetOptions
from autotune.trial import MODEL_FILE, PairedRequest, run_paired


@dataclass
class Finalized:
    """What finalizing produced."""

    best_number: int | None
    speedup: Speedup | None
    best_dir: Path | None
    report: Path


def finalize(
    study: Any,
    *,
    paired_rounds: int = 21,
    run_paired_fn: Callable[[PairedRequest], dict[str, Any]] = run_paired,
    prune: bool = True,
) -> Finalized:
    """Writes `best/` (deployable files, manifest, report) and `report.md` for `study`.

    Args:
        study (optuna.Study): a study written by `run_study`.
        paired_rounds (int): interleaved rounds of the final best-vs-defaults measurement;
            0 skips it. Default: 21.
        run_paired_fn (Callable): runs the paired measurement (in a worker for GPU targets).
            Default: `run_paired` in this process.
        prune (bool): remove artifacts of trials off the Pareto front. Default: True.
    """
    study_dir = Path(study.user_attrs["study_dir"])
    best = best_trial(study)
    zero = default_trial(study)
    speedup = None
    paired: dict[int, Speedup] = {}
    if best is not None and zero is not None and paired_rounds > 0 and not study.user_attrs.get("build_only"):
        best, speedup, paired = choose_by_paired_speedup(study, zero, paired_rounds, run_paired_fn)
    best_dir = None
    if best is not None:
        best_dir = study_dir / BEST_DIR
        staging = study_dir / (BEST_DIR + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        write_deploy_dir(study, best, staging, speedup=speedup)
        plot = plot_pareto(study, staging / PARETO_PLOT)
        (staging / REPORT_FILE).write_text(render_report(study, speedup, best))
        if plot is not None:
            shutil.copyfile(plot, study_dir / PARETO_PLOT)
        shutil.rmtree(best_dir, ignore_errors=True)
        staging.rename(best_dir)
    report = study_dir / REPORT_FILE
    report.write_text(render_report(study, speedup, best))
    if speedup is not None:
        study.set_user_attr("speedup", speedup.__dict__)
    if paired:
        study.set_user_attr("paired_candidates", {str(n): s.__dict__ for n, s in paired.items()})
    if best is not None:
        study.set_user_attr("best_trial", best.number)
    upload_front_artifacts(study, best_dir)
    if prune and not study.user_attrs.get("build_only"):  # build-only keeps every engine
        keep = {t.number for t in pareto_front(study)} | {0} | {int(n) for n in paired}
        if best is not None:
            keep.add(best.number)
        prune_trial_dirs(study_dir, keep)
    return Finalized(best.number if best else None, speedup, best_dir, report)


ARTIFACT_DIR = "artifacts"
MAX_ARTIFACT_BYTES = 200 << 20


def upload_front_artifacts(study: Any, best_dir: Path | None) -> None:
    """Puts the files of the Pareto trials and best/ in Optuna's artifact store, attached to
    the study (finished trials are read-only), named `trial-<n>-<file>`, so the dashboard
    shows them. Files already uploaded are not repeated."""
    from optuna.artifacts import get_all_artifact_meta, upload_artifact

    study_dir = Path(study.user_attrs["study_dir"])
    store = artifact_store(study_dir)
    best = chosen_trial(study)
    uploaded = {meta.filename for meta in get_all_artifact_meta(study)}
    trials = {t.number: t for t in [*pareto_front(study), *([best] if best is not None else [])]}
    for trial in trials.values():
        trial_dir = study_dir / "trials" / str(trial.number)
        files = [trial_dir / name for name in ("metrics.json", MODEL_FILE, "build.log", "engine.plan")]
        if best is not None and best_dir is not None and trial.number == best.number:
            files += [best_dir / name for name in ("manifest.json", REPORT_FILE, PARETO_PLOT)]
        for path in files:
            if not path.is_file() or path.stat().st_size > MAX_ARTIFACT_BYTES:
                continue
            named = path.parent / f"trial-{trial.number}-{path.name}"
            if named.name in uploaded:
                continue
            shutil.copyfile(path, named)
            try:
                upload_artifact(artifact_store=store, file_path=str(named), study_or_trial=study)
            finally:
                named.unlink(missing_ok=True)
            uploaded.add(named.name)


def artifact_store(study_dir: Path) -> Any:
    """The study's file-system artifact store (`<study>/artifacts`)."""
    from optuna.artifacts import FileSystemArtifactStore

    (study_dir / ARTIFACT_DIR).mkdir(exist_ok=True)
    return FileSystemArtifactStore(str(study_dir / ARTIFACT_DIR))


FINALISTS = 3


def finalists(study: Any, count: int = FINALISTS) -> list[Any]:
    """The fastest feasible measured trials (by their own measurement), trial 0 excluded."""
    from autotune.report import is_feasible, measured_trials

    feasible = [t for t in measured_trials(study) if t.number != 0 and t.values and is_feasible(t)]
    return sorted(feasible, key=lambda t: -t.values[0])[:count]


def choose_by_paired_speedup(
    study: Any, zero: Any, rounds: int, run_paired_fn: Callable[[PairedRequest], dict[str, Any]]
) -> tuple[Any, Speedup | None, dict[int, Speedup]]:
    """Re-measures the finalists interleaved against trial 0 and keeps the best paired speedup.

    A trial's own measurement can be lucky (taken while the machine was quiet); the paired
    re-measurement is not. When no finalist beats the defaults, the defaults are the answer.

    Returns:
        (chosen trial, its speedup or None when trial 0 is chosen, every finalist's speedup)
    """
    paired = {t.number: measure_speedup(study, zero, t, rounds, run_paired_fn) for t in finalists(study)}
    if not paired:
        return zero, None, paired
    number = max(paired, key=lambda n: paired[n].median)
    if paired[number].median < 1.0:
        return zero, None, paired
    chosen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    return chosen, paired[number], paired


def measure_speedup(
    study: Any, zero: Any, best: Any, rounds: int, run_paired_fn: Callable[[PairedRequest], dict[str, Any]]
) -> Speedup:
    study_dir = Path(study.user_attrs["study_dir"])
    with np.load(study_dir / INPUTS_FILE) as data:
        pool = {k: data[k] for k in data.files}
    models = []
    for trial in (zero, best):
        path = study_dir / "trials" / str(trial.number) / MODEL_FILE
        models.append(path if path.exists() else regenerate_model(study, trial, path.parent))
    request = PairedRequest(
        target_name=study.user_attrs["target"],
        target_options=TargetOptions(cache_dir=study_dir),
        model_a=models[0],
        config_a=dict(zero.params),
        model_b=models[1],
        config_b=dict(best.params),
        input_pool=pool,
        dynamic_batch=bool(study.user_attrs.get("dynamic_batch")),
        workdir=study_dir / "paired",
        rounds=rounds,
    )
    try:
        result = run_paired_fn(request)
    finally:
        shutil.rmtree(study_dir / "paired", ignore_errors=True)
    return Speedup(
        median=result["speedup_median"],
        p25=result["speedup_p25"],
        p75=result["speedup_p75"],
        rounds=result["rounds"],
        default_ms_per_sample=result["a_ms_per_sample_median"],
        best_ms_per_sample=result["b_ms_per_sample_median"],
    )
