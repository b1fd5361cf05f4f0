"""The study's answer, decided in one place: which trials are feasible and measured, the
Pareto front, the defaults at a batch, the verdict of a paired speedup against the A/A
control, the per-batch answers and the primary one. Finalize decides with these; `status`,
report.md, the manifest, the printed summary and the dashboard read them (never re-derive)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from autotune.measure import PairedSpeedup
from autotune.study._records import chosen_trial, trial_by_number

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["chosen_trial", "trial_by_number"]  # re-exported: the answer's trial, as stored


@dataclass
class Speedup:
    """The paired speedup of a candidate over the defaults (trial 0's knobs at its batch), as
    the study stores it (`answers`, `speedup`, `aa_control`: these field names are in every
    study's database, hence not `PairedSpeedup`'s).

    Args:
        median (float): median per-round speedup (PairedSpeedup.speedup_median).
        p25 (float): its 25th percentile (speedup_p25).
        p75 (float): its 75th percentile (speedup_p75).
        rounds (int): interleaved rounds.
        default_ms_per_sample (float): the defaults' median ms per sample (A: a_ms_per_sample_median).
        best_ms_per_sample (float): the candidate's median ms per sample (B: b_ms_per_sample_median).
        default_artifact_sha256 (str): sha256 of the file the defaults' side ran (a TensorRT
            engine; "" when unknown). Default: "".
        best_artifact_sha256 (str): the same for the candidate's side: what export compares the
            shipped engine with. Default: "".
        states (list[dict]): the machine states the rounds fell into, each with its own speedup
            (`measure.machine_states`); empty when the rounds were one state. Default: [].
        default_own_ms_per_sample (float): the defaults' ms per sample as their own trial measured
            it in the study (0: unknown). Default: 0.
        best_own_ms_per_sample (float): the same for the candidate's trial. Default: 0.
    """

    median: float
    p25: float
    p75: float
    rounds: int
    default_ms_per_sample: float
    best_ms_per_sample: float
    default_artifact_sha256: str = ""
    best_artifact_sha256: str = ""
    states: list[dict[str, Any]] = field(default_factory=list)
    default_own_ms_per_sample: float = 0.0
    best_own_ms_per_sample: float = 0.0

    @property
    def ratio_of_medians(self) -> float:
        """The defaults' median ms per sample over the candidate's: what the printed
        milliseconds say (the speedup itself is the median of per-round ratios)."""
        return self.default_ms_per_sample / self.best_ms_per_sample if self.best_ms_per_sample > 0 else 0.0

    @classmethod
    def from_paired(cls, paired: PairedSpeedup | Mapping[str, Any]) -> Speedup:
        """From a `measure.paired_speedup` result of A = the defaults, B = the candidate, or its
        `as_dict()` (what a worker sends back)."""
        data = paired.as_dict() if isinstance(paired, PairedSpeedup) else paired
        # what the paired run opened on each side (`trial.run_paired`; absent from older results)
        measured: Mapping[str, Mapping[str, Any]] = data.get("measured_artifacts") or {}
        return cls(
            median=float(data["speedup_median"]),
            p25=float(data["speedup_p25"]),
            p75=float(data["speedup_p75"]),
            rounds=int(data["rounds"]),
            default_ms_per_sample=float(data["a_ms_per_sample_median"]),
            best_ms_per_sample=float(data["b_ms_per_sample_median"]),
            default_artifact_sha256=str(measured.get("a", {}).get("sha256", "")),
            best_artifact_sha256=str(measured.get("b", {}).get("sha256", "")),
            states=[dict(state) for state in data.get("states") or []],
        )


def _complete(study: optuna.Study) -> list[FrozenTrial]:

    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def details(trial: FrozenTrial) -> dict[str, Any]:
    """The nested facts of a trial: measurement, errors_per_output, timings_s, build, rewrites."""
    return dict(trial.user_attrs.get("details", {}))


def is_feasible(trial: FrozenTrial) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", [1.0]))


def measured_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that were measured themselves (not copies of an identical configuration)."""
    return [t for t in _complete(study) if "duplicate_of" not in t.user_attrs]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, measured trials on the (throughput ↑, error ↓) front, fastest first."""
    if study.user_attrs.get("build_only"):
        return []
    return front_of(_complete(study))


def front_of(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The Pareto front of `trials` as every surface shows it (the dashboard's too): complete,
    measured themselves (not copies of an identical configuration), feasible, not dominated in
    (throughput ↑, error ↓); of equal values the first trial; fastest first."""

    candidates = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and "duplicate_of" not in t.user_attrs
        and is_feasible(t)
        and t.values
    ]
    front = []
    for t in candidates:
        dominated = any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and tuple(o.values) != tuple(t.values)
            for o in candidates
        )
        if not dominated:
            front.append(t)
    unique: dict[tuple[float, ...], FrozenTrial] = {}
    for t in sorted(front, key=lambda t: t.number):
        unique.setdefault(tuple(t.values), t)
    return sorted(unique.values(), key=lambda t: -t.values[0])


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The fastest feasible measured trial by its own measurement (provisional: the study's
    answer is `chosen_trial`, which finalize picks by paired re-measurement)."""
    front = pareto_front(study)
    return front[0] if front else None


def default_trial(study: optuna.Study) -> FrozenTrial | None:
    """The baseline: the trial that measured the defaults (a role, not a number: after a
    resume it may have run under another number than 0)."""
    measured = measured_trials(study)
    return next((t for t in measured if t.user_attrs.get("baseline")), None) or next(
        (t for t in measured if t.number == 0), None
    )


def defaults_at_batch(study: optuna.Study, zero: FrozenTrial | None, batch: int) -> FrozenTrial | None:
    """The measured trial that ran the defaults at `batch` (trial 0's knobs, that batch)."""
    if zero is None:
        return None
    if int(zero.user_attrs.get("batch_size", 1)) == batch:
        return zero
    wanted = dict(zero.params) | {"batch_size": batch}
    return next((t for t in measured_trials(study) if dict(t.params) == wanted and t.values), None)


@dataclass
class Answer:
    """The study's answer at one deployment batch size.

    Args:
        batch_size (int): the batch.
        trial (int): the trial to deploy at this batch.
        verdict (str): "faster" (the tuned trial beat the defaults at this batch, clear of the
            A/A noise floor), "no measurable difference", "slower", "defaults" (nothing else
            feasible to compare), or "defaults fail the gate" (the answer is the fastest
            finalist that passes it).
        speedup (Speedup | None): the paired measurement of the best finalist against the
            defaults at this batch.
        ms_per_sample (float): the answer's median latency per sample in the paired run.
        candidates (list[int]): the finalists re-measured.
        paired_winner (int | None): the finalist with the best paired median.
    """

    batch_size: int
    trial: int
    verdict: str
    speedup: Speedup | None
    ms_per_sample: float
    candidates: list[int]
    paired_winner: int | None = None

    @property
    def samples_per_s(self) -> float:
        return 1e3 / self.ms_per_sample if self.ms_per_sample > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples_per_s"] = self.samples_per_s
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        speedup = Speedup(**data["speedup"]) if data.get("speedup") else None
        return cls(
            batch_size=int(data["batch_size"]),
            trial=int(data["trial"]),
            verdict=str(data["verdict"]),
            speedup=speedup,
            ms_per_sample=float(data["ms_per_sample"]),
            candidates=[int(n) for n in data.get("candidates", [])],
            paired_winner=data.get("paired_winner"),
        )


def stored_aa(study: optuna.Study) -> Speedup | None:
    """The A/A control finalize stored (the defaults paired against themselves), if any."""
    data = study.user_attrs.get("aa_control")
    return Speedup(**data) if data else None


def stored_answers(study: optuna.Study) -> dict[int, Answer]:
    """The per-batch answers finalize stored, by batch size."""
    return {int(b): Answer.from_dict(a) for b, a in (study.user_attrs.get("answers") or {}).items()}


def answer_for_trial(study: optuna.Study, number: int | None) -> Answer | None:
    """The stored answer whose trial is `number` (None when that trial answers no batch)."""
    return next((a for a in stored_answers(study).values() if number is not None and a.trial == number), None)


def primary_answer(answers: dict[int, Answer], latency_sla_ms: float | None) -> Answer | None:
    """The study's answer: the highest paired throughput among the per-batch answers whose
    latency per batch meets the SLA (all of them without one)."""
    eligible = [
        a for a in answers.values() if latency_sla_ms is None or a.ms_per_sample * a.batch_size <= latency_sla_ms
    ]
    if not eligible:
        eligible = [answers[min(answers)]] if answers else []
    return max(eligible, key=lambda a: (a.samples_per_s, -a.batch_size)) if eligible else None


FASTER = "faster"
SLOWER = "slower"
NO_DIFFERENCE = "no measurable difference"


def verdict(speedup: Speedup, aa: Speedup | None) -> str:
    """The one rule by which a paired speedup is called faster, slower or neither (finalize
    decides with it; every surface prints what it decided).

    "faster" only when the speedup's whole interquartile interval lies above the A/A
    control's (the defaults paired against themselves: this machine's noise floor) and the
    per-side medians agree (the candidate's median ms per sample is below the defaults');
    "slower" when the interval lies wholly below the control's and the medians agree; else
    "no measurable difference". Without a control the floor is the point 1.0.

    Example:
        >>> aa = Speedup(1.007, 1.003, 1.013, 21, 0.47, 0.47)
        >>> verdict(Speedup(1.001, 0.999, 1.002, 21, 0.4688, 0.4701), aa)  # wholly below the floor
        'slower'
        >>> verdict(Speedup(1.010, 1.004, 1.020, 21, 0.4701, 0.4688), aa)  # overlaps it
        'no measurable difference'
        >>> verdict(Speedup(1.20, 1.15, 1.25, 21, 0.60, 0.50), aa)
        'faster'
        >>> verdict(Speedup(1.20, 1.15, 1.25, 21, 0.50, 0.60), aa)  # the medians say slower
        'no measurable difference'
    """
    floor_low, floor_high = (aa.p25, aa.p75) if aa is not None else (1.0, 1.0)
    medians = speedup.ratio_of_medians
    if speedup.p25 > floor_high and medians > 1.0:
        return FASTER
    if speedup.p75 < floor_low and medians < 1.0:
        return SLOWER
    return NO_DIFFERENCE


def speedup_phrase(s: Speedup, aa: Speedup | None = None) -> str:
    """A paired speedup as every surface prints it: the ratio whose interval is given, then the
    per-side medians under their own name (they are another statistic and can disagree), then
    the speedup in each machine state when the rounds fell into two, and where the paired run's
    milliseconds disagree with the trials' own measurements (`environment_disagreements`)."""
    phrase = (
        f"{s.median:.3f}x (median of {s.rounds} paired rounds, IQR {s.p25:.3f}-{s.p75:.3f}); per-side medians "
        f"{s.default_ms_per_sample:.4g} -> {s.best_ms_per_sample:.4g} ms per sample ({s.ratio_of_medians:.3f}x)"
    )
    if medians_disagree(s, aa):
        phrase += ": the two disagree (the machine changed speed between rounds), so neither is taken alone"
    if s.states:
        phrase += "; " + states_phrase(s, aa)
    for line in environment_disagreements(s, aa):
        phrase += "; " + line
    return phrase


def medians_disagree(s: Speedup, aa: Speedup | None) -> bool:
    """Whether the ratio of the per-side medians lies outside the paired interval by more than the
    A/A control's own width (the noise floor) and more than `ENVIRONMENT_TOLERANCE`. The two are
    different statistics (each round's ratio is taken from its blocks' 10th percentiles), so they
    differ by a percent or two whenever the two sides' run times have different shapes (a CUDA
    graph's tight runs against launch-bound ones with a tail), without the machine changing speed:
    on an H100 (runs 6 and 7), 2.050x beside 2.020x (IQR 2.011-2.027, A/A IQR 1.006-1.024) and
    1.946x beside 1.919x (IQR 1.917-1.923, A/A IQR 1.004-1.013).

    Example:
        >>> aa = Speedup(1.010, 1.004, 1.013, 9, 1.80, 1.79)
        >>> medians_disagree(Speedup(1.919, 1.917, 1.923, 5, 1.768, 0.9085), aa)  # 1.946x: 1.2% out
        False
        >>> medians_disagree(Speedup(1.267, 1.259, 1.282, 21, 10.0, 9.0), aa)  # 1.111x: 12% out
        True
    """
    width = aa.p75 / aa.p25 if aa is not None and aa.p25 > 0 else 1.0
    slack = max(width, 1.0 + ENVIRONMENT_TOLERANCE)
    return not s.p25 / slack <= s.ratio_of_medians <= s.p75 * slack


def states_phrase(s: Speedup, aa: Speedup | None) -> str:
    """The speedup per machine state, and in which state(s) the verdict holds.

    Example:
        >>> states = [
        ...     {"state": "quiet", "rounds": 9, "round_slowdown": 1.0, "speedup_median": 1.047,
        ...      "speedup_p25": 1.03, "speedup_p75": 1.06},
        ...     {"state": "contended", "rounds": 12, "round_slowdown": 1.9, "speedup_median": 1.267,
        ...      "speedup_p25": 1.259, "speedup_p75": 1.282}]
        >>> aa = Speedup(1.0, 0.99, 1.07, 21, 1.0, 1.0)
        >>> states_phrase(Speedup(1.2, 1.1, 1.27, 21, 1.2, 1.0, states=states), aa)  # doctest: +NORMALIZE_WHITESPACE
        'the rounds fell into two machine states: quiet (9 rounds) 1.047x (IQR 1.030-1.060), contended (12 rounds,
         1.90x slower) 1.267x (IQR 1.259-1.282); faster holds in the contended state only'
    """
    parts, verdicts = [], {}
    for state in s.states:
        one = Speedup(
            float(state["speedup_median"]), float(state["speedup_p25"]), float(state["speedup_p75"]),
            int(state["rounds"]), s.default_ms_per_sample, s.best_ms_per_sample,
        )  # fmt: skip
        verdicts[state["state"]] = _interval_verdict(one, aa)
        slower = float(state.get("round_slowdown", 1.0))
        label = f"{state['state']} ({state['rounds']} rounds" + (f", {slower:.2f}x slower)" if slower > 1.0 else ")")
        parts.append(f"{label} {one.median:.3f}x (IQR {one.p25:.3f}-{one.p75:.3f})")
    phrase = "the rounds fell into two machine states: " + ", ".join(parts)
    overall = _interval_verdict(s, aa)
    holding = [name for name, called in verdicts.items() if called == overall]
    if len(holding) == len(verdicts):
        return phrase + f"; {overall} in both"
    if holding:
        return phrase + f"; {overall} holds in the {holding[0]} state only"
    return phrase + f"; {overall} holds in neither state alone"


def _interval_verdict(s: Speedup, aa: Speedup | None) -> str:
    """`verdict` on the interval alone (a state has no per-side medians of its own)."""
    floor_low, floor_high = (aa.p25, aa.p75) if aa is not None else (1.0, 1.0)
    if s.p25 > floor_high:
        return FASTER
    if s.p75 < floor_low:
        return SLOWER
    return NO_DIFFERENCE


ENVIRONMENT_TOLERANCE = 0.05  # never call a gap under 5% a disagreement, however tight the A/A control


def environment_disagreements(s: Speedup, aa: Speedup | None) -> list[str]:
    """Where a side's paired milliseconds disagree with its trial's own measurement in the study
    by more than the A/A interval (and more than `ENVIRONMENT_TOLERANCE`): the paired run then
    ran in another environment than the trials (issue 26: a launch-bound GPU configuration
    slowed by a busier finalize), and its speedup is said to be for that environment.

    Example:
        >>> s = Speedup(3.28, 3.2, 3.3, 21, 3.144, 0.96, default_own_ms_per_sample=2.163, best_own_ms_per_sample=0.95)
        >>> print(*environment_disagreements(s, Speedup(0.997, 0.99, 1.005, 21, 3.1, 3.1)))
        the paired run measured the defaults at 3.144 ms per sample and the study's own trial of them 2.163 ms (1.45x): the paired run ran in another environment than the trials, and this speedup holds for that environment
    """
    floor_low, floor_high = (aa.p25, aa.p75) if aa is not None else (1.0, 1.0)
    low, high = min(floor_low, 1 - ENVIRONMENT_TOLERANCE), max(floor_high, 1 + ENVIRONMENT_TOLERANCE)
    lines = []
    for side, paired, own in (
        ("the defaults", s.default_ms_per_sample, s.default_own_ms_per_sample),
        ("the candidate", s.best_ms_per_sample, s.best_own_ms_per_sample),
    ):
        if paired <= 0 or own <= 0 or low <= paired / own <= high:
            continue
        lines.append(
            f"the paired run measured {side} at {paired:.4g} ms per sample and the study's own trial of them "
            f"{own:.4g} ms ({paired / own:.2f}x): the paired run ran in another environment than the trials, "
            "and this speedup holds for that environment"
        )
    return lines


@dataclass
class FrontEntry:
    """One row of the front as every surface shows it.

    Args:
        trial (FrozenTrial): the trial.
        mark (str): "the answer", "answer at batch N", or "" (on the front only).
        on_front (bool): on the Pareto front of the trials' own measurements.
    """

    trial: FrozenTrial
    mark: str
    on_front: bool


def shown_front(study: optuna.Study) -> list[FrontEntry]:
    """The one front that report.md, `status`, the printed summary, the plot and the dashboard
    note show: the Pareto front of the feasible measured trials (throughput up, error down),
    then every per-batch answer that is not on it (answers are chosen by paired re-measurement,
    so they may sit off the front of the trials' own, noisier numbers). Every answer is marked."""
    chosen = chosen_trial(study)
    by_trial: dict[int, list[int]] = {}
    for batch, answer in sorted(stored_answers(study).items()):
        by_trial.setdefault(answer.trial, []).append(batch)

    def mark(number: int) -> str:
        if chosen is not None and number == chosen.number:
            return "the answer"
        batches = by_trial.get(number)
        return f"answer at batch {', '.join(map(str, batches))}" if batches else ""

    front = pareto_front(study)
    entries = [FrontEntry(t, mark(t.number), True) for t in front]
    shown = {t.number for t in front}
    extra = [chosen.number] if chosen is not None else []
    extra += [n for n in by_trial if n not in extra]
    for number in extra:
        trial = trial_by_number(study, number)
        if trial is not None and number not in shown:
            entries.append(FrontEntry(trial, mark(number), False))
            shown.add(number)
    return entries


ORIGIN_ORDER = ("defaults", "recipe", "sweep", "combined", "carried", "queued", "sampled")
EXPERT_MOVES = ("defaults", "recipe", "sweep", "combined")  # what an expert tries first, before any search


@dataclass
class OriginRow:
    """What the trials of one origin (`autotune.study._loop.trial_origin`) brought.

    Args:
        origin (str): where the configurations came from.
        asked (int): trials asked.
        wasted (int): duplicates, ruled out, failed or too slow (>= 2x the defaults at the batch).
        best_throughput (float): the best feasible throughput they measured (0: none).
        beat_earlier (int): measured trials faster than every feasible trial of the defaults,
            recipes, sweep and combined winners at their batch (only for carried, queued and
            sampled trials: what the search added after the expert's first moves; a batch none
            of those ran at is not counted).
        answers (list[int]): the batches whose answer is one of these trials.
    """

    origin: str
    asked: int
    wasted: int
    best_throughput: float
    beat_earlier: int
    answers: list[int]


def trial_sources(study: optuna.Study) -> tuple[list[OriginRow], dict[str, int | None]]:
    """Per origin, what its trials brought; and when the search reached the answer: the trial
    number from which the best feasible own throughput was at least 95% and 100% of the
    answer's own (`to_95`, `to_100`; None without an answer). Trials told before the `origin`
    attribute existed count as "sampled" unless they are trial 0."""
    answers = stored_answers(study)
    answer_trials = {a.trial: b for b, a in answers.items()}
    told = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    told.sort(key=lambda t: t.number)

    def origin(t: FrozenTrial) -> str:
        return str(t.user_attrs.get("origin") or ("defaults" if t.number == 0 else "sampled"))

    def wasted(t: FrozenTrial) -> bool:
        a = t.user_attrs
        return bool(
            {"duplicate_of", "ruled_out", "known_slow"} & set(a)
            or (t.state != optuna.trial.TrialState.COMPLETE and not a.get("interrupted") and not a.get("cancelled"))
        )

    good = [t for t in told if t.state == optuna.trial.TrialState.COMPLETE and is_feasible(t) and t.values]
    good = [t for t in good if "duplicate_of" not in t.user_attrs]
    first_moves: dict[int, float] = {}
    for t in good:
        if origin(t) in EXPERT_MOVES:
            batch = int(t.user_attrs.get("batch_size", 1))
            first_moves[batch] = max(first_moves.get(batch, 0.0), t.values[0])
    rows = []
    for name in ORIGIN_ORDER:
        mine = [t for t in told if origin(t) == name]
        if not mine:
            continue
        fast = [t.values[0] for t in good if origin(t) == name]
        beat = 0
        if name not in EXPERT_MOVES:
            beat = sum(
                1 for t in good
                if origin(t) == name and t.values[0] > first_moves.get(int(t.user_attrs.get("batch_size", 1)), math.inf)
            )  # fmt: skip
        rows.append(OriginRow(
            name, len(mine), sum(1 for t in mine if wasted(t)), max(fast, default=0.0), beat,
            sorted(answer_trials[t.number] for t in mine if t.number in answer_trials),
        ))  # fmt: skip
    reached: dict[str, int | None] = {"to_95": None, "to_100": None}
    chosen = chosen_trial(study)
    target = chosen.values[0] if chosen is not None and chosen.values else None
    if target:
        best = 0.0
        for t in good:
            best = max(best, t.values[0])
            for key, share in (("to_95", 0.95), ("to_100", 1.0)):
                if reached[key] is None and best >= share * target * (1 - 1e-9):
                    reached[key] = t.number
    return rows, reached


def wall_s(attrs: Mapping[str, Any]) -> float:
    """The study's wall time as every surface states it: its runs (start-up and trials,
    `elapsed_s`) plus its last finalize (`finalize_s`)."""
    return float(attrs.get("elapsed_s", 0.0) or 0.0) + float(attrs.get("finalize_s", 0.0) or 0.0)
