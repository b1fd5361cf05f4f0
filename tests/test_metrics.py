"""The task metrics shipped with autotune: top-k agreement of a classifier with its reference."""

import numpy as np

from autotune.metrics import top1, top5
from autotune.verify import Tolerance, compare_outputs


def logits(samples: int = 200, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(samples, classes)).astype(np.float32)


def test_top1_passes_a_candidate_that_keeps_every_predicted_class():
    ref = logits()
    result = top1({"y": ref * 3 + 1}, {"y": ref})  # far in value, same order
    assert result["passed"] and result["error"] == 0.0


def test_top1_counts_each_changed_prediction():
    ref = logits()
    cand = ref.copy()
    cand[:4] = -cand[:4]  # reverses the order of 4 samples out of 200
    result = top1({"y": cand}, {"y": ref})
    assert abs(result["error"] - 4 / 200) < 1e-9
    assert not result["passed"] and "98.0%" in result["detail"]


def test_top5_accepts_the_reference_class_anywhere_among_the_five_best():
    ref = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # class 9 best
    cand = ref.copy()
    cand[:, 9] = 5.5  # class 9 falls to 4th place
    assert top5({"y": cand}, {"y": ref})["passed"]
    assert not top1({"y": cand}, {"y": ref})["passed"]


def test_a_nan_score_counts_as_a_disagreement():
    ref = logits(samples=2)
    cand = ref.copy()
    cand[1, 0] = np.nan
    assert top1({"y": cand}, {"y": ref})["error"] == 0.5


def test_top1_reads_the_first_output_and_the_last_axis():
    ref = {"scores": logits(samples=6).reshape(2, 3, 10), "boxes": np.zeros((2, 4), np.float32)}
    cand = {"scores": ref["scores"] + 0.001, "boxes": np.ones((2, 4), np.float32)}
    result = top1(cand, ref)
    assert result["passed"] and "6 samples of output 'scores'" in result["detail"]


def test_the_short_name_top1_works_as_a_tolerance_metric():
    ref = logits()
    report = compare_outputs({"y": ref + 0.5}, {"y": ref}, Tolerance(metric="top1"))
    assert report.passed and report.as_dict()["metric"]["name"] == "top1"
