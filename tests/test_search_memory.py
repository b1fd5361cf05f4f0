"""What the search remembers between trials: failure rules, the one-knob sweep, fresh configurations."""

from __future__ import annotations

from autotune.rules import FailureRules, failure_class, rules_from_history
from autotune.space import config_key, parse_space
from autotune.sweep import combine_winners, sweep_configs, unmeasured_config
from autotune.targets.onnxruntime import OnnxRuntimeTarget

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
        ({**d, "graph_optimization_level": "basic"}, 90.0),  # slower
        ({**d, "intra_op_threads": 8}, 130.0),  # a winner
        ({**d, "intra_op_threads": 16}, 120.0),
        ({**d, "precision": "int8", "calibration_method": "entropy"}, 101.0),  # inside the noise margin
        ({**d, "batch_size": 8}, 400.0),
    ]
    one, at_batch = combine_winners(s, measured, default_throughput=100.0)
    assert one == {**d, "intra_op_threads": 8}
    assert at_batch == {**d, "intra_op_threads": 8, "batch_size": 8}
    assert combine_winners(s, [({**d, "graph_optimization_level": "basic"}, 90.0)], 100.0) == []


def test_a_fresh_configuration_is_neither_known_nor_ruled_out():
    s = space()
    known = {config_key(s.default_config())}
    config = unmeasured_config(s, known, lambda c: c["precision"] == "fp32", seed=1)
    assert config is not None and config_key(config) not in known and config["precision"] == "fp32"
    assert unmeasured_config(s, known, lambda c: False, seed=1, tries=50) is None
