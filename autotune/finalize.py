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
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna_dashboard import save_note

from autotune.answer import (
    FASTER,
    Answer,
    Speedup,
    chosen_trial,
    default_trial,
    defaults_at_batch,
    is_feasible,
    measured_trials,
    pareto_front,
    primary_answer,
    speedup_phrase,
    verdict,
)
from autotune.export import write_deploy_dir
from autotune.layout import (
    ARTIFACT_DIR,
    BEST_DIR,
    INPUTS_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    PAIRED_DIR,
    REPORT_FILE,
    prune_trial_dirs,
    trial_dir,
)
from autotune.ort_logging import route_onnxruntime_logging
from autotune.profile import PROFILE_FILE, profile_after_search, profile_estimate_s
from autotune.report import (
    PARETO_PLOT,
    dashboard_note,
    plot_pareto,
    render_report,
    trial_by_number,
)
from autotune.study import regenerate_model
from autotune.targets import target_class
from autotune.targets.base import TargetOptions
from autotune.trial import MODEL_FILE, PairedRequest, run_paired
from autotune.workers import RayExecutor

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

# Each block of a paired measurement is timed for this long (less when the user capped a
# measurement lower with --max-measure-s: quick studies get quick finalizes).
PAIRED_ROUND_S = 0.2
PAIRED_ROUNDS = 21  # interleaved rounds of a paired measurement, at most
# An A/A interval wider than this is re-measured once (the usual width is 0.01-0.05).
AA_RETRY_WIDTH = 0.1
# So is a control that measured the defaults this much slower than their own trial did: the machine
# was busy with something else (GPU run 9: 1.72x at finalize's start, 1.22x one pairing later; runs
# 6 and 8 agreed within 1.03x), and a control not quiet holds every pairing to MIN_ROUNDS.
AA_DISTURBED = 1.2
# Candidates re-measured per batch: more at batch 1 and at the batch of the best throughput
# (the two headline answers), one elsewhere.
HEADLINE_FINALISTS = 2
OTHER_FINALISTS = 1
# A paired measurement stops early (settled, or its share of the budget spent) only after this
# many rounds: fewer give an interquartile interval too loose to call anything.
MIN_ROUNDS = 9
# The A/A control stops after MIN_ROUNDS once its interval is at most this wide (p75 / p25 - 1);
# a machine whose control is that narrow, in one machine state, is quiet, and there a pairing may
# settle after QUIET_MIN_ROUNDS. Run 6 on an H100: A/A IQR 1.006-1.024 after 17 rounds, and every
# pairing's IQR under 0.4% wide after 9, its verdict clear of the floor by 40% or more.
QUIET_AA_WIDTH = 0.03
QUIET_MIN_ROUNDS = 5
# A finalist after the first at its batch is paired only when its own measurement is within the
# study's measurement noise (the largest drift of the defaults re-measured during the study, at
# least this) of the first's: one further behind cannot win the pairing (run 6: trial 28 at 1.47x
# the first's time cost 10.6 s of a 122 s finalize to lose).
FINALIST_GAP = 0.05
# The profile runs at finalize only when its estimate is at most this share of --budget; longer,
# it is left to `autotune profile` (run 6: about 27 s of a 240 s study, for host-side launch times).
PROFILE_SHARE = 0.1
# Of what is left before the deadline, this is kept for writing best/, report.md and the
# artifacts (seconds), and this share of a pairing's slice goes to its timed rounds (the rest
# is its sessions' build and warm-up).
WRITE_RESERVE_S = 5.0  # best/, report.md, the artifacts (bench/BUDGET.md: 3 s left a 60 s study 4 s over)
ROUNDS_SHARE = 0.75


@dataclass
class Pace:
    """Finalize's clock and progress: each paired measurement's share of the time left before the
    deadline, a log line per pairing with its verdict, and `finalize_progress` (phase, pairing i
    of n, elapsed, an estimate of what remains) for `status`."""

    study: optuna.Study
    deadline: float | None
    pairings: int = 0
    done: int = 0
    began: float = field(default_factory=time.monotonic)
    walls: list[float] = field(default_factory=list)

    def plan(self, pairings: int) -> None:
        self.pairings = pairings
        self._mark = time.monotonic()
        self.phase("paired re-measurement" if pairings else "choosing")

    def left_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def limit_s(self) -> float | None:
        """The timed rounds' share of what is left, for the next pairing (None: no deadline)."""
        left = self.left_s()
        if left is None:
            return None
        return max((left - WRITE_RESERVE_S) / max(self.pairings - self.done, 1) * ROUNDS_SHARE, 0.0)

    def room_for_one_more(self) -> bool:
        """Whether an extra pairing (the A/A control measured again) fits in what is left."""
        left = self.left_s()
        typical = max(self.walls, default=0.0)
        return left is None or left - WRITE_RESERVE_S > typical * (self.pairings - self.done + 1)

    def room_for_profile(self) -> bool:
        """Whether the profile (`profile_time_s`) fits in what is left before the deadline and
        in its share of the budget (`profile_fits_budget`)."""
        left = self.left_s()
        fits = left is None or left - WRITE_RESERVE_S > profile_time_s(self.study)
        return fits and profile_fits_budget(self.study)

    def finished(self, label: str, speedup: Speedup, called: str, aa: Speedup | None = None) -> None:
        now = time.monotonic()
        self.walls.append(now - getattr(self, "_mark", self.began))
        self._mark = now
        self.done += 1
        logging.getLogger("autotune").info(
            "finalize: pairing %d of %d, %s: %s -> %s (%.1f s)",
            self.done, self.pairings, label, speedup_phrase(speedup, aa), called, self.walls[-1],
        )  # fmt: skip
        self.phase("paired re-measurement")

    def phase(self, name: str) -> None:
        elapsed = time.monotonic() - self.began
        remaining = None
        if self.done and self.pairings > self.done:
            remaining = sum(self.walls) / self.done * (self.pairings - self.done)
        elif self.left_s() is not None and name not in ("done",):
            remaining = max(self.left_s() or 0.0, 0.0)
        self.study.set_user_attr(
            "finalize_progress",
            {"phase": name, "done": self.done, "of": self.pairings, "elapsed_s": elapsed, "remaining_s": remaining},
        )


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
    paired_rounds: int = PAIRED_ROUNDS,
    prune: bool = True,
    deadline: float | None = None,
    workers: RayExecutor | None = None,
) -> Finalized:
    """Chooses the answer per batch (paired against the defaults at that batch, judged against
    the A/A noise floor), then writes `best/` (deployable files, manifest, report) and
    `report.md`.

    Args:
        study (optuna.Study): a study written by `run_study`.
        paired_rounds (int): interleaved rounds of each paired measurement; 0 skips them (the
            defaults are then every batch's answer). Default: 21.
        prune (bool): remove artifacts of trials off the Pareto front. Default: True.
        deadline (float | None): `time.monotonic()` by which finalize should be done (the end of
            `--budget`): each paired measurement gets its share of what is left, rounds stop as
            soon as the verdict is settled, and the profile is left to `autotune profile` when
            it does not fit. Default: None (21 rounds each, profile always).
        workers (RayExecutor | None): the trials' Ray workers, kept up for finalize's GPU work
            (`reuse_workers`); None starts a cluster where the target needs a GPU. Default: None.
    """
    began = time.monotonic()
    pace = Pace(study, deadline)
    route_onnxruntime_logging()  # finalize opens dozens of sessions: provider warnings once, in the log
    study_dir = Path(study.user_attrs["study_dir"])
    zero = default_trial(study)
    answers: dict[int, Answer] = {}
    aa: Speedup | None = None
    baseline = None if study.user_attrs.get("build_only") else zero  # what finalists are paired against
    with gpu_work(study, workers) as gpu:
        # Paired measurements run in a GPU worker on GPU targets, else in this process.
        run_paired_fn = gpu.run_paired if gpu is not None else run_paired
        plan = finalists_by_batch(study, baseline) if baseline is not None and paired_rounds > 0 else {}
        pace.plan((1 if plan or (baseline is not None and paired_rounds > 0) else 0) + sum(map(len, plan.values())))
        min_rounds = MIN_ROUNDS
        if baseline is not None and paired_rounds > 0:
            aa = measure_speedup(
                study, baseline, baseline, 1, paired_rounds, run_paired_fn,
                time_limit_s=pace.limit_s(), settle_width=QUIET_AA_WIDTH,
            )  # fmt: skip
            if retry_control(aa) and pace.room_for_one_more():
                # A burst of other work during the control would silence every real speedup:
                # measure it once more and keep the narrower interval.
                again = measure_speedup(
                    study, baseline, baseline, 1, paired_rounds, run_paired_fn,
                    time_limit_s=pace.limit_s(), settle_width=QUIET_AA_WIDTH,
                )  # fmt: skip
                aa = min(aa, again, key=lambda s: s.p75 - s.p25)
            study.set_user_attr("aa_control", asdict(aa))
            pace.finished("A/A control: the defaults against themselves at batch 1", aa, "the noise floor")
            min_rounds = QUIET_MIN_ROUNDS if quiet(aa) else MIN_ROUNDS
            study.set_user_attr("paired_min_rounds", min_rounds)
        if baseline is not None:
            answers = choose_answers(study, baseline, paired_rounds, run_paired_fn, aa, pace, min_rounds)
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
        if pace.room_for_profile():
            pace.phase("profiling")
            if study.user_attrs.get("profile_skipped"):
                study.set_user_attr("profile_skipped", None)  # an earlier finalize's, not this one's
            estimate, started = profile_time_s(study), time.monotonic()
            profile_at_finalize(study, gpu)  # never raises: a failed profile is noted, not fatal
            took = time.monotonic() - started
            study.set_user_attr("profile_s", {"took": took, "estimated": estimate})  # the estimate, checked
            logging.getLogger("autotune").info("finalize: the profile took %.1f s (estimated %.1f s)", took, estimate)
        else:
            left = pace.left_s()
            why = (
                f"{max(left or 0.0, 0.0):.0f} s of the budget were left at finalize"
                if profile_fits_budget(study)
                else f"it would take about {profile_time_s(study):.0f} s, more than {PROFILE_SHARE:.0%} of the "
                f"{float(study.user_attrs['budget_s']):.0f} s budget"
            )
            study.set_user_attr("profile_skipped", f"left to `autotune profile {study.study_name}`: {why}")
            logging.getLogger("autotune").info("finalize: %s", study.user_attrs["profile_skipped"])
    pace.phase("writing best/ and report.md")
    study.set_user_attr("finalize_s", time.monotonic() - began)  # report.md's wall time counts it
    best_dir = write_best(study, best) if best is not None else None
    report = study_dir / REPORT_FILE
    report.write_text(render_report(study))
    save_note(study, dashboard_note(study))  # the dashboard names the answer and shows the same front
    upload_front_artifacts(study, best_dir)
    if prune and not study.user_attrs.get("build_only"):  # build-only keeps every engine
        keep = {t.number for t in pareto_front(study)} | {a.trial for a in answers.values()}
        keep |= {n for a in answers.values() for n in a.candidates}
        if zero is not None:
            keep.add(zero.number)
        if best is not None:
            keep.add(best.number)
        prune_trial_dirs(study_dir, keep)
    pace.phase("done")
    return Finalized(best.number if best else None, speedup, best_dir, report, answers)


class GpuWork:
    """Finalize's GPU work (paired measurements, the profile) on a Ray executor shaped like the
    trials' (one GPU a task, a forked child of the worker), started at first use: on the
    study's `--ray-address` cluster when it had one, else on a local cluster for finalize. The
    process that finalizes (the daemon) never initializes CUDA. The signal handlers in place
    (the daemon's stop handling) survive Ray's start and shutdown."""

    SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

    def __init__(self, address: str | None, executor: RayExecutor | None = None) -> None:
        self.address = address
        self.executor = executor  # the trials' workers, still up (`reuse_workers`): not closed here
        self.owned = executor is None
        main = threading.current_thread() is threading.main_thread()
        self._handlers = {n: signal.getsignal(getattr(signal, n)) for n in self.SIGNALS} if main else {}

    def _restore_handlers(self) -> None:
        for name, handler in self._handlers.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)

    def _executor(self) -> RayExecutor:
        if self.executor is None:
            try:
                self.executor = RayExecutor(1, gpu=True, address=self.address)
            finally:
                self._restore_handlers()  # ray.init replaced them
        return self.executor

    def run_paired(self, request: PairedRequest) -> dict[str, Any]:
        return self._executor().run_paired(request)

    def profile(self, study: optuna.Study) -> dict[str, Any]:
        inputs = Path(study.user_attrs["study_dir"]) / INPUTS_FILE
        return self._executor().profile(study_copy(study), profile_study_copy, (inputs,))

    def close(self) -> None:
        if self.executor is not None and self.owned:
            self.executor.close()
            self._restore_handlers()  # ray.shutdown left SIGTERM at its default
        self.executor = None


def needs_gpu(study: optuna.Study) -> bool:
    """Whether the study's target measures on a GPU (finalize's work then runs in GPU workers)."""
    options = TargetOptions.from_study_attrs(study.user_attrs)
    return bool(target_class(study.user_attrs["target"]).needs_gpu(options))


def reuse_workers(study: optuna.Study, executor: Any) -> RayExecutor | None:
    """The trials' executor when finalize should run its GPU work on it, kept up for it: on a GPU
    target, where the trials ran on Ray workers; else None. Starting a cluster again cost about
    6 s of a 122 s finalize on an H100 (run 6). A CPU target's finalize measures in this process,
    with the workers gone and the cores free."""
    return executor if isinstance(executor, RayExecutor) and needs_gpu(study) else None


@contextlib.contextmanager
def gpu_work(study: optuna.Study, workers: RayExecutor | None = None) -> Iterator[GpuWork | None]:
    """A `GpuWork` for a study whose target needs a GPU, else None (CPU targets measure and
    profile in this process, as the trials are over and the cores free); closed after, unless
    it runs on `workers` (the trials' executor, which its owner closes)."""

    if not needs_gpu(study):
        yield None
        return
    work = GpuWork((study.user_attrs.get("start_options") or {}).get("ray_address"), workers)
    try:
        yield work
    finally:
        work.close()


def profile_study_copy(copy: tuple[Any, str]) -> dict[str, Any]:
    """Profiles the study in `copy` (an in-memory Optuna storage and the study name, from
    `study_copy`): what finalize's profile task runs on a GPU worker. Returns the profile and
    the user attributes it set, for finalize to record in the real storage."""
    storage, name = copy
    study = optuna.load_study(study_name=name, storage=storage)
    before = dict(study.user_attrs)
    data = profile_after_search(study)
    changed = {k: v for k, v in study.user_attrs.items() if k not in before or before[k] != v}
    return {"data": data, "set_user_attrs": changed}


def study_copy(study: optuna.Study) -> tuple[optuna.storages.InMemoryStorage, str]:
    """The study in an in-memory Optuna storage (trial numbers and user attributes as stored),
    and its name: what a worker reads instead of the real storage, which it never touches."""
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


def finalize_estimate_s(study: optuna.Study, rounds: int = MIN_ROUNDS) -> float:
    """Seconds finalize will take on `study` as it stands (what `run_study` keeps from the budget):
    every pairing it will run (the A/A control, the finalists of each batch) at `rounds` rounds of
    two blocks (warm-up + timed runs, from the defaults' measured latency at that batch; MIN_ROUNDS,
    where the sequential rule ends a clear verdict) plus two session builds (trial 0's build time),
    the profile (`profile_estimate_s`) where it fits its share of the budget, and the writing."""
    zero = default_trial(study)
    if zero is None or study.user_attrs.get("build_only"):
        return 0.0
    round_s = paired_round_s(study)
    setup_s = 2 * float(zero.user_attrs.get("build_time_s", 0.0) or 0.0) + 0.5
    per_sample_s = (
        float(zero.user_attrs.get("latency_ms_p50", 0.0)) / 1e3 / max(int(zero.user_attrs.get("batch_size", 1)), 1)
    )

    def pairing_s(batch: int) -> float:
        at = defaults_at_batch(study, zero, batch)
        run_s = float(at.user_attrs["latency_ms_p50"]) / 1e3 if at is not None else per_sample_s * batch
        block_s = max(round_s, 5 * run_s) + max(0.05, 3 * run_s)
        return setup_s + rounds * 2 * block_s

    plan = finalists_by_batch(study, zero)
    total = pairing_s(1) + sum(len(finalists) * pairing_s(batch) for batch, finalists in plan.items())
    return total + (profile_time_s(study) if profile_fits_budget(study) else 0.0) + WRITE_RESERVE_S


def retry_control(aa: Speedup) -> bool:
    """Whether the A/A control is measured once more: its interval wider than `AA_RETRY_WIDTH`, or
    its defaults slower than their own trial's measurement by more than `AA_DISTURBED`.

    Example:
        >>> retry_control(Speedup(0.985, 0.962, 1.045, 9, 3.086, 3.022, default_own_ms_per_sample=1.792))  # run 9
        True
        >>> retry_control(Speedup(1.023, 1.021, 1.023, 9, 1.718, 1.683, default_own_ms_per_sample=1.69))  # run 8
        False
    """
    disturbed = (
        aa.default_own_ms_per_sample > 0 and aa.default_ms_per_sample > AA_DISTURBED * aa.default_own_ms_per_sample
    )
    return aa.p75 - aa.p25 > AA_RETRY_WIDTH or disturbed


def quiet(aa: Speedup) -> bool:
    """Whether the A/A control says the machine is quiet: its interval at most `QUIET_AA_WIDTH`
    wide and its rounds in one machine state (then a pairing may settle after QUIET_MIN_ROUNDS).

    Example:
        >>> quiet(Speedup(1.018, 1.006, 1.024, 17, 1.80, 1.77))  # run 6, H100
        True
        >>> quiet(Speedup(1.0, 0.95, 1.06, 21, 1.0, 1.0))
        False
    """
    return aa.p25 > 0 and aa.p75 / aa.p25 - 1.0 <= QUIET_AA_WIDTH and not aa.states


def profile_fits_budget(study: optuna.Study) -> bool:
    """Whether the profile's estimate (`profile_time_s`) is at most `PROFILE_SHARE` of the
    study's --budget (always, without one)."""
    budget = study.user_attrs.get("budget_s")
    return budget is None or profile_time_s(study) <= PROFILE_SHARE * float(budget)


def measurement_noise(study: optuna.Study) -> float | None:
    """How far a trial's own measurement can be off on this machine: the largest drift of the
    defaults re-measured during the study (`drift`), as a share (0.05: 5%); None when none was."""
    ratios = [float(d["ratio_to_baseline"]) for d in study.user_attrs.get("drift") or [] if d.get("ratio_to_baseline")]
    return max(max(r, 1.0 / r) for r in ratios) - 1.0 if ratios else None


def profile_time_s(study: optuna.Study) -> float:
    """What the profile costs on `study` (`profile_estimate_s`): from the defaults' slowest build
    and slowest run at any batch a finalist is at (the profile runs at the answer's batch, not known
    before finalize chooses it; on a GPU a session at batch 32 builds 3-5x slower than at batch 1:
    cuDNN's algorithm search, run 7)."""
    zero = default_trial(study)
    if zero is None:
        return 0.0
    batches = {1, *finalists_by_batch(study, zero)}
    defaults = [zero, *filter(None, (defaults_at_batch(study, zero, batch) for batch in batches))]
    run_s = max(float(t.user_attrs.get("latency_ms_p50", 0.0) or 0.0) / 1e3 for t in defaults)
    build_s = max(float(t.user_attrs.get("build_time_s", 0.0) or 0.0) for t in defaults)
    return profile_estimate_s(build_s, run_s)


def finalists_by_batch(study: optuna.Study, zero: FrozenTrial) -> dict[int, list[FrozenTrial]]:
    """Per batch size, the fastest feasible measured candidates (by their own measurement),
    one per distinct artifact, none identical to the defaults at that batch; one after the first
    only where its own measurement is within the study's noise (`measurement_noise`, at least
    `FINALIST_GAP`) of the first's; none whose own measurement is further behind the (accurate)
    defaults at its batch than that noise: it cannot win its pairing (run 9, H100: two such
    pairings, 14.6% and 111% behind, cost 16 s of a 75 s finalize to lose)."""
    by_batch: dict[int, list[FrozenTrial]] = {}
    for trial in measured_trials(study):
        if not trial.values or not is_feasible(trial) or "shared_measurement_with_trial" in trial.user_attrs:
            continue
        by_batch.setdefault(int(trial.user_attrs.get("batch_size", 1)), []).append(trial)
    best_batch = max(by_batch, key=lambda b: max(t.values[0] for t in by_batch[b]), default=1)
    noise = measurement_noise(study)
    chosen: dict[int, list[FrozenTrial]] = {}
    for batch, trials in sorted(by_batch.items()):
        defaults = defaults_at_batch(study, zero, batch)
        seen = {defaults.user_attrs.get("digest")} if defaults is not None else set()
        count = HEADLINE_FINALISTS if batch in (1, best_batch) else OTHER_FINALISTS
        picked: list[FrozenTrial] = []
        # the defaults' own time at this batch bounds the first finalist, where they pass the gate
        # (else the best finalist is the answer whatever its speed)
        gated = defaults is not None and is_feasible(defaults)
        for trial in sorted(trials, key=lambda t: -t.values[0]):
            digest = trial.user_attrs.get("digest")
            if defaults is not None and trial.number == defaults.number:
                continue
            if digest and digest in seen:
                continue  # the same artifact as the defaults or as a finalist already in
            ahead = picked[0] if picked else defaults if gated else None
            if noise is not None and ahead is not None:
                behind = _own_ms_per_sample(trial) / max(_own_ms_per_sample(ahead), 1e-12) - 1.0
                if behind > max(noise, FINALIST_GAP):
                    break  # further behind the first (or the defaults) than the study's noise: it cannot win
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
    pace: Pace | None = None,
    min_rounds: int = MIN_ROUNDS,
) -> dict[int, Answer]:
    """Per batch size measured: the finalists paired against the defaults at that batch; the
    best paired median wins when it is above 1 and clear of the A/A interval, else the
    defaults at that batch are the answer (where a trial ran them; else that batch has no
    answer). Defaults that fail the accuracy gate are never an answer: the best finalist is."""
    answers = {}
    for batch, finalists in finalists_by_batch(study, zero).items():
        defaults = defaults_at_batch(study, zero, batch)
        paired = {}
        floor = (aa.p25, aa.p75) if aa is not None else None
        for trial in finalists if rounds > 0 else []:
            paired[trial.number] = measure_speedup(
                study, zero, trial, batch, rounds, run_paired_fn,
                floor=floor, sequential=True, time_limit_s=pace.limit_s() if pace is not None else None,
                min_rounds=min_rounds,
            )  # fmt: skip
            if pace is not None:
                label = f"batch {batch}: trial {trial.number} against the defaults"
                pace.finished(label, paired[trial.number], verdict(paired[trial.number], aa), aa)
        # The defaults can be the answer only where they pass the accuracy gate.
        fallback = defaults.number if defaults is not None and is_feasible(defaults) else None
        # The winner is the best finalist the one rule calls faster, by median; a higher median
        # whose verdict is not faster (its per-side medians disagree, its interval touches the
        # control) does not displace it (waste_cpu run of b95b070: PP-OCRv4's recognizer at batch
        # 1, trial 19 faster at 1.114x, lost to trial 17's 1.133x with the sides disagreeing, and
        # the defaults stayed the answer). Where the defaults fail the gate, the best median wins.
        faster = {n for n, s in paired.items() if fallback is None or verdict(s, aa) == FASTER}
        winner = max(paired, key=lambda n: (n in faster, paired[n].median), default=None)
        if winner is None:
            if defaults is not None and fallback is not None:
                answers[batch] = Answer(batch, fallback, "defaults", None, _own_ms_per_sample(defaults), [])
            continue
        speedup = paired[winner]
        if defaults is not None and fallback is None:
            called = "defaults fail the gate"  # the fastest accurate finalist, whatever its speed
        else:
            called = verdict(speedup, aa)  # the one rule (autotune.answer.verdict)
        if called in ("faster", "defaults fail the gate"):
            number = winner
        elif fallback is not None:  # not faster: the defaults at this batch stay the answer
            number = fallback
        else:
            continue  # the defaults at this batch would be the answer, but no trial ran them there
        per_sample = speedup.best_ms_per_sample if number == winner else speedup.default_ms_per_sample
        answers[batch] = Answer(batch, number, called, speedup, per_sample, list(paired), winner)
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
    *,
    floor: tuple[float, float] | None = None,
    sequential: bool = False,
    time_limit_s: float | None = None,
    min_rounds: int = MIN_ROUNDS,
    settle_width: float | None = None,
) -> Speedup:
    """Pairs `candidate` against the defaults at `batch` (A = defaults, B = candidate): up to
    `rounds` rounds, at least `min_rounds`; `sequential` ends them once the interval clears `floor`
    (the A/A interval), `settle_width` (the A/A control itself) once the interval is that narrow,
    and `time_limit_s` ends them when its share of the budget is spent."""
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
    # Each side runs its trial's own engine (what export ships) where one is on disk.
    target = target_class(study.user_attrs["target"])
    defaults = defaults_at_batch(study, zero, batch)
    artifact_a = target.trial_artifact(trial_dir(study_dir, defaults.number)) if defaults is not None else None
    request = PairedRequest(
        target_name=study.user_attrs["target"],
        target_options=TargetOptions.from_study_attrs(study.user_attrs),
        model_a=models[0],
        config_a=config_a,
        model_b=models[1],
        config_b=dict(candidate.params),
        input_pool=pool,
        dynamic_batch=bool(study.user_attrs.get("dynamic_batch")),
        workdir=study_dir / PAIRED_DIR,
        rounds=rounds,
        round_s=paired_round_s(study),
        min_rounds=min(min_rounds, rounds),
        floor=floor,
        sequential=sequential,
        settle_width=settle_width,
        time_limit_s=time_limit_s,
        artifact_a=artifact_a,
        artifact_b=target.trial_artifact(trial_dir(study_dir, candidate.number)),
    )
    try:
        result = run_paired_fn(request)
    finally:
        shutil.rmtree(study_dir / PAIRED_DIR, ignore_errors=True)
    stages = result.get("stages_s") or {}
    if stages:
        logging.getLogger("autotune").info(
            "finalize: pairing at batch %d: %s", batch, ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in stages.items())
        )
    speedup = Speedup.from_paired(result)
    # each side's own measurement in the study, which every surface checks the paired figures against
    speedup.default_own_ms_per_sample = _own_ms_per_sample(defaults) if defaults is not None else 0.0
    speedup.best_own_ms_per_sample = _own_ms_per_sample(candidate)
    return speedup
