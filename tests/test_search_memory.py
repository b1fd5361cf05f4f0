"""What the search remembers between trials: failure rules, the one-knob sweep, fresh configurations."""

from __future__ import annotations

import types
from dataclasses import replace

from autotune.rules import FailureRules, failure_class, rules_from_history
from autotune.space import config_key, parse_space
from autotune.study._loop import StudyLoop, StudyRun
from autotune.sweep import Outcome, combine_winners, sweep_configs, unmeasured_config
from autotune.targets.onnxruntime import OnnxRuntimeTarget
from autotune.trial import TrialResult

SPACE = {
    "target": "onnxruntime",
    "knobs": {
        "graph_optimization_level": {"type": "categorical", "choices": ["basic", "extended", "all"], "default": "all"},
        "intra_op_threads": {"type": "int", "low": 0, "high": 16, "default": 0},
        "precision": {"type": "categorical", "choices": ["fp32", "int8"], "default": "fp32"},
        "calibration_method": {
            "type": "categorical",
            "choices": ["minmax", "entropy"],
            "default": "minmax",
            "condition": {"precision": ["int8"]},
        },
        "batch_size": {"type": "categorical", "choices": [1, 8], "default": 1},
    },
}


def space():
    return parse_space(SPACE, OnnxRuntimeTarget())


def test_failure_classes_ignore_what_varies_between_runs():
    a = failure_class("build: could not create session for /tmp/r/trials/12/model.onnx: node 'conv_3' 41 MB")
    b = failure_class("build: could not create session for /tmp/x/trials/7/model.onnx: node 'mm' 7 MB")
    assert a == b
    assert failure_class("interrupted: the daemon stopped mid-trial; configuration re-queued") is None
    assert failure_class("budget spent: still running 60 s after the budget ended") is None
    assert failure_class("too slow: median 41 ms per batch after 3 runs, over 10x") == failure_class(
        "too slow: median 97 ms per batch after 5 runs, over 10x"
    )


def test_a_rule_is_what_every_failure_of_its_class_had_in_common():
    rules = FailureRules()
    reason = "build: graph capture is not supported with NHWC"
    assert rules.record_failure(3, {"graph": True, "nhwc": True, "level": "all", "batch": 1}, reason) is None
    rule = rules.record_failure(5, {"graph": True, "nhwc": True, "level": "basic", "batch": 8}, reason)
    assert rule is not None and rule.enforced
    assert rule.knobs == {"graph": True, "nhwc": True} and rule.trials == [3, 5]
    assert rules.ruled_out({"graph": True, "nhwc": True, "level": "extended", "batch": 4}) is not None
    assert rules.ruled_out({"graph": True, "nhwc": False, "level": "all", "batch": 1}) is None


def test_a_rule_that_a_successful_trial_satisfies_is_not_enforced():
    rules = FailureRules()
    rules.record_success({"level": "all", "batch": 1, "graph": False})
    reason = "worker died: signal 11 (SIGSEGV) during build"
    rules.record_failure(2, {"level": "all", "batch": 1, "graph": True}, reason)
    rules.record_failure(4, {"level": "all", "batch": 8, "graph": False}, reason)
    (rule,) = rules.rules()
    assert rule.knobs == {"level": "all"}  # a coincidence, and trial 0 ran with it
    assert not rule.enforced and rules.ruled_out({"level": "all", "batch": 1, "graph": True}) is None


def test_rules_are_rebuilt_from_the_told_history():
    history = [
        (0, "complete", {"a": 0, "b": 0}, ""),
        (1, "failed", {"a": 1, "b": 1}, "build: unsupported 1"),
        (2, "pruned", {"a": 1, "b": 1}, "duplicate of trial 1, which failed"),
        (3, "failed", {"a": 1, "b": 0}, "build: unsupported 2"),
    ]
    rules = rules_from_history(history)
    (rule,) = rules.enforced()
    assert rule.knobs == {"a": 1} and rule.trials == [1, 3]


def test_the_sweep_changes_one_knob_at_a_time_and_activates_conditional_knobs():
    s = space()
    defaults = s.default_config()
    configs = sweep_configs(s)
    keys = [config_key(c) for c in configs]
    assert len(keys) == len(set(keys)) and config_key(defaults) not in keys
    for config in configs:
        changed = {k for k in set(config) | set(defaults) if config.get(k) != defaults.get(k)}
        assert len(changed) == 1 or changed == {"precision", "calibration_method"}
    threads = sorted(c["intra_op_threads"] for c in configs if c["intra_op_threads"] != 0)
    assert threads == [8, 16]  # a wide int range is swept at a few points
    assert {c.get("calibration_method") for c in configs if c["precision"] == "int8"} == {"minmax", "entropy"}
    assert any(c["batch_size"] == 8 and c["graph_optimization_level"] == "all" for c in configs)


def test_the_winners_of_the_sweep_are_combined_at_batch_one_and_at_the_best_batch():
    s = space()
    d = s.default_config()
    measured = [
        Outcome({**d, "graph_optimization_level": "basic"}, 90.0, 1e-6, True),  # slower
        Outcome({**d, "intra_op_threads": 8}, 130.0, 1e-6, True),  # a winner
        Outcome({**d, "intra_op_threads": 16}, 120.0, 1e-6, True),
        Outcome({**d, "precision": "int8", "calibration_method": "entropy"}, 101.0, 1e-3, True),  # in the noise
        Outcome({**d, "graph_optimization_level": "extended"}, 150.0, 0.5, False),  # fast but fails the gate
        Outcome({**d, "batch_size": 8}, 400.0, 1e-6, True),
    ]
    one, at_batch, low_at_batch = combine_winners(s, measured, Outcome(d, 100.0, 1e-6, True))
    assert one == {**d, "intra_op_threads": 8}
    assert at_batch == {**d, "intra_op_threads": 8, "batch_size": 8}
    assert low_at_batch == {**at_batch, "precision": "int8", "calibration_method": "entropy"}
    assert combine_winners(s, measured[:1], Outcome(d, 100.0, 1e-6, True)) == []


def test_when_the_defaults_fail_the_gate_the_fix_is_combined_with_the_speed_winners():
    """The PP-OCR detector on the H100: TF32 (the default) moved its text map by 7% of its
    range; TF32 off passed but was slower; CUDA graph was faster with the same error. The same
    roles are played here by knobs this CPU-only space has."""
    s = space()
    d = s.default_config()
    default = Outcome(d, 400.0, 0.077, False)
    measured = [
        Outcome({**d, "precision": "int8", "calibration_method": "minmax"}, 350.0, 0.004, True),  # the fix
        Outcome({**d, "intra_op_threads": 8}, 560.0, 0.077, False),  # a speed winner, equally wrong
        Outcome({**d, "graph_optimization_level": "basic"}, 500.0, 0.9, False),  # faster but far worse
    ]
    (combined,) = combine_winners(s, measured, default)
    assert combined == {**d, "precision": "int8", "calibration_method": "minmax", "intra_op_threads": 8}


def test_a_fresh_configuration_is_neither_known_nor_ruled_out():
    s = space()
    known = {config_key(s.default_config())}
    config = unmeasured_config(s, known, lambda c: c["precision"] == "fp32", seed=1)
    assert config is not None and config_key(config) not in known and config["precision"] == "fp32"
    assert unmeasured_config(s, known, lambda c: False, seed=1, tries=50) is None


def test_a_rule_keeps_only_the_non_default_values_when_no_success_contradicts_it():
    defaults = {"graph": False, "nhwc": False, "level": "all", "batch": 1}
    rules = FailureRules(defaults=defaults)
    rules.record_success(dict(defaults))
    rules.record_success({**defaults, "graph": True})  # the expert recipe works
    rules.record_success({**defaults, "nhwc": True})
    reason = "build: graph capture is not supported"
    rules.record_failure(7, {**defaults, "graph": True, "nhwc": True, "level": "basic"}, reason)
    rule = rules.record_failure(9, {**defaults, "graph": True, "nhwc": True, "batch": 8, "level": "basic"}, reason)
    # Both failures also had level=basic by coincidence: kept (not a default value), and
    # batch=1 vs 8 differs: gone. A third failure at another level generalizes further.
    assert rule.knobs == {"graph": True, "nhwc": True, "level": "basic"}
    rule = rules.record_failure(11, {**defaults, "graph": True, "nhwc": True, "batch": 4}, reason)
    assert rule.knobs == {"graph": True, "nhwc": True} and rule.enforced


def test_a_rule_is_not_reduced_to_values_a_success_had():
    defaults = {"graph": False, "precision": "fp32"}
    rules = FailureRules(defaults=defaults)
    rules.record_success({"graph": True, "precision": "fp16"})  # graph works in fp16
    reason = "build: capture failed"
    rules.record_failure(1, {"graph": True, "precision": "fp32"}, reason)
    rule = rules.record_failure(2, {"graph": True, "precision": "fp32"}, reason)
    assert rule.knobs == {"graph": True, "precision": "fp32"}


def test_the_fastest_batch_gets_the_accuracy_fixes_when_it_failed_the_gate():
    """YOLOX on the H100: the defaults pass at batch 1 but TF32 moves the objectness field by
    1.3% at batch >= 4; TF32 off passes everywhere. Two speed winners may be incompatible
    (CUDA graph + NHWC), so the fastest alone is tried too."""
    s = space()
    d = s.default_config()
    default = Outcome(d, 460.0, 0.004, True)
    measured = [
        Outcome({**d, "intra_op_threads": 8}, 675.0, 0.004, True),  # plays CUDA graph
        Outcome({**d, "graph_optimization_level": "basic"}, 512.0, 0.003, True),  # plays NHWC
        Outcome({**d, "precision": "int8", "calibration_method": "minmax"}, 372.0, 1e-5, True),  # plays TF32 off
        Outcome({**d, "batch_size": 8}, 1738.0, 0.013, False),
    ]
    combined = combine_winners(s, measured, default)
    both = {"intra_op_threads": 8, "graph_optimization_level": "basic"}
    fix = {"precision": "int8", "calibration_method": "minmax"}
    assert {**d, **both} in combined and {**d, "intra_op_threads": 8} in combined
    assert {**d, **both, **fix, "batch_size": 8} in combined
    assert {**d, "intra_op_threads": 8, **fix, "batch_size": 8} in combined
    assert all(c.get("precision") == "fp32" for c in combined if c["batch_size"] == 1)  # b1 needs no fix


def test_a_lower_precision_that_passes_is_tried_at_the_fastest_batch():
    """MiniLM on the H200: FP16 passed the gate but was no faster at batch 1; at batch 32 it
    was 1.3x FP32. The combination at the fastest batch carries it."""
    s = space()
    d = s.default_config()
    measured = [
        Outcome({**d, "precision": "int8", "calibration_method": "minmax"}, 95.0, 1e-3, True),  # plays fp16
        Outcome({**d, "batch_size": 8}, 600.0, 1e-6, True),
    ]
    combined = combine_winners(s, measured, Outcome(d, 100.0, 1e-6, True))
    assert {**d, "batch_size": 8} in combined
    assert {**d, "precision": "int8", "calibration_method": "minmax", "batch_size": 8} in combined


def test_the_sweep_takes_at_most_half_the_trials():
    from autotune.study._loop import sweep_cap

    assert sweep_cap(30) == 15 and sweep_cap(5) == 4 and sweep_cap(None) == 40


def test_slow_static_int8_rules_out_static_int8_and_leaves_dynamic_int8_to_be_tried():
    """A known-slow rule learned from static INT8 trials named `precision=int8` and so ruled out
    `quantization: dynamic` too (its conditional child at another value, never tried)."""
    defaults = {"precision": "fp32", "level": "all"}
    rules = FailureRules(defaults=defaults)
    rules.record_success(dict(defaults))
    static = {"precision": "int8", "quantization": "static", "calibration_method": "minmax"}
    rules.record_slow(3, {**defaults, **static})
    found = rules.record_slow(5, {**defaults, **static, "calibration_method": "percentile", "level": "basic"})
    assert [r.knobs for r in found] == [{"quantization": "static"}]  # precision's own rule is covered by it
    assert rules.ruled_out({**defaults, **static, "calibration_method": "entropy"}) is not None
    assert rules.ruled_out({**defaults, "precision": "int8", "quantization": "dynamic"}) is None
    # without a conditional child, the shared value itself is the rule (as before)
    plain = FailureRules(defaults={"search": "EXHAUSTIVE", "graph": False})
    plain.record_slow(1, {"search": "DEFAULT", "graph": False})
    [rule] = plain.record_slow(2, {"search": "DEFAULT", "graph": True})
    assert rule.knobs == {"search": "DEFAULT"} and rule.enforced
    plain.record_success({"search": "DEFAULT", "graph": True, "threads": 4})  # a fast trial contradicts it
    assert not plain.known_slow_rules()[0].enforced


def test_a_repeat_is_replaced_by_an_unmeasured_neighbour_of_the_fastest_configuration():
    """Issue 27: the sampler's repeats are spent beside the best configuration so far (one knob
    away, never measured, not ruled out); None once every neighbour is known or ruled out."""
    from autotune.sweep import unmeasured_neighbour

    s = space()
    best = {**s.default_config(), "precision": "int8", "calibration_method": "entropy", "batch_size": 8}
    known = {config_key(best)}
    for seed in range(5):
        fresh = unmeasured_neighbour(s, best, known, lambda c: True, seed)
        assert fresh is not None and config_key(fresh) not in known
        changed = {k for k in best.keys() | fresh.keys() if best.get(k) != fresh.get(k)}
        # one knob away (turning precision to fp32 also drops its conditional calibration_method)
        assert len(changed - {"calibration_method"}) == 1 or changed == {"calibration_method"}
    only_fp32 = unmeasured_neighbour(s, best, known, lambda c: c["precision"] == "fp32", seed=0)
    assert only_fp32 is not None and only_fp32["precision"] == "fp32" and "calibration_method" not in only_fp32
    # every neighbour ruled out or known: none (the caller then draws a random configuration)
    assert unmeasured_neighbour(s, best, known, lambda c: False, seed=0) is None


def test_a_trial_slow_within_the_defaults_own_swing_is_not_known_slow():
    """A trial twice the defaults' best time is evidence of a slow configuration only when the
    defaults themselves never measured that far apart (a contended 2-core machine runs the same
    session 1.5-2.3x slower); a study whose controls swung 2.5x needs 5x."""

    def loop(*defaults_ms: float) -> types.SimpleNamespace:
        state = StudyRun(started=0.0, budget_s=None)
        state.reference_latency_s, state.defaults_slowest_s = min(defaults_ms) / 1e3, max(defaults_ms) / 1e3
        state.defaults_at[1] = min(defaults_ms) / 1e3
        ns = types.SimpleNamespace(state=state)
        ns.slow_at_batch = lambda result: StudyLoop.slow_at_batch(ns, result)  # the real methods
        return ns

    def trial(ms: float) -> TrialResult:
        return TrialResult(5, {"graph_optimization_level": "basic"}, "complete", measurements={"latency_ms_p50": ms})

    quiet, swinging = loop(1.0, 1.05), loop(1.0, 2.5)
    assert quiet.state.noise() == 1.05 and swinging.state.noise() == 2.5
    assert StudyLoop.known_slow(quiet, trial(2.2)) and not StudyLoop.known_slow(quiet, trial(2.0))
    assert not StudyLoop.known_slow(swinging, trial(2.2)) and not StudyLoop.known_slow(swinging, trial(4.9))
    assert StudyLoop.known_slow(swinging, trial(5.1))
    assert not StudyLoop.known_slow(quiet, replace(trial(9.0), state="failed"))  # failures are rules of their own
