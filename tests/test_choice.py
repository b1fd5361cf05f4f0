"""Choosing the answer and what is told to the sampler: pure functions on stand-in trials,
no study run (these sat in the slow-marked test_study.py, so `make test-fast` skipped them)."""

from __future__ import annotations

import optuna


def test_a_speedup_inside_the_aa_interval_is_no_difference_and_the_defaults_stay():
    from autotune.answer import Speedup
    from autotune.finalize import choose_answers

    class Trial:
        def __init__(self, number, batch, throughput, params):
            self.number, self.values, self.params = number, [throughput, 1e-4], params
            self.user_attrs = {"batch_size": batch, "constraints": [-1.0], "digest": f"d{number}",
                               "latency_ms_p50": 1e3 * batch / throughput}  # fmt: skip
            self.state = optuna.trial.TrialState.COMPLETE

    class Study:
        user_attrs: dict = {}

        def __init__(self, trials):
            self.trials = trials

        def get_trials(self, deepcopy=False):
            return self.trials

    zero = Trial(0, 1, 100.0, {"level": "all", "batch_size": 1})
    tuned = Trial(1, 1, 110.0, {"level": "basic", "batch_size": 1})
    study = Study([zero, tuned])
    aa = Speedup(median=1.0, p25=0.97, p75=1.03, rounds=21, default_ms_per_sample=10.0, best_ms_per_sample=10.0)

    def paired(median, p25, p75):
        return lambda request: {"speedup_median": median, "speedup_p25": p25, "speedup_p75": p75, "rounds": 21,
                                "a_ms_per_sample_median": 10.0, "b_ms_per_sample_median": 10.0 / median}  # fmt: skip

    import autotune.finalize as fin

    fin.measure_speedup, original = (
        lambda study, zero, t, batch, rounds, fn, **_: Speedup(**{
            "median": fn(None)["speedup_median"], "p25": fn(None)["speedup_p25"], "p75": fn(None)["speedup_p75"],
            "rounds": 21, "default_ms_per_sample": 10.0, "best_ms_per_sample": 10.0 / fn(None)["speedup_median"]}),
        fin.measure_speedup,
    )  # fmt: skip
    try:
        inside = choose_answers(study, zero, 21, paired(1.02, 0.99, 1.05), aa)[1]
        assert inside.verdict == "no measurable difference" and inside.trial == 0
        slower = choose_answers(study, zero, 21, paired(0.9, 0.85, 0.95), aa)[1]
        assert slower.verdict == "slower" and slower.trial == 0
        faster = choose_answers(study, zero, 21, paired(1.2, 1.1, 1.3), aa)[1]
        assert faster.verdict == "faster" and faster.trial == 1 and faster.speedup.median == 1.2
        # Defaults over tolerance are never the answer: the fastest accurate finalist is, even slower.
        zero.user_attrs["constraints"] = [1.0]
        fixed = choose_answers(study, zero, 21, paired(0.8, 0.78, 0.82), aa)[1]
        assert fixed.verdict == "defaults fail the gate" and fixed.trial == 1
    finally:
        fin.measure_speedup = original


def test_float_rounding_errors_are_told_as_equal_and_real_errors_are_not():
    from autotune.study._records import ERROR_FLOOR, error_objective

    assert error_objective({"normalized_error": 3e-7}) == error_objective({"normalized_error": 2e-6}) == ERROR_FLOOR
    assert error_objective({"normalized_error": 0.02}) == 0.02
    assert error_objective({}) == 1e30


def test_the_answer_is_the_fastest_batch_whose_latency_per_batch_meets_the_sla():
    from autotune.answer import Answer, primary_answer

    one = Answer(batch_size=1, trial=3, verdict="faster", speedup=None, ms_per_sample=1.0, candidates=[3])
    eight = Answer(batch_size=8, trial=5, verdict="faster", speedup=None, ms_per_sample=0.5, candidates=[5])
    answers = {1: one, 8: eight}
    assert primary_answer(answers, None) is eight  # twice the samples per second
    assert primary_answer(answers, 4.0) is eight  # 8 x 0.5 ms = 4 ms per batch: inside
    assert primary_answer(answers, 3.9) is one  # a batch of 8 takes longer than the SLA
    assert primary_answer(answers, 0.1) is one  # none meets it: the smallest batch, not none


def test_one_verdict_rule_faster_only_above_the_aa_interval_and_with_the_medians_agreeing():
    from autotune.answer import Speedup, speedup_phrase, verdict

    aa = Speedup(1.007, 1.003, 1.013, 21, 0.47, 0.47)
    # issue 26: 1.001x with IQR 0.999-1.002 beside an A/A of 1.003-1.013 was called "faster"
    assert verdict(Speedup(1.001, 0.999, 1.002, 21, 0.4688, 0.4701), aa) == "slower"
    assert verdict(Speedup(1.010, 1.004, 1.020, 21, 0.4701, 0.4688), aa) == "no measurable difference"
    assert verdict(Speedup(1.20, 1.15, 1.25, 21, 0.60, 0.50), aa) == "faster"
    # the per-round ratios say faster, the per-side medians say slower: not faster
    assert verdict(Speedup(1.20, 1.15, 1.25, 21, 0.50, 0.60), aa) == "no measurable difference"
    assert verdict(Speedup(0.80, 0.75, 0.85, 21, 0.50, 0.60), aa) == "slower"
    # no control: the floor is 1.0
    assert verdict(Speedup(1.02, 1.01, 1.03, 21, 0.51, 0.50), None) == "faster"
    assert verdict(Speedup(1.02, 0.99, 1.03, 21, 0.51, 0.50), None) == "no measurable difference"
    # issue 26: "3.696x (IQR 1.584-5.713; 151.1 -> 79.6 ms per sample)" read as one statistic
    phrase = speedup_phrase(Speedup(3.696, 1.584, 5.713, 21, 151.1, 79.6))
    assert "3.696x (median of 21 paired rounds, IQR 1.584-5.713)" in phrase
    assert "per-side medians 151.1 -> 79.6 ms per sample (1.898x)" in phrase
    assert "disagree" not in phrase  # 1.898 lies inside 1.584-5.713
    assert "disagree" in speedup_phrase(Speedup(1.267, 1.259, 1.282, 21, 10.0, 9.0))
    # runs 6 and 7 on an H100: a 0.3-0.8%-wide interval beside a 1.2-1.5% gap to the medians' ratio
    # (two statistics of differently shaped run times): no disagreement (the old check said the
    # machine changed speed); a gap beyond both the A/A width and 5% still is one
    gpu_aa = Speedup(1.018, 1.006, 1.024, 17, 1.803, 1.767)
    quiet = Speedup(2.020, 2.011, 2.027, 9, 1.806, 0.8806)
    assert "disagree" not in speedup_phrase(quiet, gpu_aa)
    assert "disagree" not in speedup_phrase(Speedup(1.919, 1.917, 1.923, 5, 1.768, 0.9085), gpu_aa)
    assert "disagree" in speedup_phrase(Speedup(2.020, 2.011, 2.027, 9, 1.806, 0.84), gpu_aa)  # 2.150x: 6% out
    wide_aa = Speedup(1.0, 0.9, 1.1, 21, 1.0, 1.0)  # a noisy floor widens the slack beyond 5%
    assert "disagree" not in speedup_phrase(Speedup(2.020, 2.011, 2.027, 9, 1.806, 0.84), wide_aa)
    assert "disagree" in speedup_phrase(Speedup(1.267, 1.259, 1.282, 21, 10.0, 9.0), gpu_aa)


def test_a_speedup_names_its_machine_states_and_a_paired_environment_unlike_the_trials():
    """Issue 26 item 5: the speedup per machine state, and the paired milliseconds checked
    against each side's own trial (3.144 ms paired vs 2.163 ms in the study: the "3.280x" was
    2.25x like for like)."""
    from autotune.answer import Speedup, environment_disagreements, speedup_phrase

    aa = Speedup(0.997, 0.99, 1.005, 21, 3.1, 3.1)
    slowed = Speedup(3.28, 3.2, 3.3, 21, 3.144, 0.96, default_own_ms_per_sample=2.163, best_own_ms_per_sample=0.95)
    [line] = environment_disagreements(slowed, aa)
    assert "the defaults at 3.144 ms per sample and the study's own trial of them 2.163 ms (1.45x)" in line
    assert line in speedup_phrase(slowed, aa)
    # within the A/A interval and 5%: no statement; unknown own figures: none either
    agreeing = Speedup(2.25, 2.2, 2.3, 21, 2.2, 0.96, default_own_ms_per_sample=2.163, best_own_ms_per_sample=0.95)
    assert environment_disagreements(agreeing, aa) == []
    assert environment_disagreements(Speedup(2.25, 2.2, 2.3, 21, 2.2, 0.96), aa) == []
    states = [
        {"state": "quiet", "rounds": 9, "round_slowdown": 1.0, "speedup_median": 1.047,
         "speedup_p25": 1.03, "speedup_p75": 1.06},
        {"state": "contended", "rounds": 12, "round_slowdown": 1.9, "speedup_median": 1.267,
         "speedup_p25": 1.259, "speedup_p75": 1.282},
    ]  # fmt: skip
    phrase = speedup_phrase(Speedup(1.2, 1.1, 1.27, 21, 1.2, 1.0, states=states), Speedup(1.0, 0.99, 1.07, 21, 1, 1))
    assert "quiet (9 rounds) 1.047x" in phrase and "contended (12 rounds, 1.90x slower) 1.267x" in phrase
    assert phrase.endswith("faster holds in the contended state only")
    both = [dict(s, speedup_p25=1.2, speedup_p75=1.3) for s in states]
    assert speedup_phrase(Speedup(1.25, 1.2, 1.3, 21, 1.25, 1.0, states=both), None).endswith("faster in both")
    # the states travel through the stored answer
    from autotune.answer import Answer

    answer = Answer(1, 3, "faster", Speedup(1.2, 1.1, 1.27, 21, 1.2, 1.0, states=states), 1.0, [3])
    assert Answer.from_dict(answer.as_dict()).speedup.states == states


def test_a_later_trial_beats_the_first_moves_only_at_a_batch_they_ran_at():
    """`trial_sources`: a carried trial at a batch no recipe or sweep trial ran at is not counted
    as beating them (nothing there to beat); one faster than them at their batch is."""
    import optuna

    from autotune.answer import trial_sources

    study = optuna.create_study(directions=["maximize", "minimize"])

    def add(origin: str, batch: int, throughput: float) -> None:
        study.add_trial(optuna.trial.create_trial(
            values=[throughput, 0.001],
            user_attrs={"origin": origin, "batch_size": batch, "constraints": [0.0]},
        ))  # fmt: skip

    add("defaults", 1, 100.0)
    add("sweep", 2, 150.0)
    add("carried", 2, 160.0)  # faster than the sweep at batch 2: counted
    add("carried", 8, 400.0)  # no first move ran at batch 8: not counted
    add("sampled", 1, 90.0)  # slower than the defaults: not counted
    rows, _ = trial_sources(study)
    beat = {r.origin: r.beat_earlier for r in rows}
    assert beat["carried"] == 1 and beat["sampled"] == 0


def _trial(number, batch, ms_per_sample, params, **attrs):
    """A stand-in complete trial: throughput from its own ms per sample."""
    return optuna.trial.create_trial(
        params=params,
        distributions={k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()},
        values=[1e3 / ms_per_sample, 0.0],
        user_attrs={
            "batch_size": batch,
            "constraints": [-1.0],
            "digest": f"d{number}",
            "latency_ms_p50": ms_per_sample * batch,
            **attrs,
        },  # fmt: skip
    )


def _study(trials, **user_attrs):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for trial in trials:
        study.add_trial(trial)
    for key, value in user_attrs.items():
        study.set_user_attr(key, value)
    return study


def test_a_second_finalist_further_behind_than_the_studys_noise_is_not_paired():
    """Issue 26 (run 6, H100): trial 28 at 1.47x the first finalist's own time was paired for 10.6 s
    and lost. A second finalist is paired only within the study's measurement noise (the largest
    drift of the defaults re-measured during the study, at least FINALIST_GAP) of the first."""
    from autotune.finalize import FINALIST_GAP, finalists_by_batch

    trials = [
        _trial(0, 1, 2.0, {"graph": "a"}, baseline=True),
        _trial(1, 1, 1.00, {"graph": "b"}),
        _trial(2, 1, 1.20, {"graph": "c"}),  # 20% behind the first
    ]
    quiet = _study(trials, drift=[{"after_trials": 5, "ms_per_sample": 2.02, "ratio_to_baseline": 1.01}])
    zero = quiet.trials[0]
    assert [t.number for t in finalists_by_batch(quiet, zero)[1]] == [1]
    # a machine whose defaults drifted 1.5x during the study: 20% behind may be noise, both are paired
    noisy = _study(trials, drift=[{"after_trials": 5, "ms_per_sample": 3.0, "ratio_to_baseline": 1.5}])
    assert [t.number for t in finalists_by_batch(noisy, noisy.trials[0])[1]] == [1, 2]
    # no drift measured: nothing is known about the noise, both are paired (the rule before)
    assert [t.number for t in finalists_by_batch(_study(trials), zero)[1]] == [1, 2]
    # just inside the floor of the gap: paired
    close = [*trials[:2], _trial(2, 1, 1.0 + FINALIST_GAP / 2, {"graph": "c"})]
    assert [t.number for t in finalists_by_batch(_study(close, drift=quiet.user_attrs["drift"]), zero)[1]] == [1, 2]


def test_a_finalist_further_behind_the_defaults_than_the_studys_noise_is_not_paired():
    """Issue 26 (run 9, H100): batch 1's second finalist was 14.6% behind the defaults by its own
    measurement and batch 2's only one 111% behind: 16 s of a 75 s finalize paired them to lose.
    A finalist is paired only within the study's noise of the (accurate) defaults at its batch."""
    from autotune.finalize import finalists_by_batch

    quiet = [{"after_trials": 5, "ms_per_sample": 1.01, "ratio_to_baseline": 1.01}]
    trials = [
        _trial(0, 1, 1.0, {"graph": "a"}, baseline=True),
        _trial(1, 1, 1.03, {"graph": "b"}),  # 3% behind: within the noise floor, paired
        _trial(2, 1, 1.15, {"graph": "c"}),  # 15% behind the defaults (and 12% behind trial 1)
        _trial(3, 2, 0.5, {"graph": "a", "batch_size": 2}, baseline=True),
        _trial(4, 2, 1.1, {"graph": "b", "batch_size": 2}),  # 2.2x the defaults at its batch
    ]
    study = _study(trials, drift=quiet)
    chosen = finalists_by_batch(study, study.trials[0])
    assert [t.number for t in chosen[1]] == [1] and chosen[2] == []
    # a noisy machine (the defaults drifted 2.5x): any of them may win, each is paired
    noisy = _study(trials, drift=[{"after_trials": 5, "ms_per_sample": 2.5, "ratio_to_baseline": 2.5}])
    assert [len(f) for f in finalists_by_batch(noisy, noisy.trials[0]).values()] == [2, 1]
    # defaults that fail the gate: the best finalist is the answer whatever its speed, so it is paired
    failing = [_trial(0, 1, 1.0, {"graph": "a"}, baseline=True, constraints=[1.0]), trials[2]]
    study = _study(failing, drift=quiet)
    assert [t.number for t in finalists_by_batch(study, study.trials[0])[1]] == [1]  # (numbered anew)


def test_the_aa_control_settles_once_narrow_and_a_quiet_control_lets_pairings_settle_sooner():
    from autotune.answer import Speedup
    from autotune.finalize import QUIET_AA_WIDTH, quiet
    from autotune.measure import narrow_within, paired_speedup

    settled = narrow_within(QUIET_AA_WIDTH)
    assert settled([1.0, 1.01, 0.995, 1.005, 1.0])
    assert not settled([1.0, 1.2, 0.9, 1.1, 0.95])  # a noisy floor keeps measuring
    # in paired_speedup: a quiet pair stops at min_rounds, a noisy one runs every round
    ticks = iter(range(10**6))
    steady = paired_speedup(lambda: 1e-3, lambda: 1e-3, rounds=21, min_rounds=9, settled=settled,
                            round_s=0.0, warmup_s=0.0, min_iters_per_round=2, warmup_iters=1)  # fmt: skip
    assert steady.rounds == 9

    def jumpy():  # alternates 1 ms and 1.5 ms blocks: the ratios swing +-50%
        return 1e-3 * (1.5 if (next(ticks) // 3) % 2 else 1.0)

    noisy = paired_speedup(jumpy, lambda: 1e-3, rounds=21, min_rounds=9, settled=settled,
                           round_s=0.0, warmup_s=0.0, min_iters_per_round=3, warmup_iters=0, warmup_settle=0)  # fmt: skip
    assert noisy.rounds == 21
    assert quiet(Speedup(1.018, 1.006, 1.024, 17, 1.80, 1.77))
    assert not quiet(Speedup(1.0, 0.97, 1.04, 21, 1.0, 1.0))
    two_states = [{"state": "quiet", "rounds": 5}, {"state": "contended", "rounds": 4}]
    assert not quiet(Speedup(1.0, 0.995, 1.005, 9, 1.0, 1.0, states=two_states))


def test_a_control_that_measured_the_defaults_far_slower_than_their_trial_is_measured_again():
    """Issue 26 (GPU run 9): finalize's A/A control measured the defaults at 1.72x their own trial,
    the next pairing at 1.22x: a busy moment, and a control not quiet holds every pairing to more
    rounds. Such a control is measured once more, as one wider than AA_RETRY_WIDTH is."""
    from autotune.answer import Speedup
    from autotune.finalize import AA_DISTURBED, AA_RETRY_WIDTH, retry_control

    def control(width: float, paired_ms: float, own_ms: float) -> Speedup:
        return Speedup(1.0, 1.0 - width / 2, 1.0 + width / 2, 9, paired_ms, paired_ms, default_own_ms_per_sample=own_ms)

    assert retry_control(control(0.083, 3.086, 1.792))  # run 9: 8.3% wide, 1.72x its own figure
    assert not retry_control(control(0.002, 1.718, 1.69))  # run 8
    assert retry_control(control(AA_RETRY_WIDTH * 1.1, 1.0, 1.0))  # wide alone
    assert not retry_control(control(0.01, AA_DISTURBED * 0.99, 1.0))
    assert retry_control(control(0.01, AA_DISTURBED * 1.01, 1.0))
    assert not retry_control(control(0.01, 5.0, 0.0))  # no own figure (a resumed old study): width alone


def test_the_profile_runs_at_finalize_only_within_its_share_of_the_budget(monkeypatch):
    import autotune.finalize as fin

    study = _study([_trial(0, 1, 2.0, {"graph": "a"}, baseline=True, build_time_s=1.0)], budget_s=240.0)
    estimate = fin.profile_time_s(study)
    assert estimate > 0
    assert fin.profile_fits_budget(study) == (estimate <= fin.PROFILE_SHARE * 240.0)
    study.set_user_attr("budget_s", estimate / fin.PROFILE_SHARE * 0.9)  # the profile is 11% of it
    assert not fin.profile_fits_budget(study)
    study.set_user_attr("budget_s", estimate / fin.PROFILE_SHARE * 1.1)
    assert fin.profile_fits_budget(study)
    study.set_user_attr("budget_s", None)  # no --budget: always
    assert fin.profile_fits_budget(study)


def test_finalize_runs_a_gpu_targets_work_on_the_trials_workers_and_leaves_them_to_their_owner():
    """Issue 26: a second Ray cluster for finalize cost about 6 s of a 122 s finalize (run 6, H100).
    On a GPU target the trials' Ray executor serves finalize and is not closed by it; on a CPU
    target (finalize measures in-process) it is not reused."""
    from autotune.finalize import GpuWork, reuse_workers
    from autotune.workers import InProcessExecutor, RayExecutor

    closed = []

    class Workers(RayExecutor):  # a RayExecutor that never started Ray: only its type and close matter
        def __init__(self):
            pass

        def close(self):
            closed.append(self)

    workers = Workers()
    work = GpuWork(None, workers)
    assert work._executor() is workers
    work.close()
    assert closed == [] and work.executor is None  # its owner (the daemon, the CLI) closes it
    gpu = _study([], target="tests.gpu_double_target:CpuTargetClaimingGpu", target_options={})
    cpu = _study([], target="onnxruntime", target_options={})
    assert reuse_workers(gpu, workers) is workers
    assert reuse_workers(cpu, workers) is None
    assert reuse_workers(gpu, InProcessExecutor()) is None


def test_a_configuration_that_becomes_the_fastest_after_the_carry_is_carried_to_every_batch():
    """Issue 27 (YOLOv8n on an H100, run 7): fp16 was found at batches 16 and 32 after the carry and
    never ran at 4 and 8, where the answer stayed fp32 at 0.83-0.88x the hand FP16 expert. After
    the carry, a configuration that becomes the fastest is carried too (LATE_CARRIES at most); one
    no faster than the fastest so far, or infeasible, is not."""
    import time
    from types import SimpleNamespace

    from autotune.space import config_key
    from autotune.study._loop import LATE_CARRIES, StudyLoop, StudyRun
    from autotune.trial import TrialResult

    trials = [_trial(0, 1, 2.0, {"precision": "fp32", "batch_size": 1}, baseline=True)]
    study = _study(trials)
    state = StudyRun(started=time.monotonic(), budget_s=None, carried=True, carried_best=500.0)
    state.keys = {config_key(t.params): t.number for t in study.trials}
    options = SimpleNamespace(build_only=False)
    spec = SimpleNamespace(target_options=options, batch_sizes=lambda: [1, 2, 4, 8], n_trials=None)
    loop = SimpleNamespace(state=state, study=study, spec=spec)

    def result(number, precision, batch, samples_per_s, passed=True):
        config = {"precision": precision, "batch_size": batch}
        return TrialResult(number, config, "complete", batch_size=batch,
                           measurements={"throughput": samples_per_s}, accuracy={"passed": passed})  # fmt: skip

    StudyLoop.maybe_carry_late(loop, result(5, "fp16", 8, 400.0))  # slower than the fastest so far
    StudyLoop.maybe_carry_late(loop, result(6, "int8", 8, 900.0, passed=False))  # over tolerance
    assert "carried_late" not in study.user_attrs
    state.keys[config_key({"precision": "fp16", "batch_size": 8})] = 7
    StudyLoop.maybe_carry_late(loop, result(7, "fp16", 8, 800.0))
    assert study.user_attrs["carried_late"] == [7]
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert waiting == [{"precision": "fp16", "batch_size": b} for b in (1, 2, 4)]  # not at 8: measured there
    assert set(study.user_attrs["carried"]) == {config_key(c) for c in waiting}
    assert state.carried_best == 800.0
    spec.n_trials, state.done = 20, 18  # two trials left: too few to run a configuration at 3 batches
    StudyLoop.maybe_carry_late(loop, result(8, "bf16", 8, 850.0))
    assert study.user_attrs["carried_late"] == [7]
    spec.n_trials = None
    for n in range(LATE_CARRIES):  # a cap: later bests are not carried past it
        StudyLoop.maybe_carry_late(loop, result(10 + n, f"p{n}", 2, 1000.0 + n))
    assert len(study.user_attrs["carried_late"]) == LATE_CARRIES
    # before the carry nothing is carried late (the carry itself takes the fastest then)
    state.carried, state.late_carries = False, 0
    StudyLoop.maybe_carry_late(loop, result(20, "bf16", 1, 5000.0))
    assert len(study.user_attrs["carried_late"]) == LATE_CARRIES


def test_a_failure_whose_reason_names_its_knob_is_a_rule_after_one_failure():
    """Issue 27 (YOLOv8n on an H100, runs 5 and 7): a CUDA graph that cannot be captured failed
    three recipe trials before the two-failure rule held. The target names that reason's knob, so
    one failure is a rule; a reason it does not name still needs two; a rule a successful trial
    contradicts is not enforced."""
    from autotune.rules import FailureRules, rules_from_history
    from autotune.targets.onnxruntime import OnnxRuntimeTarget

    graph = (
        "build: ONNX Runtime could not create a CUDA session: [ONNXRuntimeError] : 1 : FAIL : This session cannot "
        "use the graph capture feature as requested by the user as all compute graph nodes have not been "
        "partitioned to the CUDAExecutionProvider"
    )
    first = {"cuda_graph": True, "precision": "fp16", "batch_size": 1}
    rules = FailureRules(defaults={"cuda_graph": False, "precision": "fp32"}, named_by=OnnxRuntimeTarget.knobs_named_by)
    rules.record_failure(1, first, graph)
    rule = rules.ruled_out({"cuda_graph": True, "precision": "fp32", "batch_size": 32})
    assert rule is not None and rule.knobs == {"cuda_graph": True} and rule.trials == [1]
    assert rules.ruled_out({"cuda_graph": False, "precision": "fp16", "batch_size": 1}) is None
    # a reason the target does not name: one failure is no rule
    rules.record_failure(2, {"cuda_graph": False, "precision": "int8"}, "build: out of memory in tactic 7")
    assert rules.ruled_out({"cuda_graph": False, "precision": "int8"}) is None
    # without the target's naming (the rule before): one failure is no rule
    assert FailureRules(failures=dict(rules.failures)).ruled_out(first) is None
    # a configuration with the knob that ran: the named rule is not enforced
    rules.record_success({"cuda_graph": True, "precision": "fp32", "batch_size": 1})
    assert rules.ruled_out({"cuda_graph": True, "precision": "fp16", "batch_size": 8}) is None
    # rebuilt on resume from the told history, then given the target's naming
    resumed = rules_from_history([(1, "failed", first, graph)], {"cuda_graph": False})
    assert resumed.ruled_out(first) is None
    resumed.named_by = OnnxRuntimeTarget.knobs_named_by
    assert resumed.ruled_out({"cuda_graph": True, "batch_size": 4}) is not None


def test_the_profile_estimate_counts_the_slowest_build_of_the_defaults_at_a_finalists_batch():
    """The profile runs at the answer's batch; on an H100 the defaults built in 0.47 s at batch 1
    and 2.3 s at batch 32 (run 7), and an estimate from batch 1 undercounted the profile 2x."""
    import autotune.finalize as fin

    zero = _trial(0, 1, 2.0, {"precision": "fp32", "batch_size": 1}, baseline=True, build_time_s=0.5)
    big = _trial(1, 32, 0.2, {"precision": "fp32", "batch_size": 32}, build_time_s=2.5)
    tuned = _trial(2, 32, 0.1, {"precision": "fp16", "batch_size": 32}, build_time_s=2.0)
    alone = fin.profile_time_s(_study([zero]))
    both = fin.profile_time_s(_study([zero, big, tuned]))
    from autotune.profile import profile_estimate_s

    assert both >= profile_estimate_s(2.5, 0.0) > profile_estimate_s(0.5, 0.0)
    assert alone < both


def test_a_finalist_called_faster_is_not_displaced_by_a_higher_median_that_is_not():
    """A batch's winner is its best finalist that the verdict calls faster: a higher median whose
    per-side medians disagree (not faster) must not hand the batch back to the defaults (PP-OCRv4's
    recognizer on the CPU: trial 19 faster at 1.114x lost to trial 17's 1.133x, sides 0.72x)."""
    import autotune.finalize as fin
    from autotune.answer import Speedup

    trials = [
        _trial(0, 1, 12.2, {"graph": "a"}, baseline=True),
        _trial(1, 1, 11.1, {"graph": "b"}),
        _trial(2, 1, 11.0, {"graph": "c"}),
    ]
    study = _study(trials)
    aa = Speedup(1.002, 0.998, 1.005, 9, 12.63, 12.65)
    measured = {
        1: Speedup(1.114, 1.111, 1.123, 5, 13.10, 11.65),  # faster: clear of the control, sides agree
        2: Speedup(1.133, 1.116, 1.244, 5, 15.45, 21.43),  # higher median, the sides the other way
    }
    original = fin.measure_speedup
    fin.measure_speedup = lambda study, zero, trial, batch, rounds, fn, **_: measured[trial.number]
    try:
        answer = fin.choose_answers(study, study.trials[0], 21, None, aa)[1]
        assert answer.verdict == "faster" and answer.trial == 1 and answer.paired_winner == 1
        # with no finalist faster, the best median is the one compared, and the defaults stay
        measured[1] = Speedup(1.01, 0.99, 1.03, 21, 12.0, 11.9)
        answer = fin.choose_answers(study, study.trials[0], 21, None, aa)[1]
        assert answer.paired_winner == 2 and answer.trial == 0 and answer.verdict == "no measurable difference"
        # defaults that fail the gate: the fastest accurate finalist by median, whatever its verdict
        failing = _study([_trial(0, 1, 12.2, {"graph": "a"}, baseline=True, constraints=[1.0]), *trials[1:]])
        measured[1] = Speedup(1.114, 1.111, 1.123, 5, 13.10, 11.65)
        answer = fin.choose_answers(failing, failing.trials[0], 21, None, aa)[1]
        assert answer.trial == 2 and answer.verdict == "defaults fail the gate"
    finally:
        fin.measure_speedup = original
