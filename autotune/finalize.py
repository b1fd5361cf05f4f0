"""Finalizing a study: one answer per deployment batch, chosen by paired re-measurement.

For every batch size the study measured, the fastest feasible candidates at that batch are
re-measured interleaved against the defaults *at the same batch* (a speedup of batch 16 over
batch 1 says nothing about either). Before that, the defaults are paired against themselves by
the very same procedure (the A/A control): its interval is the noise floor, and a candidate
whose interval overlaps it made no measurable difference, so the defaults stay the answer.

The choice is stored in the study (`answers`, `best_trial`, `aa_control`); `report`, `status`,
`list`, `export` and the dashboard read it and never choose again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.layout import (
    ARTIFACT_DIR,
    BEST_DIR,
    INPUTS_FILE,
    METRICS_FILE,
    PAIRED_DIR,
    REPORT_FILE,
    prune_trial_dirs,
    trial_dir,
)
from autotune.measure import aa_interval_overlaps
from autotune.ort_logging import route_onnxruntime_logging
from autotune.profile import PROFILE_FILE, profile_after_search
from autotune.report import (
    MANIFEST_FILE,
    PARETO_PLOT,
    Answer,
    Speedup,
    chosen_trial,
    default_trial,
    defaults_at_batch,
    is_feasible,
    measured_trials,
    pareto_front,
    plot_pareto,
    regenerate_model,
    render_report,
    trial_by_number,
    write_deploy_dir,
)
from autotune.targets.base import TargetOptions
from autotune.trial import MODEL_FILE, PairedRequest, run_paired

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.trial import FrozenTrial

    from autotune.workers import RayExecutor

# Each block of a paired measurement is timed for this long (less when the user capped a
# measurement lower with --max-measure-s: quick studies get quick finalizes).
PAIRED_ROUND_S = 0.2
# An A/A interval wider than this is re-measured once (the usual width is 0.01-0.05).
AA_RETRY_WIDTH = 0.1
# Candidates re-measured per batch: more at batch 1 and at the batch of the best throughput
# (the two headline answers), one elsewhere.
HEADLINE_FINALISTS = 2
OTHER_FINALISTS = 1


@dataclass
class Finalized:
    """What finalizing produced."""

    best_number: int | None
    speedup: Speedup | None
    best_dir: Path | None
    report: Path
    answers: dict[int, Answer]


def finalize(
    study: optuna.Study,
    *,
    paired_rounds: int = 21,
    prune: bool = True,
) -> Finalized:
    """Chooses the answer per batch (paired against the defaults at that batch, judged against
    the A/A noise floor), then writes `best/` (deployable files, manifest, report) and
    `report.md`.

    Args:
        study (optuna.Study): a study written by `run_study`.
        paired_rounds (int): interleaved rounds of each paired measurement; 0 skips them (the
            defaults are then every batch's answer). Default: 21.
        prune (bool): remove artifacts of trials off the Pareto front. Default: True.
    """
    route_onnxruntime_logging()  # finalize opens dozens of sessions: provider warnings once, in the log
    study_dir = Path(study.user_attrs["study_dir"])
    zero = default_trial(study)
    answers: dict[int, Answer] = {}
    aa: Speedup | None = None
    baseline = None if study.user_attrs.get("build_only") else zero  # what finalists are paired against
    with gpu_work(study) as gpu:
        # Paired measurements run in a GPU worker on GPU targets, else in this process.
        run_paired_fn = gpu.run_paired if gpu is not None else run_paired
        if baseline is not None and paired_rounds > 0:
            aa = measure_speedup(study, baseline, baseline, 1, paired_rounds, run_paired_fn)
            if aa.p75 - aa.p25 > AA_RETRY_WIDTH:
                # A burst of other work during the control would silence every real speedup:
                # measure it once more and keep the narrower interval.
                again = measure_speedup(study, baseline, baseline, 1, paired_rounds, run_paired_fn)
                aa = min(aa, again, key=lambda s: s.p75 - s.p25)
            study.set_user_attr("aa_control", asdict(aa))
        if baseline is not None:
            answers = choose_answers(study, baseline, paired_rounds, run_paired_fn, aa)
            study.set_user_attr("answers", {str(b): a.as_dict() for b, a in answers.items()})
        primary = primary_answer(answers, study.user_attrs.get("latency_sla_ms"))
        if primary is not None:
            best = trial_by_number(study, primary.trial)
            study.set_user_attr("best_batch", primary.batch_size)
        elif zero is not None and is_feasible(zero) and not study.user_attrs.get("build_only"):
            best = zero
        else:
            best = None if not study.user_attrs.get("build_only") else _first_built(study)
        if best is not None:
            study.set_user_attr("best_trial", best.number)
        speedup = primary.speedup if primary is not None and primary.verdict == "faster" else None
        if speedup is not None:
            study.set_user_attr("speedup", asdict(speedup))
        else:
            study.set_user_attr("speedup", None)
        profile_at_finalize(study, gpu)  # never raises: a failed profile is noted, not fatal
    best_dir = write_best(study, best) if best is not None else None
    report = study_dir / REPORT_FILE
    report.write_text(render_report(study))
    upload_front_artifacts(study, best_dir)
    if prune and not study.user_attrs.get("build_only"):  # build-only keeps every engine
        keep = {t.number for t in pareto_front(study)} | {a.trial for a in answers.values()}
        keep |= {n for a in answers.values() for n in a.candidates}
        if zero is not None:
            keep.add(zero.number)
        if best is not None:
            keep.add(best.number)
        prune_trial_dirs(study_dir, keep)
    return Finalized(best.number if best else None, speedup, best_dir, report, answers)


class GpuWork:
    """Finalize's GPU work (paired measurements, the profile) on a Ray executor shaped like the
    trials' (one GPU a task, a forked child of the worker), started at first use: on the
    study's `--ray-address` cluster when it had one, else on a local cluster for finalize. The
    process that finalizes (the daemon) never initializes CUDA. The signal handlers in place
    (the daemon's stop handling) survive Ray's start and shutdown."""

    SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.executor: RayExecutor | None = None
        main = threading.current_thread() is threading.main_thread()
        self._handlers = {n: signal.getsignal(getattr(signal, n)) for n in self.SIGNALS} if main else {}

    def _restore_handlers(self) -> None:
        for name, handler in self._handlers.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)

    def _executor(self) -> RayExecutor:
        if self.executor is None:
            from autotune.workers import RayExecutor

            try:
                self.executor = RayExecutor(1, gpu=True, address=self.address)
            finally:
                self._restore_handlers()  # ray.init replaced them
        return self.executor

    def run_paired(self, request: PairedRequest) -> dict[str, Any]:
        return self._executor().run_paired(request)

    def profile(self, study: optuna.Study) -> dict[str, Any]:
        inputs = Path(study.user_attrs["study_dir"]) / INPUTS_FILE
        return self._executor().profile(study_copy(study), (inputs,))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None
            self._restore_handlers()  # ray.shutdown left SIGTERM at its default


@contextlib.contextmanager
def gpu_work(study: optuna.Study) -> Iterator[GpuWork | None]:
    """A `GpuWork` for a study whose target needs a GPU, else None (CPU targets measure and
    profile in this process, as the trials are over and the cores free); closed after."""
    from autotune.targets import target_class

    options = TargetOptions(build_only=bool(study.user_attrs.get("build_only")))
    if not target_class(study.user_attrs["target"]).needs_gpu(options):
        yield None
        return
    work = GpuWork((study.user_attrs.get("start_options") or {}).get("ray_address"))
    try:
        yield work
    finally:
        work.close()


def study_copy(study: optuna.Study) -> tuple[optuna.storages.InMemoryStorage, str]:
    """The study in an in-memory Optuna storage (trial numbers and user attributes as stored),
    and its name: what a worker reads instead of the real storage, which it never touches."""
    import optuna

    storage = optuna.storages.InMemoryStorage()
    copy = optuna.create_study(storage=storage, study_name=study.study_name, directions=study.directions)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(study.get_trials(deepcopy=False))
    return storage, study.study_name


def profile_at_finalize(study: optuna.Study, gpu: GpuWork | None) -> None:
    """`profile_after_search` here (CPU targets) or in a GPU worker on a copy of the study, its
    recorded attributes applied here; never raises (a profile is a report, not the answer)."""
    if gpu is None:
        profile_after_search(study)
        return
    try:
        result = gpu.profile(study)
    except Exception as exc:  # noqa: BLE001 - finalize must never fail on a profile
        message = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        logging.getLogger("autotune").warning("profile skipped: %s", message)
        study.set_user_attr("profile_error", message)
        return
    for key, value in result["set_user_attrs"].items():
        study.set_user_attr(key, value)
    path = Path(study.user_attrs["study_dir"]) / PROFILE_FILE
    if result["data"] is not None and not path.exists():  # profiled on another machine
        path.write_text(json.dumps(result["data"], indent=2, default=str) + "\n")
    study.set_user_attr("profile_worker", {"pid": result["worker_pid"], "ray_node_id": result["ray_node_id"]})


def write_best(study: optuna.Study, best: FrozenTrial) -> Path:
    """Writes `best/` for the stored choice `best` (atomically: staged, then renamed)."""
    study_dir = Path(study.user_attrs["study_dir"])
    best_dir = study_dir / BEST_DIR
    staging = study_dir / (BEST_DIR + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    write_deploy_dir(study, best, staging)
    plot = plot_pareto(study, staging / PARETO_PLOT)
    (staging / REPORT_FILE).write_text(render_report(study))
    if plot is not None:
        shutil.copyfile(plot, study_dir / PARETO_PLOT)
    shutil.rmtree(best_dir, ignore_errors=True)
    staging.rename(best_dir)
    return best_dir


def rerender(study: optuna.Study) -> Path:
    """`autotune report`: renders report.md (and best/'s copy and plot) from the stored
    choice; never re-chooses, never re-measures."""
    study_dir = Path(study.user_attrs["study_dir"])
    text = render_report(study)
    report = study_dir / REPORT_FILE
    report.write_text(text)
    best_dir = study_dir / BEST_DIR
    if best_dir.is_dir():
        (best_dir / REPORT_FILE).write_text(text)
        plot = plot_pareto(study, best_dir / PARETO_PLOT)
        if plot is not None:
            shutil.copyfile(plot, study_dir / PARETO_PLOT)
    else:
        plot_pareto(study, study_dir / PARETO_PLOT)
    return report


def _first_built(study: optuna.Study) -> FrozenTrial | None:
    built = [t for t in measured_trials(study)]
    return min(built, key=lambda t: t.number) if built else None


def primary_answer(answers: dict[int, Answer], latency_sla_ms: float | None) -> Answer | None:
    """The study's answer: the highest paired throughput among the per-batch answers whose
    latency per batch meets the SLA (all of them without one)."""
    eligible = [
        a for a in answers.values() if latency_sla_ms is None or a.ms_per_sample * a.batch_size <= latency_sla_ms
    ]
    if not eligible:
        eligible = [answers[min(answers)]] if answers else []
    return max(eligible, key=lambda a: (a.samples_per_s, -a.batch_size)) if eligible else None


def finalists_by_batch(study: optuna.Study, zero: FrozenTrial) -> dict[int, list[FrozenTrial]]:
    """Per batch size, the fastest feasible measured candidates (by their own measurement),
    one per distinct artifact, none identical to the defaults at that batch."""
    by_batch: dict[int, list[FrozenTrial]] = {}
    for trial in measured_trials(study):
        if not trial.values or not is_feasible(trial) or "shared_measurement_with_trial" in trial.user_attrs:
            continue
        by_batch.setdefault(int(trial.user_attrs.get("batch_size", 1)), []).append(trial)
    best_batch = max(by_batch, key=lambda b: max(t.values[0] for t in by_batch[b]), default=1)
    chosen: dict[int, list[FrozenTrial]] = {}
    for batch, trials in sorted(by_batch.items()):
        defaults = defaults_at_batch(study, zero, batch)
        seen = {defaults.user_attrs.get("digest")} if defaults is not None else set()
        count = HEADLINE_FINALISTS if batch in (1, best_batch) else OTHER_FINALISTS
        picked = []
        for trial in sorted(trials, key=lambda t: -t.values[0]):
            digest = trial.user_attrs.get("digest")
            if defaults is not None and trial.number == defaults.number:
                continue
            if digest and digest in seen:
                continue  # the same artifact as the defaults or as a finalist already in
            seen.add(digest)
            picked.append(trial)
            if len(picked) == count:
                break
        chosen[batch] = picked
    return chosen


def choose_answers(
    study: optuna.Study,
    zero: FrozenTrial,
    rounds: int,
    run_paired_fn: Callable[[PairedRequest], dict[str, Any]],
    aa: Speedup | None,
) -> dict[int, Answer]:
    """Per batch size measured: the finalists paired against the defaults at that batch; the
    best paired median wins when it is above 1 and clear of the A/A interval, else the
    defaults at that batch are the answer (where a trial ran them; else that batch has no
    answer). Defaults that fail the accuracy gate are never an answer: the best finalist is."""
    answers = {}
    for batch, finalists in finalists_by_batch(study, zero).items():
        defaults = defaults_at_batch(study, zero, batch)
        paired = {}
        if rounds > 0:
            paired = {t.number: measure_speedup(study, zero, t, batch, rounds, run_paired_fn) for t in finalists}
        winner = max(paired, key=lambda n: paired[n].median, default=None)
        # The defaults can be the answer only where they pass the accuracy gate.
        fallback = defaults.number if defaults is not None and is_feasible(defaults) else None
        if winner is None:
            if defaults is not None and fallback is not None:
                answers[batch] = Answer(batch, fallback, "defaults", None, _own_ms_per_sample(defaults), [])
            continue
        speedup = paired[winner]
        if defaults is not None and fallback is None:
            verdict = "defaults fail the gate"  # the fastest accurate finalist, whatever its speed
        elif aa is not None and aa_interval_overlaps(speedup, aa):
            verdict = "no measurable difference"
        elif speedup.median <= 1.0:
            verdict = "slower"
        else:
            verdict = "faster"
        if verdict in ("faster", "defaults fail the gate"):
            number = winner
        elif fallback is not None:  # not faster: the defaults at this batch stay the answer
            number = fallback
        else:
            continue  # the defaults at this batch would be the answer, but no trial ran them there
        per_sample = speedup.best_ms_per_sample if number == winner else speedup.default_ms_per_sample
        answers[batch] = Answer(batch, number, verdict, speedup, per_sample, list(paired), winner)
    return answers


def _own_ms_per_sample(trial: FrozenTrial) -> float:
    latency = float(trial.user_attrs.get("latency_ms_p50", 0.0))
    return latency / max(int(trial.user_attrs.get("batch_size", 1)), 1)


MAX_ARTIFACT_BYTES = 200 << 20


def upload_front_artifacts(study: optuna.Study, best_dir: Path | None) -> None:
    """Puts the files of the Pareto trials and best/ in Optuna's artifact store, attached to
    the study (finished trials are read-only), named `trial-<n>-<file>`, so the dashboard
    shows them: each trial's metrics, transformed model and profile, and the build logs and
    artifacts its target declares (`Target.log_files`, `Target.artifact_files`). Files
    already uploaded are not repeated."""
    from optuna.artifacts import get_all_artifact_meta, upload_artifact

    from autotune.targets import target_class

    target = target_class(study.user_attrs["target"])
    study_dir = Path(study.user_attrs["study_dir"])
    store = artifact_store(study_dir)
    best = chosen_trial(study)
    uploaded = {meta.filename for meta in get_all_artifact_meta(study)}
    trials = {t.number: t for t in [*pareto_front(study), *([best] if best is not None else [])]}
    for trial in trials.values():
        directory = trial_dir(study_dir, trial.number)
        names = (METRICS_FILE, MODEL_FILE, *target.log_files, *target.artifact_files, PROFILE_FILE)
        files = [directory / name for name in names]
        if best is not None and best_dir is not None and trial.number == best.number:
            files += [best_dir / name for name in (MANIFEST_FILE, REPORT_FILE, PARETO_PLOT)]
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


def artifact_store(study_dir: Path) -> FileSystemArtifactStore:
    """The study's file-system artifact store (`<study>/artifacts`)."""
    from optuna.artifacts import FileSystemArtifactStore

    (study_dir / ARTIFACT_DIR).mkdir(exist_ok=True)
    return FileSystemArtifactStore(str(study_dir / ARTIFACT_DIR))


def paired_round_s(study: optuna.Study) -> float:
    """Timed seconds per block of the paired measurements of `study`."""
    cap = (study.user_attrs.get("start_options") or {}).get("max_measure_s")
    try:
        return min(PAIRED_ROUND_S, float(cap)) if cap is not None else PAIRED_ROUND_S
    except (TypeError, ValueError):
        return PAIRED_ROUND_S


def measure_speedup(
    study: optuna.Study,
    zero: FrozenTrial,
    candidate: FrozenTrial,
    batch: int,
    rounds: int,
    run_paired_fn: Callable[[PairedRequest], dict[str, Any]],
) -> Speedup:
    """Pairs `candidate` against the defaults at `batch` (A = defaults, B = candidate)."""
    study_dir = Path(study.user_attrs["study_dir"])
    with np.load(study_dir / INPUTS_FILE) as data:
        pool = {k: data[k] for k in data.files}
    models = []
    for trial in (zero, candidate):
        path = trial_dir(study_dir, trial.number) / MODEL_FILE
        models.append(path if path.exists() else regenerate_model(study, trial, path.parent))
    config_a = dict(zero.params)
    if "batch_size" in config_a or batch != 1:
        config_a["batch_size"] = batch
    request = PairedRequest(
        target_name=study.user_attrs["target"],
        target_options=TargetOptions(cache_dir=study_dir),
        model_a=models[0],
        config_a=config_a,
        model_b=models[1],
        config_b=dict(candidate.params),
        input_pool=pool,
        dynamic_batch=bool(study.user_attrs.get("dynamic_batch")),
        workdir=study_dir / PAIRED_DIR,
        rounds=rounds,
        round_s=paired_round_s(study),
    )
    try:
        result = run_paired_fn(request)
    finally:
        shutil.rmtree(study_dir / PAIRED_DIR, ignore_errors=True)
    return Speedup.from_paired(result)
