"""The ask/submit/tell loop: what to try (Optuna), handed to an executor (where it runs), told back.

The process running `run_study` is the only writer of the Optuna storage. It asks for
configurations, turns each into a `TrialRequest`, submits it to an executor (in-process or
Ray workers) and tells the result back with its measurements as user attributes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import optuna

from autotune.layout import ARRIVED_FILE, CONTROLS_DIR, TRIALS_DIR, trial_dir, write_atomically
from autotune.passes import inert_passes
from autotune.rules import KNOWN_SLOW, FailureRules, Rule, rules_from_history
from autotune.space import PASS_PREFIX, SearchSpace, config_key, space_sha256
from autotune.study._records import (
    CANCELLED_PREFIXES,
    finished_count,
    outcome_from_attrs,
    result_outcome,
    study_attrs,
    summary_from_attrs,
    tell_duplicate,
    tell_result,
    tell_ruled_out,
)
from autotune.study._references import compute_references, judged_tolerance, weak_reference_warnings
from autotune.study._storage import open_study
from autotune.sweep import (
    Outcome,
    combine_winners,
    one_knob,
    sweep_configs,
    unmeasured_config,
    unmeasured_neighbour,
)
from autotune.targets import target_class
from autotune.trial import TrialRequest, TrialResult

if TYPE_CHECKING:
    from autotune.study._spec import StudySpec
    from autotune.workers import Executor


SLOW_FACTOR = 10.0  # a configuration this many times slower per sample than trial 0 is cut short


CONTROL_EVERY = 10  # the defaults are re-measured after every this many counted trials (drift)


CONTROL_FIRST = 3  # ... and once early: trial 0 runs on a cold worker (seen 1.5x slow on a GPU)


CARRY_TOP = 2  # the best configurations carried to every deployment batch (issue 27)
# After the carry, a configuration that becomes the study's fastest is carried too, this many times
# at most: YOLOv8n on an H100 (run 7) found fp16 at batches 16 and 32 after the carry and never
# ran it at 4 and 8, where the answer stayed fp32 at 0.83-0.88x the hand FP16 expert's speed.
LATE_CARRIES = 2


CARRY_AT = 0.6  # ... once this share of the budget (less finalize's reserve) is spent


NEARLY_TOO_SLOW = SLOW_FACTOR / 2  # a success this much slower than the defaults does not


# contradict a "too slow" failure rule (it was cut at 10x by the batch-scaled cap, not fast)
DRIFT_FLAG = 0.10  # a control this far from trial 0 (relative) flags the trials told after it


REPEATS_BEFORE_FALLBACK = 1  # asks that brought nothing new before an unmeasured configuration is queued


MAX_REPEATS = 200  # asks that brought nothing new before the study stops asking


ELAPSED_EVERY_S = 10.0  # the study's elapsed time is stored at least this often


@dataclass
class StudyRun:
    """Mutable state of one run of the ask/submit/tell loop."""

    started: float
    budget_s: float | None
    pending: dict[int, Any] = field(default_factory=dict)  # number -> optuna Trial
    keys: dict[str, int] = field(default_factory=dict)  # config key -> trial number that measured it
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)  # digest -> summary
    reference_latency_s: float = 0.0  # the defaults' fastest latency per sample (trial 0, controls)
    trial0_latency_s: float = 0.0  # trial 0's own latency per sample (what drift is relative to)
    defaults_slowest_s: float = 0.0  # the defaults' slowest latency per sample (trial 0, controls)
    done: int = 0  # trials that count toward --trials
    repeats: int = 0  # consecutive asks that brought nothing new (duplicates, ruled out)
    stopping: bool = False
    rules: FailureRules = field(default_factory=FailureRules)
    sweep_keys: set[str] = field(default_factory=set)  # one-knob sweep configurations not yet told
    sweep_told: list[Outcome] = field(default_factory=list)
    default: Outcome | None = None  # the defaults' outcome (fastest of trial 0 and the controls)
    controls: dict[int, TrialRequest] = field(default_factory=dict)  # in-flight drift controls
    controls_sent: int = 0
    last_control: int = 0  # counted trials when the last control was sent
    drift_ratio: float = 1.0  # the latest control's latency over trial 0's
    defaults_at: dict[int, float] = field(default_factory=dict)  # batch -> the defaults' s per sample there
    carried: bool = False  # the best configurations were carried to every batch (`carry_to_batches`)
    carried_best: float = 0.0  # the fastest feasible samples/s when a configuration was last carried
    late_carries: int = 0  # configurations carried after the carry (`maybe_carry_late`)
    queued: set[str] = field(default_factory=set)  # fresh configurations queued after repeats (`nothing_new`)
    held: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # asked, not yet run (`held_back`)
    ran: list[dict[str, Any]] = field(default_factory=list)  # configurations that completed

    reserve_s: float = 0.0  # kept from the budget for finalize (its estimate, from the trials so far)

    def noise(self) -> float:
        """How far the defaults' own measurements spread (their slowest over their fastest, at
        least 1): the machine's swing during this study, which a trial's slowness must exceed to
        count as known slow (a 2-core machine runs the same session 1.5-2.3x slower while
        contended; a 10 µs model's two trials measured there made a known-slow rule in CI)."""
        if self.reference_latency_s <= 0 or self.defaults_slowest_s <= 0:
            return 1.0
        return max(self.defaults_slowest_s / self.reference_latency_s, 1.0)

    def out_of_time(self) -> bool:
        return self.budget_s is not None and time.monotonic() - self.started >= self.budget_s - self.reserve_s

    def grace_s(self, grace_s: float) -> float:
        """How long in-flight trials may run on once trials stop being asked (at the budget less
        finalize's reserve): up to half of that reserve, at least 5 s, at most `grace_s`."""
        return min(grace_s, max(0.5 * self.reserve_s, 5.0))

    def cancel_due(self, grace_s: float) -> bool:
        """Whether in-flight trials are past their grace (`grace_s`)."""
        if self.budget_s is None:
            return False
        return time.monotonic() - self.started > self.budget_s - self.reserve_s + self.grace_s(grace_s)

    def busy(self) -> int:
        return len(self.pending) + len(self.controls)


def sweep_cap(n_trials: int | None) -> int:
    """How many one-knob sweep trials a study of `n_trials` affords: half of them (the knobs
    listed first in the space file are swept first), 40 for a budget-only study."""
    return max(n_trials // 2, 4) if n_trials else 40


def seed_queue(study: Any, spec: StudySpec) -> None:
    """Enqueues, once per study: trial 0 (all defaults), the known-good configurations (the
    recipes an expert tries first), then the one-knob-at-a-time sweep (see `autotune.sweep`)."""
    if study.user_attrs.get("seeded"):
        return
    seen = set()
    sweep = [] if spec.target_options.build_only else sweep_configs(spec.space)[: sweep_cap(spec.n_trials)]
    sweep_keys = []
    for index, partial in enumerate([{}, *spec.known_good, *sweep]):
        config = spec.space.complete(partial)
        key = config_key(config)
        if key not in seen:
            seen.add(key)
            study.enqueue_trial(config, skip_if_exists=True)
            if index > len(spec.known_good):
                sweep_keys.append(key)
    study.set_user_attr("sweep_keys", sweep_keys)
    study.set_user_attr("seeded", True)


def recover_state(study: Any, run: StudyRun, space: SearchSpace | None = None, spec: StudySpec | None = None) -> None:
    """Rebuilds the loop's memory from told trials (dedup maps, failure rules, the sweep, the
    baseline); tells trials a dead run left RUNNING whose result had arrived (`arrived.json`),
    fails the others and re-queues their configurations."""

    if spec is not None:
        _tell_arrivals(study, spec, space.default_config() if space is not None else {})

    history = []
    defaults = space.default_config() if space is not None else {}
    requeued = list(study.user_attrs.get("requeued_cancelled", []))
    before = len(requeued)
    requeued_now: list[dict[str, Any]] = []  # configurations cut short, queued again below
    for frozen in study.get_trials(deepcopy=False):
        attrs = frozen.user_attrs
        if frozen.state == optuna.trial.TrialState.RUNNING:
            interrupted = optuna.trial.Trial(study, frozen._trial_id)
            interrupted.set_user_attr("reason", "interrupted: the daemon stopped mid-trial; configuration re-queued")
            interrupted.set_user_attr("interrupted", True)
            study.tell(interrupted, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            if frozen.params:
                study.enqueue_trial(frozen.params, skip_if_exists=False)
                requeued_now.append(dict(frozen.params))
            continue
        if "config_key" not in attrs or attrs.get("interrupted"):
            continue
        if attrs.get("cancelled"):
            # Cut short by a stop or the budget, never measured: run it again, once.
            if frozen.number not in requeued and frozen.params:
                study.enqueue_trial(frozen.params, skip_if_exists=False)
                requeued.append(frozen.number)
                requeued_now.append(dict(frozen.params))
            continue
        state = {
            optuna.trial.TrialState.COMPLETE: "complete",
            optuna.trial.TrialState.FAIL: "failed",
            optuna.trial.TrialState.PRUNED: "pruned",
        }.get(frozen.state)
        if state == "complete" and attrs.get("known_slow"):
            state = "known slow"  # its rule is rebuilt with the others (`rules_from_history`)
        elif state == "complete" and attrs.get("slow_vs_baseline", 0.0) > NEARLY_TOO_SLOW:
            state = "slow"  # neither a failure nor evidence against a failure rule
        if state is not None:
            history.append((frozen.number, state, dict(frozen.params), str(attrs.get("reason", ""))))
        if frozen.state == optuna.trial.TrialState.FAIL:
            run.keys.setdefault(attrs["config_key"], frozen.number)  # a failing configuration is not retried
            continue
        if frozen.state == optuna.trial.TrialState.PRUNED and attrs.get("ruled_out"):
            run.keys.setdefault(attrs["config_key"], frozen.number)
            continue
        if frozen.state != optuna.trial.TrialState.COMPLETE:
            continue
        run.keys.setdefault(attrs["config_key"], frozen.number)
        run.ran.append(dict(frozen.params))  # what `held_back` counts as proven
        if (
            "digest" in attrs
            and ("latency_ms_p50" in attrs or "build" in attrs)
            and "shared_measurement_with_trial" not in attrs
        ):
            run.measured.setdefault(attrs["digest"], summary_from_attrs(frozen.number, attrs))
        if "latency_ms_p50" in attrs and _defaults_but_batch(dict(frozen.params), defaults):
            batch = max(int(attrs.get("batch_size", 1)), 1)
            per_sample = attrs["latency_ms_p50"] / 1e3 / batch
            run.defaults_at[batch] = min(run.defaults_at.get(batch, math.inf), per_sample)
        if (attrs.get("baseline") or frozen.number == 0) and "latency_ms_p50" in attrs:
            run.reference_latency_s = attrs["latency_ms_p50"] / 1e3 / max(int(attrs.get("batch_size", 1)), 1)
            run.trial0_latency_s = run.reference_latency_s
            run.defaults_slowest_s = max(run.defaults_slowest_s, run.reference_latency_s)
            run.default = outcome_from_attrs(dict(frozen.params), attrs)
    if len(requeued) > before:
        study.set_user_attr("requeued_cancelled", requeued)
    if space is not None and requeued_now:
        _requeued_first(study, space, requeued_now)
    run.rules = rules_from_history(history, defaults)
    run.carried = bool(study.user_attrs.get("carried"))
    run.carried_best = fastest_feasible(study)[1] if run.carried else 0.0
    run.late_carries = len(study.user_attrs.get("carried_late") or [])
    run.done = finished_count(study)
    run.sweep_keys = {k for k in study.user_attrs.get("sweep_keys", []) if k not in run.keys}
    for frozen in study.get_trials(deepcopy=False):
        measured = frozen.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in frozen.user_attrs
        outcome = outcome_from_attrs(dict(frozen.params), frozen.user_attrs)
        if measured and space is not None and one_knob(outcome, defaults, space) is not None:
            run.sweep_told.append(outcome)
    run.controls_sent = len(study.user_attrs.get("drift", []))
    for control in study.user_attrs.get("drift", []):
        run.reference_latency_s = min(run.reference_latency_s, control["ms_per_sample"] / 1e3)
        run.defaults_slowest_s = max(run.defaults_slowest_s, control["ms_per_sample"] / 1e3)


def _journal_arrival(spec: StudySpec, result: TrialResult) -> bool:
    """Writes `result` to `trials/<n>/arrived.json` (atomically); False when it cannot be written."""
    if result.number < 0:
        return True  # a drift control is not a trial
    path = trial_dir(spec.study_dir, result.number) / ARRIVED_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return write_atomically(path, json.dumps(result.as_dict(), default=str))


def _drop_arrival(spec: StudySpec, number: int) -> None:
    try:
        (trial_dir(spec.study_dir, number) / ARRIVED_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def _tell_arrivals(study: Any, spec: StudySpec, defaults: dict[str, Any]) -> None:
    """Tells the RUNNING trials whose result reached a dead daemon (see `_journal_arrival`)."""

    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        path = trial_dir(spec.study_dir, frozen.number) / ARRIVED_FILE
        try:
            data = json.loads(path.read_text())
            result = TrialResult(**data)
        except (OSError, ValueError, TypeError):
            continue
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if config_key(result.config) == config_key(defaults):
            trial.set_user_attr("baseline", True)
        tell_result(study, trial, result, spec)
        path.unlink(missing_ok=True)
        logging.getLogger("autotune").info("trial %d: told its result, which had arrived before a stop", result.number)


def _requeued_first(study: Any, space: SearchSpace, requeued: list[dict[str, Any]]) -> None:
    """Moves configurations cut short (interrupted by a dead daemon, cancelled by a stop) to
    the head of the queue, the defaults first: they were asked before everything still
    queued, and the defaults are the baseline every later measurement is judged against (the
    slow-trial cap, the sweep, finalize's pairing). Optuna pops waiting trials by number, so
    the waiting trials' `fixed_params` (a storage system attribute) are reassigned in order."""

    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    params = [dict(t.system_attrs.get("fixed_params", t.params)) for t in waiting]
    defaults_key = config_key(space.default_config())
    first_keys = {config_key(space.complete(p)) for p in requeued}

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        key = config_key(space.complete(item[1]))
        return (0 if key == defaults_key and key in first_keys else 1 if key in first_keys else 2, item[0])

    ordered = [p for _, p in sorted(enumerate(params), key=rank)]
    if ordered == params:
        return
    storage = study._storage
    for trial, fixed in zip(waiting, ordered, strict=True):
        storage.set_trial_system_attr(trial._trial_id, "fixed_params", fixed)


def run_study(
    spec: StudySpec,
    executor: Executor,
    *,
    on_result: Callable[[TrialResult, Any], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    references: dict[int, dict[str, np.ndarray]] | None = None,
    elapsed_before_s: float = 0.0,
    grace_s: float = 60.0,
    on_started: Callable[[], None] | None = None,
    started: float | None = None,
    reserve: Callable[[Any], float] | None = None,
) -> Any:
    """Runs the ask/submit/tell loop until the trial count or the budget is reached.

    Args:
        spec (StudySpec): the validated study.
        executor (Executor): where trials run.
        on_result (Callable | None): called after each tell with (result, study). Default: None.
        should_stop (Callable[[], bool]): polled between trials; True stops asking. Default: never.
        references (dict | None): precomputed FP32 references. Default: computed here.
        elapsed_before_s (float): budget already spent by earlier runs of this study. Default: 0.
        grace_s (float): once the budget is spent, in-flight trials get this long to finish
            before they are cancelled (failed with the reason). Default: 60.
        on_started (Callable | None): called once, after the first trials are dispatched (or
            nothing was left to ask). Default: None.
        started (float | None): `time.monotonic()` when this run of the study began (the
            daemon's start-up counts against the budget). Default: now.
        reserve (Callable | None): the seconds finalize will need, from the study so far
            (`autotune.finalize.finalize_estimate_s`): trials stop that long before the budget
            ends, so that `--budget` is the wall time of the whole study. Default: none kept.

    Returns:
        The Optuna study.
    """

    spec.study_dir.mkdir(parents=True, exist_ok=True)
    (spec.study_dir / TRIALS_DIR).mkdir(exist_ok=True)
    spec = replace(spec, target_options=replace(spec.target_options, cache_dir=spec.study_dir.resolve()))
    searched = spec.space  # what the user asked for; inert passes are dropped below
    spec, dropped = drop_inert_passes(spec)
    refs = references if references is not None else compute_references(spec)
    spec = replace(spec, tolerance=judged_tolerance(spec, refs))  # every trial is judged by the same roles
    study = open_study(spec, create=True)
    for key, value in {**study_attrs(spec), "space_sha256": space_sha256(searched)}.items():
        study.set_user_attr(key, value)
    study.set_user_attr("dropped_knobs", dropped)
    seed_queue(study, spec)
    budget = None if spec.budget_s is None else max(spec.budget_s - elapsed_before_s, 0.0)
    state = StudyRun(started=started if started is not None else time.monotonic(), budget_s=budget)
    loop = StudyLoop(
        spec,
        executor,
        study,
        state,
        refs,
        on_result=on_result,
        should_stop=should_stop,
        elapsed_before_s=elapsed_before_s,
        grace_s=grace_s,
        on_started=on_started,
        reserve=reserve,
    )
    return loop.run()


class StudyLoop:
    """One run of the ask/submit/tell loop over an opened study: the study, its spec, the run's
    state (`StudyRun`), the executor and the FP32 references, with each step a method: `fill`
    asks and submits, `arrive` takes results in, `tell` records one, `turn` is one round of the
    loop and `run` turns until nothing is left to ask or wait for."""

    def __init__(
        self,
        spec: StudySpec,
        executor: Executor,
        study: Any,
        state: StudyRun,
        refs: dict[int, dict[str, np.ndarray]],
        *,
        on_result: Callable[[TrialResult, Any], None] | None,
        should_stop: Callable[[], bool],
        elapsed_before_s: float,
        grace_s: float,
        on_started: Callable[[], None] | None,
        reserve: Callable[[Any], float] | None,
    ) -> None:
        self.spec = spec
        self.executor = executor
        self.study = study
        self.state = state
        self.refs = refs
        self.on_result = on_result
        self.should_stop = should_stop
        self.elapsed_before_s = elapsed_before_s
        self.grace_s = grace_s
        self.on_started = on_started
        self.reserve = reserve
        self.defaults = spec.space.default_config()
        self.defaults_key = config_key(self.defaults)
        self.recipe_keys = {config_key(spec.space.complete(partial)) for partial in spec.known_good}
        self.space_size = spec.space.size() if _enumerable(spec.space) else math.inf
        self.last_elapsed = time.monotonic()
        self.probe_first = target_class(spec.target_name).probe_first()

    def run(self) -> Any:
        """Resumes the run's state from the study, then turns the loop until it is done;
        returns the study. Ctrl-C re-queues the trials cut short."""
        self.resume()
        self.last_elapsed = time.monotonic()
        try:
            while self.turn():
                pass
        except KeyboardInterrupt:
            self.requeue_interrupted()
            raise
        finally:
            self.store_elapsed()
        return self.study

    def resume(self) -> None:
        """What the study already holds (a resumed study): its trials, rules and reserve; then
        the rules listed under `avoid:` and the weak-reference warnings."""
        spec, study, state = self.spec, self.study, self.state
        recover_state(study, state, spec.space, spec)
        self.update_reserve()  # a resumed study already has trials to pair
        # recover_state gave the rules the defaults too
        state.rules.fixed = [Rule(dict(knobs), f"listed under avoid: in {spec.space.source}") for knobs in spec.avoid]
        state.rules.named_by = target_class(spec.target_name).knobs_named_by
        warnings = weak_reference_warnings(self.refs, spec.tolerance)
        if warnings:
            study.set_user_attr("warnings", warnings)

    def turn(self) -> bool:
        """One round: ask and submit, wait a little for results, take them in and tell them;
        False once nothing is in flight and nothing more is to be asked."""
        state = self.state
        state.stopping = self.should_stop() or state.stopping  # polled even while workers are busy
        self.fill()
        if self.on_started is not None:
            self.on_started()
            self.on_started = None
        if not state.pending and not state.controls and not state.held:
            return False
        if state.cancel_due(self.grace_s):
            self.executor.cancel_all(
                f"budget spent: still running {state.grace_s(self.grace_s):.0f} s after the budget ended"
                + (f" (less the {state.reserve_s:.0f} s kept for finalize)" if state.reserve_s else "")
            )
        arrived = self.arrive(self.executor.wait(timeout_s=0.5))
        for trial, result in arrived:
            self.tell(trial, result)
        if arrived:
            self.update_reserve()
        if arrived or time.monotonic() - self.last_elapsed > ELAPSED_EVERY_S:
            # Also while every worker is busy (a long or stuck trial): `status` stays current.
            self.store_elapsed()
            self.last_elapsed = time.monotonic()
        return True

    def store_elapsed(self) -> None:
        self.study.set_user_attr("elapsed_s", self.elapsed_before_s + time.monotonic() - self.state.started)

    def requeue_interrupted(self) -> None:
        """Ctrl-C in a foreground run: what was told stays; the trials cut short are failed as
        interrupted and re-queued, like a dead daemon's, so a resume re-runs them."""
        for trial in [*self.state.pending.values(), *(trial for trial, _ in self.state.held.values())]:
            trial.set_user_attr("reason", "interrupted: Ctrl-C; configuration re-queued")
            trial.set_user_attr("interrupted", True)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(trial.params, skip_if_exists=False)

    def update_reserve(self) -> None:
        if self.reserve is not None and self.state.budget_s is not None:
            # never more than half the budget: finalize then shortens its rounds to fit
            self.state.reserve_s = min(self.reserve(self.study), 0.5 * self.state.budget_s)
            self.study.set_user_attr("finalize_reserve_s", self.state.reserve_s)

    def asking(self) -> bool:
        state, spec = self.state, self.spec
        return (
            not state.out_of_time()
            and not state.stopping
            and (spec.n_trials is None or state.done + len(state.pending) + len(state.held) < spec.n_trials)
            and len(state.keys) < self.space_size
            and state.repeats < MAX_REPEATS
        )

    def nothing_new(self) -> None:
        """The last ask repeated or was ruled out: steer the sampler to a configuration never
        measured and not ruled out (it may keep proposing the same): a neighbour of the fastest
        so far (`unmeasured_neighbour`), else a random one."""
        state, spec = self.state, self.spec
        state.repeats += 1
        if state.repeats % REPEATS_BEFORE_FALLBACK == 0:
            allowed = lambda c: state.rules.ruled_out(c) is None  # noqa: E731
            seed = spec.seed + state.repeats
            best = fastest_feasible(self.study)[0]
            fresh = (
                unmeasured_neighbour(spec.space, dict(best.params), set(state.keys), allowed, seed) if best else None
            )
            fresh = fresh or unmeasured_config(spec.space, set(state.keys), allowed, seed=seed)
            if fresh is None:
                state.repeats = MAX_REPEATS  # the reachable space is exhausted
            else:
                state.queued.add(config_key(fresh))
                self.study.enqueue_trial(fresh, skip_if_exists=False)

    def maybe_carry(self) -> None:
        """Once most of the trials or the budget is spent, the best configurations found so far
        are queued at every deployment batch they were not measured at (issue 27): no batch's
        answer is then worse than the best known configuration run there."""
        state, spec = self.state, self.spec
        batches = spec.batch_sizes()
        if state.carried or len(batches) < 2 or spec.target_options.build_only:
            return
        if spec.n_trials is not None:
            due = state.done >= max(spec.n_trials - CARRY_TOP * len(batches), spec.n_trials // 2)
        else:
            due = state.budget_s is not None and time.monotonic() - state.started >= CARRY_AT * (
                state.budget_s - state.reserve_s
            )
        if not due:
            return
        state.carried = True
        state.carried_best = fastest_feasible(self.study)[1]
        queued = carry_to_batches(self.study, batches, state.keys, lambda c: state.rules.ruled_out(c) is None)
        self.study.set_user_attr("carried", [config_key(c) for c in queued] or ["nothing to carry"])
        if queued:
            logging.getLogger("autotune").info(
                "carrying the %d best configurations to batches %s: %d trials queued",
                CARRY_TOP, ", ".join(map(str, batches)), len(queued),
            )  # fmt: skip

    def maybe_carry_late(self, result: TrialResult) -> None:
        """After the carry, a configuration that becomes the study's fastest (samples/s, at any
        batch, within tolerance) is queued at every batch it was not measured at, up to
        `LATE_CARRIES` times, where --trials leaves room for all of them (a fast configuration
        found late is then an answer at every batch)."""
        state, spec = self.state, self.spec
        if not state.carried or state.late_carries >= LATE_CARRIES or spec.target_options.build_only:
            return
        if result.state != "complete" or not result.feasible or result.shared_with is not None:
            return
        if result.throughput <= state.carried_best:
            return
        state.carried_best = result.throughput
        knobs = {k: v for k, v in result.config.items() if k != "batch_size"}
        allowed = lambda c: state.rules.ruled_out(c) is None  # noqa: E731
        todo = unmeasured_at_batches([knobs], spec.batch_sizes(), state.keys, allowed)
        left = None if spec.n_trials is None else spec.n_trials - state.done - len(state.pending) - len(state.held)
        if not todo or (left is not None and left < len(todo)):
            return  # nothing to carry, or too few trials left to run it at every batch
        queued = queue_at_batches(self.study, [knobs], spec.batch_sizes(), state.keys, allowed)
        state.late_carries += 1
        late = [*(self.study.user_attrs.get("carried_late") or []), result.number]
        self.study.set_user_attr("carried_late", late)
        carried = [k for k in self.study.user_attrs.get("carried") or [] if k != "nothing to carry"]
        self.study.set_user_attr("carried", carried + [config_key(c) for c in queued])
        logging.getLogger("autotune").info(
            "trial %d is the fastest yet (%.4g samples/s): carrying it to batches %s: %d trials queued",
            result.number, result.throughput, ", ".join(str(c["batch_size"]) for c in queued), len(queued),
        )  # fmt: skip

    def fill(self) -> None:
        """Asks and submits until every worker is busy (or nothing more is to be asked)."""
        state, spec, study = self.state, self.spec, self.study
        self.maybe_control()
        self.maybe_carry()
        self.release_held()
        while state.busy() < self.executor.capacity and self.asking():
            trial = study.ask()
            config = spec.space.sample(trial)
            key = config_key(config)
            trial.set_user_attr("origin", trial_origin(study, key, self.defaults_key, self.recipe_keys, state.queued))
            if key in state.keys:
                tell_duplicate(study, trial, state.keys[key])
                self.sweep_told(config, None)  # its original's outcome is already in (or will not be)
                self.nothing_new()
                continue
            rule = state.rules.ruled_out(config)
            state.keys[key] = trial.number
            if rule is not None:
                tell_ruled_out(study, trial, rule)
                self.sweep_told(config, None)
                self.nothing_new()
                continue
            state.repeats = 0
            waits = self.waits_for(config)
            if waits is not None:
                state.held[trial.number] = (trial, config)
                logging.getLogger("autotune").info(
                    "trial %d waits for trial %d: the first with %s has not finished",
                    trial.number, waits[0], ", ".join(f"{k}={v}" for k, v in waits[1].items()),
                )  # fmt: skip
                continue
            self.submit(trial, config)

    def submit(self, trial: Any, config: dict[str, Any]) -> None:
        self.state.pending[trial.number] = trial
        self.executor.submit(_request(self.spec, trial.number, config, self.refs, self.state))

    def waits_for(self, config: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """`held_back` against the trials in flight (a trial's params are its configuration)."""
        in_flight = {number: trial.params for number, trial in self.state.pending.items()}
        return held_back(config, in_flight, self.probe_first, self.state.ran)  # (`rules.succeeded` is a subset)

    def release_held(self) -> None:
        """The trials `fill` held back, once the trial they waited for has finished: ruled out
        when its failure made a rule that covers them, else run; never run once trials stop
        being asked (told as cancelled by the budget or the stop)."""
        state = self.state
        for number, (trial, config) in list(state.held.items()):
            if self.waits_for(config) is not None:
                continue
            rule = state.rules.ruled_out(config)
            if rule is not None:
                del state.held[number]
                tell_ruled_out(self.study, trial, rule)
                self.sweep_told(config, None)
            elif state.out_of_time() or state.stopping:
                del state.held[number]
                if state.keys.get(config_key(config)) == number:
                    del state.keys[config_key(config)]  # never measured: may be asked again
                trial.set_user_attr("cancelled", True)
                reason = "stopped" if state.stopping else "budget spent"
                trial.set_user_attr("reason", f"{reason}: held back behind a trial of the same knob values, never run")
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            elif state.busy() < self.executor.capacity:
                del state.held[number]
                self.submit(trial, config)

    def maybe_control(self) -> None:
        """Re-measures the defaults after CONTROL_FIRST counted trials (trial 0 may have run
        cold) and every CONTROL_EVERY after, so that a machine that drifts (thermal, a
        neighbour) shows in the report instead of in the ranking."""
        state, spec = self.state, self.spec
        due = (
            CONTROL_FIRST
            if state.controls_sent == 0
            else max(state.controls_sent * CONTROL_EVERY, state.last_control + 1)
        )
        if spec.target_options.build_only or state.reference_latency_s <= 0 or state.controls or state.done < due:
            return
        if state.stopping or state.out_of_time() or state.busy() >= self.executor.capacity:
            return
        state.controls_sent += 1
        state.last_control = state.done
        number = -state.controls_sent
        request = _request(spec, number, dict(self.defaults), self.refs, state)
        request = replace(
            request,
            workdir=(spec.study_dir / CONTROLS_DIR / str(state.controls_sent)).resolve(),
            shared_measurements={},
            stop_rule=spec.stop_rule,
        )
        state.controls[number] = request
        self.executor.submit(request)

    def arrive(self, results: list[TrialResult]) -> list[tuple[Any, TrialResult]]:
        """Takes in what the executor returned: drift controls are recorded, the trials'
        results learnt from in memory (and, with asynchronous workers, the next trials
        submitted); returns the trials' (trial, result) pairs to tell."""
        state, spec = self.state, self.spec
        for control in [r for r in results if r.number in state.controls]:
            self.record_control(control)
        arrived = [(state.pending.pop(r.number), r) for r in results if r.number in state.pending]
        state.ran.extend(dict(r.config) for _, r in arrived if r.state == "complete")
        state.done += sum(1 for _, r in arrived if _counts(r, spec))
        for _, result in arrived:
            self.learn_in_memory(result)
        # Asynchronous workers get their next trials before the results are written: storage
        # writes overlap with running trials instead of leaving workers idle. (In-process,
        # the sampler sees each result before the next ask.) Only once the results are on
        # disk (`arrived.json`, told on resume should this process die before telling them);
        # where that write fails (a full disk) they are told first.
        if self.executor.asynchronous and all(_journal_arrival(spec, r) for _, r in arrived):
            self.fill()
        return arrived

    def tell(self, trial: Any, result: TrialResult) -> None:
        """Tells one result to the study, with what the run knows of it (the baseline, slow
        against the defaults, cancelled, drift), and learns from it."""
        state, spec = self.state, self.spec
        measured = bool(result.measurements) or spec.target_options.build_only
        if result.state == "complete" and result.digest and result.shared_with is None and measured:
            state.measured.setdefault(
                result.digest,
                {"number": result.number, "measurements": result.measurements, "accuracy": result.accuracy},
            )
        if config_key(result.config) == self.defaults_key:
            trial.set_user_attr("baseline", True)
        if self.slow_vs_baseline(result) > NEARLY_TOO_SLOW:
            trial.set_user_attr("slow_vs_baseline", self.slow_vs_baseline(result))
        if self.known_slow(result):
            trial.set_user_attr("known_slow", self.slow_at_batch(result))
        if result.state == "failed" and result.reason.startswith(CANCELLED_PREFIXES):
            trial.set_user_attr("cancelled", True)
            if state.keys.get(config_key(result.config)) == result.number:
                del state.keys[config_key(result.config)]  # never measured: may be asked again
        if state.controls_sent and abs(state.drift_ratio - 1.0) > DRIFT_FLAG:
            trial.set_user_attr("drift_ratio", state.drift_ratio)
        tell_result(self.study, trial, result, spec)
        _drop_arrival(spec, result.number)
        self.learn(trial, result)
        self.maybe_carry_late(result)
        if self.on_result is not None:
            self.on_result(result, self.study)

    def record_control(self, result: TrialResult) -> None:
        state = self.state
        state.controls.pop(result.number, None)
        shutil.rmtree(self.spec.study_dir / CONTROLS_DIR / str(-result.number), ignore_errors=True)
        if not result.measurements or state.reference_latency_s <= 0:
            return
        per_sample_s = result.measurements["latency_ms_p50"] / 1e3 / max(result.batch_size, 1)
        state.drift_ratio = per_sample_s / (state.trial0_latency_s or state.reference_latency_s)
        # The defaults' best measurement is the baseline of the slow-trial cap and the sweep.
        state.reference_latency_s = min(state.reference_latency_s, per_sample_s)
        state.defaults_slowest_s = max(state.defaults_slowest_s, per_sample_s)
        if state.default is not None and result.throughput > state.default.throughput:
            state.default = replace(state.default, throughput=result.throughput)
        drift = list(self.study.user_attrs.get("drift", []))
        drift.append(
            {"after_trials": state.done, "ms_per_sample": per_sample_s * 1e3, "ratio_to_baseline": state.drift_ratio}
        )
        self.study.set_user_attr("drift", drift)

    def learn_in_memory(self, result: TrialResult) -> None:
        """What a result teaches before the next ask (no storage writes): the baseline and the
        failure rules, so an asynchronous worker's next trial already obeys a new rule."""
        state = self.state
        if config_key(result.config) == self.defaults_key and result.measurements and not state.reference_latency_s:
            state.reference_latency_s = result.measurements["latency_ms_p50"] / 1e3 / result.batch_size
            state.trial0_latency_s = state.reference_latency_s
            state.defaults_slowest_s = state.reference_latency_s
            state.default = result_outcome(result)
        if result.measurements and _defaults_but_batch(result.config, self.defaults):
            batch = max(result.batch_size, 1)
            per_sample = result.measurements["latency_ms_p50"] / 1e3 / batch
            state.defaults_at[batch] = min(state.defaults_at.get(batch, math.inf), per_sample)
        before = {r.describe() for r in state.rules.enforced()}
        if result.state == "complete":
            if self.known_slow(result):
                state.rules.record_slow(result.number, result.config)
            elif self.slow_vs_baseline(result) <= NEARLY_TOO_SLOW:
                state.rules.record_success(result.config)
        elif result.state in ("failed", "pruned"):
            state.rules.record_failure(result.number, result.config, result.reason)
            if result.reason.startswith("too slow"):
                state.rules.record_slow(result.number, result.config)
        for rule in state.rules.enforced():
            if rule.describe() not in before and rule.trials:
                logging.getLogger("autotune").info("new rule: %s", rule.describe())

    def known_slow(self, result: TrialResult) -> bool:
        """The result is evidence of a slow configuration: KNOWN_SLOW times the defaults' time per
        sample at its batch, times the study's noise (`StudyRun.noise`)."""
        return result.state == "complete" and self.slow_at_batch(result) >= KNOWN_SLOW * self.state.noise()

    def slow_at_batch(self, result: TrialResult) -> float:
        """Time per sample over the defaults' at the result's batch (at batch 1 where the
        defaults never ran at its batch); 0 when either is unknown."""
        if not result.measurements:
            return 0.0
        batch = max(result.batch_size, 1)
        base = self.state.defaults_at.get(batch) or self.state.reference_latency_s
        return result.measurements["latency_ms_p50"] / 1e3 / batch / base if base > 0 else 0.0

    def slow_vs_baseline(self, result: TrialResult) -> float:
        reference_s = self.state.reference_latency_s
        if not result.measurements or reference_s <= 0:
            return 0.0
        return result.measurements["latency_ms_p50"] / 1e3 / max(result.batch_size, 1) / reference_s

    def learn(self, trial: Any, result: TrialResult) -> None:
        """What a told result teaches that is stored: rules, the sweep's progress."""
        rules = [r.as_dict() for r in self.state.rules.rules()]
        if rules != self.study.user_attrs.get("rules", []):
            self.study.set_user_attr("rules", rules)
        self.sweep_told(result.config, result_outcome(result))

    def sweep_told(self, config: dict[str, Any], outcome: Outcome | None) -> None:
        """Records an outcome one knob away from the defaults (a sweep trial, or a known-good
        recipe that is one: CUDA graph alone); None when a sweep configuration repeated or was
        ruled out. Once every sweep configuration is in, enqueues the winners combined."""
        state, spec, study = self.state, self.spec, self.study
        key = config_key(config)
        if outcome is not None and one_knob(outcome, self.defaults, spec.space) is not None:
            state.sweep_told.append(outcome)
        if key not in state.sweep_keys:
            return
        state.sweep_keys.discard(key)
        if not state.sweep_keys and state.default is not None and not study.user_attrs.get("sweep_combined"):
            combined = combine_winners(spec.space, state.sweep_told, state.default)
            for winner in combined:
                if config_key(winner) not in state.keys:
                    study.enqueue_trial(winner, skip_if_exists=True)
            study.set_user_attr("sweep_combined", [config_key(c) for c in combined])


ORIGINS = ("defaults", "recipe", "sweep", "combined", "carried", "queued", "sampled")


def held_back(
    config: Mapping[str, Any],
    in_flight: Mapping[int, Mapping[str, Any]],
    probe_first: Sequence[Mapping[str, Any]],
    proven: Iterable[Mapping[str, Any]],
) -> tuple[int, dict[str, Any]] | None:
    """The trial in flight that `config` must wait for and the values they share, else None: one
    holding the same knob values of the target's `probe_first` (values that fail on some models
    whatever else the configuration holds), while no trial with them has completed. Run beside it, a second such
    trial fails the same way before the first failure has made its rule (issue 27: YOLOv8n's two
    CUDA-graph recipes on two workers, GPU run 8)."""
    proven = list(proven)
    for values in probe_first:
        rule = Rule(dict(values), "")
        if not rule.matches(config) or any(rule.matches(done) for done in proven):
            continue
        waits_for = next((number for number, other in in_flight.items() if rule.matches(other)), None)
        if waits_for is not None:
            return waits_for, dict(values)
    return None


def trial_origin(study: Any, key: str, defaults_key: str, recipe_keys: set[str], queued: set[str]) -> str:
    """Where a trial's configuration came from (issue 27: what the sampled trials add over the
    recipes and the sweep): the defaults, a known-good recipe, the one-knob sweep, the sweep's
    winners combined, a finalist carried to another batch, a fresh configuration queued after
    repeats, else the sampler's own. Told by the configuration (everything queued is asked
    before the sampler runs, so a sampled configuration equal to a queued one is its repeat)."""
    attrs = study.user_attrs
    if key == defaults_key:
        return "defaults"
    for origin, keys in (
        ("recipe", recipe_keys),
        ("sweep", attrs.get("sweep_keys") or ()),
        ("combined", attrs.get("sweep_combined") or ()),
        ("carried", attrs.get("carried") or ()),
        ("queued", queued),
    ):
        if key in keys:
            return origin
    return "sampled"


def _counts(result: TrialResult, spec: StudySpec) -> bool:
    """Whether a result counts toward --trials (see `counts_toward_goal`)."""
    if result.state == "failed" and result.reason.startswith(CANCELLED_PREFIXES):
        return False
    return result.shared_with is None or spec.target_options.build_only


def drop_inert_passes(spec: StudySpec) -> tuple[StudySpec, dict[str, str]]:
    """Applies every graph pass of the space to the model once; a pass that rewrites nothing
    leaves the space (it could only repeat the measurement of the configuration without it).

    Returns:
        The spec with those `pass.*` knobs removed, and knob -> why it was dropped.
    """

    names = [k[len(PASS_PREFIX) :] for k in spec.space.names if k.startswith(PASS_PREFIX)]
    if not names:
        return spec, {}
    try:
        inert = inert_passes(onnx.load(str(spec.model.path)), names)
    except Exception as exc:  # noqa: BLE001 - a pass that cannot run on this model is searched as before
        logging.getLogger("autotune").warning("could not pre-apply the graph passes: %s", exc)
        return spec, {}
    space = spec.space
    for name in inert:
        space = space.restrict(PASS_PREFIX + name, [])
    return replace(spec, space=space), {PASS_PREFIX + name: why for name, why in inert.items()}


def _enumerable(space: SearchSpace) -> bool:
    if any(k.type == "float" for k in space.knobs):
        return False
    product = 1
    for knob in space.knobs:
        product *= len(knob.values())
        if product > 20000:
            return False
    return True


def _without_batch(config: dict[str, Any]) -> dict[str, Any]:
    """`config` less its batch size: slowness is measured against the defaults at the same
    batch, so the batch is never what a known-slow rule names."""
    return {k: v for k, v in config.items() if k != "batch_size"}


def _defaults_but_batch(config: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether `config` is the defaults, at whatever batch."""
    return bool(defaults) and _without_batch(config) == _without_batch(defaults)


def _ranked_feasible(study: Any) -> list[Any]:
    """Told, measured (not copies), feasible trials, fastest (samples/s) first."""
    return sorted(
        (
            t
            for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.values
            and "duplicate_of" not in t.user_attrs
            and all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))
        ),
        key=lambda t: -t.values[0],
    )


def fastest_feasible(study: Any) -> tuple[Any | None, float]:
    """The fastest feasible measured trial (samples/s, at any batch) and its samples/s (0: none)."""
    ranked = _ranked_feasible(study)
    return (ranked[0], float(ranked[0].values[0])) if ranked else (None, 0.0)


def carry_to_batches(
    study: Any, batches: list[int], measured_keys: dict[str, int], allowed: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Queues the CARRY_TOP fastest feasible configurations (by samples/s, at any batch; told
    trials, not copies) at each batch of `batches` where that configuration was not measured and
    no rule forbids it; returns the configurations queued."""

    best: list[dict[str, Any]] = []
    for trial in _ranked_feasible(study):
        knobs = {k: v for k, v in trial.params.items() if k != "batch_size"}
        if knobs not in best:
            best.append(knobs)
        if len(best) == CARRY_TOP:
            break
    return queue_at_batches(study, best, batches, measured_keys, allowed)


def queue_at_batches(
    study: Any,
    knobs_list: list[dict[str, Any]],
    batches: list[int],
    measured_keys: dict[str, int],
    allowed: Callable[[dict[str, Any]], bool],
) -> list[dict[str, Any]]:
    """Queues each configuration of `knobs_list` (knobs without the batch) at each batch of
    `batches` where it was not measured and no rule forbids it; returns the configurations queued."""
    queued = unmeasured_at_batches(knobs_list, batches, measured_keys, allowed)
    for config in queued:
        study.enqueue_trial(config, skip_if_exists=True)
    return queued


def unmeasured_at_batches(
    knobs_list: list[dict[str, Any]],
    batches: list[int],
    measured_keys: dict[str, int],
    allowed: Callable[[dict[str, Any]], bool],
) -> list[dict[str, Any]]:
    """Each configuration of `knobs_list` at each batch of `batches` where it was not measured
    and no rule forbids it (what `queue_at_batches` queues)."""
    configs: list[dict[str, Any]] = []
    for knobs in knobs_list:
        for batch in batches:
            config = {**knobs, "batch_size": batch}
            if config_key(config) in measured_keys or not allowed(config) or config in configs:
                continue
            configs.append(config)
    return configs


def _request(
    spec: StudySpec, number: int, config: dict[str, Any], refs: dict[int, dict[str, np.ndarray]], run: StudyRun
) -> TrialRequest:
    rule = spec.stop_rule
    if run.reference_latency_s > 0 and number != 0:
        batch = int(config.get("batch_size", 1)) if spec.model.dynamic_batch else 1
        rule = replace(rule, slow_factor=SLOW_FACTOR, reference_latency_s=run.reference_latency_s * batch)
    return TrialRequest(
        number=number,
        config=config,
        model_path=spec.model.path,
        target_name=spec.target_name,
        target_options=spec.target_options,
        input_pool=spec.input_pool,
        calibration_feeds=spec.calibration_feeds or None,
        dynamic_batch=spec.model.dynamic_batch,
        reference_outputs=refs,
        tolerance=spec.tolerance,
        stop_rule=rule,
        workdir=(trial_dir(spec.study_dir, number)).resolve(),
        shared_measurements=dict(run.measured),
    )
