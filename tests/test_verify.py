"""Accuracy against the reference with Polygraphy's comparator."""

import numpy as np
import pytest

from autotune.errors import MetricError
from autotune.verify import Tolerance, compare_outputs

SCALE = Tolerance(mode="scale")
ELEMENTWISE = Tolerance(atol=1e-2, rtol=1e-2, mode="elementwise")


def test_identical_outputs_pass_with_zero_error():
    ref = {"y": np.linspace(-1, 1, 50, dtype=np.float32)}
    report = compare_outputs(dict(ref), ref, SCALE)
    assert report.passed
    assert report.max_abs_error == 0.0 and report.normalized_error == 0.0
    assert report.min_cosine_similarity > 0.999999


def test_an_error_over_both_tolerances_fails():
    ref = {"y": np.ones(10, np.float32)}
    report = compare_outputs({"y": np.full(10, 1.5, np.float32)}, ref, ELEMENTWISE)
    assert not report.passed
    assert abs(report.max_abs_error - 0.5) < 1e-6
    assert abs(report.max_rel_error - 0.5) < 1e-6


def test_an_element_within_the_absolute_tolerance_passes_even_if_relatively_far():
    ref = {"y": np.array([1e-4, 1.0], np.float32)}
    report = compare_outputs(
        {"y": np.array([2e-4, 1.0], np.float32)}, ref, Tolerance(atol=1e-3, rtol=1e-3, mode="elementwise")
    )
    assert report.passed


def test_a_missing_output_or_a_wrong_shape_fails_with_infinite_error():
    ref = {"y": np.ones((2, 3), np.float32), "z": np.ones(3, np.float32)}
    report = compare_outputs({"y": np.ones((3, 2), np.float32)}, ref, SCALE)
    assert not report.passed
    assert report.outputs["z"].max_abs_error == float("inf")
    assert not report.outputs["y"].passed


def test_a_near_zero_reference_does_not_inflate_the_normalized_error():
    ref = {"y": np.full(8, 1e-30, np.float32)}
    report = compare_outputs({"y": np.zeros(8, np.float32)}, ref, ELEMENTWISE)
    assert report.passed
    assert report.normalized_error < 1e-20


def test_a_reference_within_atol_of_zero_is_reported_as_weak():
    from autotune.study import weak_reference_warnings

    refs = {1: {"heatmap": np.full((1, 4), 1e-4, np.float32), "logits": np.linspace(-3, 3, 8, dtype=np.float32)}}
    warnings = weak_reference_warnings(refs, Tolerance(atol=1e-2, rtol=1e-2))
    assert len(warnings) == 1
    assert "'heatmap'" in warnings[0] and "--inputs" in warnings[0]


def detector_outputs(seed: int = 0) -> dict[str, np.ndarray]:
    """A detector's two outputs: boxes in pixels of a 640x640 image, and class scores in [0, 1]."""
    rng = np.random.default_rng(seed)
    return {
        "boxes": rng.uniform(0, 640, (1, 100, 4)).astype(np.float32),
        "scores": rng.uniform(0, 1, (1, 100, 80)).astype(np.float32),
    }


def test_boxes_moved_by_a_tenth_of_a_percent_of_the_image_pass_the_scale_gate():
    ref = detector_outputs()
    moved = dict(ref, boxes=ref["boxes"] + np.float32(0.64))  # 0.1% of 640 px
    report = compare_outputs(moved, ref, SCALE)
    assert report.passed, report.rejected_by
    boxes = report.outputs["boxes"]
    assert boxes.reference_range > 600
    assert abs(boxes.error_over_range - 0.64 / boxes.reference_range) < 1e-5
    assert abs(report.normalized_error - boxes.error_over_range) < 1e-9
    assert report.as_dict()["rejected_by"] == "" and report.as_dict()["criterion"] == "scale"
    assert not compare_outputs(moved, ref, ELEMENTWISE).passed  # 0.64 px on a box at x=20 is 3% relative


def test_scores_moved_by_thirty_percent_of_their_range_are_rejected_by_name():
    ref = detector_outputs()
    moved = dict(ref, scores=ref["scores"] + np.float32(0.3))
    report = compare_outputs(moved, ref, SCALE)
    assert not report.passed
    assert report.outputs["boxes"].passed and not report.outputs["scores"].passed
    summary = report.as_dict()
    assert summary["rejected_by"].startswith("output 'scores': max abs error 0.3 is 30")
    assert "of its range 1" in summary["rejected_by"] and "(limit 1%)" in summary["rejected_by"]
    assert abs(summary["normalized_error"] - 0.3) < 0.01
    for key in ("passed", "max_abs_error", "max_rel_error", "mean_rel_error", "min_cosine_similarity", "outputs"):
        assert key in summary


def test_an_output_within_its_range_limit_but_pointing_elsewhere_fails_on_cosine():
    ref = np.zeros(1000, np.float32)
    ref[0] = 100.0
    noise = np.where(np.arange(1000) % 2 == 0, 0.9, -0.9).astype(np.float32)  # 0.9% of the range
    report = compare_outputs({"y": ref + noise}, {"y": ref}, SCALE)
    assert not report.passed
    assert report.outputs["y"].error_over_range < 0.01
    assert report.rejected_by.startswith("output 'y': cosine 0.96")
    assert report.rejected_by.endswith("< 0.99")


def test_a_constant_reference_is_judged_against_its_magnitude():
    ref = {"y": np.full(8, 50.0, np.float32)}
    assert compare_outputs({"y": np.full(8, 50.2, np.float32)}, ref, SCALE).passed
    report = compare_outputs({"y": np.full(8, 51.0, np.float32)}, ref, SCALE)
    assert not report.passed and "of its range 50" in report.rejected_by


def test_an_all_zero_reference_is_judged_by_absolute_error_without_cosine():
    ref = {"y": np.zeros(8, np.float32)}
    small = compare_outputs({"y": np.full(8, 1e-3, np.float32)}, ref, SCALE)
    assert small.passed  # cosine of zeros against 1e-3 is 0, and is not tested
    assert small.outputs["y"].reference_range == 0.0
    assert abs(small.normalized_error - 1e-3) < 1e-9
    large = compare_outputs({"y": np.full(8, 0.5, np.float32)}, ref, SCALE)
    assert not large.passed and "absolute floor 0.01" in large.rejected_by


def test_a_candidate_with_nan_is_rejected_in_scale_mode():
    ref = {"y": np.linspace(-1, 1, 8, dtype=np.float32)}
    bad = ref["y"].copy()
    bad[3] = np.nan
    report = compare_outputs({"y": bad}, ref, SCALE)
    assert not report.passed and "NaN" in report.rejected_by


def test_elementwise_mode_names_its_tolerances_when_it_rejects():
    report = compare_outputs({"y": np.full(10, 1.5, np.float32)}, {"y": np.ones(10, np.float32)}, ELEMENTWISE)
    assert report.as_dict()["criterion"] == "elementwise"
    assert "atol 0.01" in report.rejected_by and "rtol 0.01" in report.rejected_by


def test_a_tolerance_pickles_for_ray_workers_and_refuses_an_unknown_mode():
    import pickle

    tolerance = Tolerance(mode="elementwise", max_error=0.05, min_cosine=0.9, metric="top1")
    assert pickle.loads(pickle.dumps(tolerance)) == tolerance
    with pytest.raises(ValueError, match="'strict'"):
        Tolerance(mode="strict")


def first_class_is_kept(candidate, reference):
    """A task metric for these tests: passes when sample 0's argmax is unchanged."""
    same = int(np.argmax(candidate["y"][0]) == np.argmax(reference["y"][0]))
    return 1.0 - same, bool(same)


def test_a_task_metric_decides_pass_and_its_error_is_the_objective():
    ref = {"y": np.array([[0.0, 10.0, 1.0]], np.float32)}
    far = {"y": np.array([[0.0, 10.0, 9.0]], np.float32)}  # 80% of the range off, same class
    report = compare_outputs(far, ref, Tolerance(metric="tests.test_verify:first_class_is_kept"))
    assert report.passed and report.normalized_error == 0.0
    assert not report.outputs["y"].passed  # the scale verdict is still recorded
    summary = report.as_dict()
    assert summary["criterion"] == "metric" and summary["rejected_by"] == ""
    swapped = {"y": np.array([[0.0, 1.0, 10.0]], np.float32)}
    report = compare_outputs(swapped, ref, Tolerance(metric="tests.test_verify:first_class_is_kept"))
    assert not report.passed and report.normalized_error == 1.0
    assert report.rejected_by == "metric tests.test_verify:first_class_is_kept: error 1"


def metric_that_raises(candidate, reference):
    raise KeyError("logits")


def metric_that_returns_a_string(candidate, reference):
    return "looks fine"


@pytest.mark.parametrize(
    ("metric", "fragment"),
    [
        ("tests.test_verify:metric_that_raises", "raised KeyError: 'logits'"),
        ("tests.test_verify:metric_that_returns_a_string", "returned 'looks fine'"),
        ("tests.test_verify:no_such_function", "no callable 'no_such_function'"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
    ],
)
def test_a_broken_metric_fails_verification_with_a_one_line_reason(metric, fragment):
    ref = {"y": np.ones((1, 3), np.float32)}
    with pytest.raises(MetricError) as caught:
        compare_outputs(dict(ref), ref, Tolerance(metric=metric))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_output_fails_before_the_metric_runs():
    ref = {"y": np.ones((1, 3), np.float32), "z": np.ones(2, np.float32)}
    report = compare_outputs({"y": ref["y"]}, ref, Tolerance(metric="tests.test_verify:metric_that_raises"))
    assert not report.passed and report.metric is None
    assert report.rejected_by == "output 'z': missing from the candidate"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], Tolerance()),
        (["--accuracy", "scale"], SCALE),
        (["--max-error", "0.05"], Tolerance(max_error=0.05)),
        (["--min-cosine", "0.999"], Tolerance(min_cosine=0.999)),
        (["--atol", "1e-3"], Tolerance(atol=1e-3, mode="elementwise")),
        (["--accuracy", "elementwise", "--max-error", "0.05"], Tolerance(atol=0.05, rtol=0.05, mode="elementwise")),
        (["--metric", "top5"], Tolerance(metric="autotune.metrics:top5")),
    ],
)
def test_start_flags_build_the_accuracy_gate(tiny_model, results_dir, flags, expected):
    from autotune.cli import build_parser, prepare_start

    argv = ["start", str(tiny_model), "--target", "onnxruntime", "--results-dir", str(results_dir), *flags]
    spec, _ = prepare_start(build_parser().parse_args(argv))
    assert spec.tolerance == expected


def test_a_study_recorded_before_the_scale_gate_resumes_elementwise():
    from autotune.cli import build_parser
    from autotune.spec import _tolerance

    args = build_parser().parse_args(["start"])
    assert _tolerance(args, {"start_options": {"atol": None, "rtol": None}}).mode == "elementwise"
    assert _tolerance(args, {"start_options": {"accuracy": None, "atol": None}}).mode == "scale"


def test_a_rejected_trial_says_why_in_a_flat_attribute_and_in_the_report():
    import optuna

    from autotune.report import rejected_trials
    from autotune.study._records import result_attrs
    from autotune.trial import TrialResult

    ref = detector_outputs()
    accuracy = compare_outputs(dict(ref, scores=ref["scores"] + np.float32(0.3)), ref, SCALE).as_dict()
    result = TrialResult(number=3, config={}, state="complete", accuracy=accuracy)
    attrs = {**result_attrs(result), "constraints": [1.0]}
    assert attrs["rejected_by"].startswith("output 'scores'")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[10.0, 1e-4], user_attrs={"constraints": [-1.0]}))
    study.add_trial(optuna.trial.create_trial(values=[12.0, 0.3], user_attrs=attrs))
    assert rejected_trials(study) == [
        {"trial": 1, "rejected_by": attrs["rejected_by"], "error": attrs["normalized_error"]}
    ]


def test_the_tolerance_line_describes_each_gate():
    from autotune.report import tolerance_line

    scale = {"accuracy_mode": "scale", "max_error": 0.01, "min_cosine": 0.99, "atol": 0.01, "rtol": 0.01}
    assert tolerance_line(scale).startswith("max abs error ≤ 1% of each output's range and cosine ≥ 0.99 (scale)")
    assert "atol 0.001 or rtol 0.01 (elementwise)" in tolerance_line({"atol": 0.001, "rtol": 0.01})
    metric = tolerance_line({**scale, "metric": "autotune.metrics:top1"})
    assert metric.startswith("task metric autotune.metrics:top1 decides pass/fail")


def test_a_study_records_its_accuracy_gate(tiny_model, results_dir):
    from autotune.cli import build_parser, prepare_start
    from autotune.study._records import study_attrs

    argv = ["start", str(tiny_model), "--target", "onnxruntime", "--results-dir", str(results_dir), "--metric", "top1"]
    spec, _ = prepare_start(build_parser().parse_args(argv))
    attrs = study_attrs(spec)
    assert (attrs["accuracy_mode"], attrs["max_error"], attrs["min_cosine"]) == ("auto", 0.01, 0.99)
    assert attrs["metric"] == "autotune.metrics:top1" and attrs["atol"] == 0.01


def test_a_packed_detection_output_is_judged_per_field_of_its_last_axis():
    """YOLOX-style [batch, anchors, 6]: cx, cy, w, h in pixels beside objectness and class score
    in [0, 1]. Against the whole output's range (640) a 0.3 move of a score is 0.05%: per field
    it is 30%."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 640, (1, 200, 4))
    scores = rng.uniform(0, 1, (1, 200, 2))
    ref = {"dets": np.concatenate([boxes, scores], axis=-1).astype(np.float32)}
    moved_boxes = ref["dets"].copy()
    moved_boxes[..., :4] += 0.5
    assert compare_outputs({"dets": moved_boxes}, ref, SCALE).passed
    moved_scores = ref["dets"].copy()
    moved_scores[0, 7, 4] += 0.3
    report = compare_outputs({"dets": moved_scores}, ref, SCALE)
    assert not report.passed
    assert "field 4 of 6 (last axis)" in report.as_dict()["rejected_by"]
    assert report.normalized_error > 0.2


def test_comparing_does_not_compute_the_statistics_polygraphy_would_log(monkeypatch):
    """Polygraphy computes each output's median and histogram for its log whatever the log
    level (10 of 17 s on 52M values); the comparison mutes that log, so they are not computed,
    and the logger is Polygraphy's own again afterwards."""
    from polygraphy.comparator import util as comparator_util

    computed = []
    monkeypatch.setattr(comparator_util, "str_output_stats", lambda *args, **kwargs: computed.append(1) or "")
    original = comparator_util.log_output_stats
    reference = {"y": np.linspace(0, 1, 1000, dtype=np.float32)}
    report = compare_outputs({"y": reference["y"] + 0.02}, reference, SCALE)
    assert not report.passed and report.normalized_error == pytest.approx(0.02, rel=1e-3)
    assert computed == []
    assert comparator_util.log_output_stats is original
