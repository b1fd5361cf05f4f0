"""Choosing the answer and what is told to the sampler: pure functions on stand-in trials,
no study run (these sat in the slow-marked test_study.py, so `make test-fast` skipped them)."""

from __future__ import annotations

import optuna


def test_a_speedup_inside_the_aa_interval_is_no_difference_and_the_defaults_stay():
    from autotune.finalize import choose_answers
    from autotune.report import Speedup

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
        lambda study, zero, t, batch, rounds, fn: Speedup(**{
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
    from autotune.finalize import primary_answer
    from autotune.report import Answer

    one = Answer(batch_size=1, trial=3, verdict="faster", speedup=None, ms_per_sample=1.0, candidates=[3])
    eight = Answer(batch_size=8, trial=5, verdict="faster", speedup=None, ms_per_sample=0.5, candidates=[5])
    answers = {1: one, 8: eight}
    assert primary_answer(answers, None) is eight  # twice the samples per second
    assert primary_answer(answers, 4.0) is eight  # 8 x 0.5 ms = 4 ms per batch: inside
    assert primary_answer(answers, 3.9) is one  # a batch of 8 takes longer than the SLA
    assert primary_answer(answers, 0.1) is one  # none meets it: the smallest batch, not none
