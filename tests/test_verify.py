"""Accuracy against the reference with Polygraphy's comparator."""

import numpy as np

from autotune.verify import Tolerance, compare_outputs


def test_identical_outputs_pass_with_zero_error():
    ref = {"y": np.linspace(-1, 1, 50, dtype=np.float32)}
    report = compare_outputs(dict(ref), ref, Tolerance())
    assert report.passed
    assert report.max_abs_error == 0.0 and report.normalized_error == 0.0
    assert report.min_cosine_similarity > 0.999999


def test_an_error_over_both_tolerances_fails():
    ref = {"y": np.ones(10, np.float32)}
    report = compare_outputs({"y": np.full(10, 1.5, np.float32)}, ref, Tolerance(atol=1e-2, rtol=1e-2))
    assert not report.passed
    assert abs(report.max_abs_error - 0.5) < 1e-6
    assert abs(report.max_rel_error - 0.5) < 1e-6


def test_an_element_within_the_absolute_tolerance_passes_even_if_relatively_far():
    ref = {"y": np.array([1e-4, 1.0], np.float32)}
    report = compare_outputs({"y": np.array([2e-4, 1.0], np.float32)}, ref, Tolerance(atol=1e-3, rtol=1e-3))
    assert report.passed


def test_a_missing_output_or_a_wrong_shape_fails_with_infinite_error():
    ref = {"y": np.ones((2, 3), np.float32), "z": np.ones(3, np.float32)}
    report = compare_outputs({"y": np.ones((3, 2), np.float32)}, ref, Tolerance())
    assert not report.passed
    assert report.outputs["z"].max_abs_error == float("inf")
    assert not report.outputs["y"].passed


def test_a_near_zero_reference_does_not_inflate_the_normalized_error():
    ref = {"y": np.full(8, 1e-30, np.float32)}
    report = compare_outputs({"y": np.zeros(8, np.float32)}, ref, Tolerance(atol=1e-2, rtol=1e-2))
    assert report.passed
    assert report.normalized_error < 1e-20


def test_a_reference_within_atol_of_zero_is_reported_as_weak():
    from autotune.study import weak_reference_warnings

    refs = {1: {"heatmap": np.full((1, 4), 1e-4, np.float32), "logits": np.linspace(-3, 3, 8, dtype=np.float32)}}
    warnings = weak_reference_warnings(refs, Tolerance(atol=1e-2, rtol=1e-2))
    assert len(warnings) == 1
    assert "'heatmap'" in warnings[0] and "--inputs" in warnings[0]
