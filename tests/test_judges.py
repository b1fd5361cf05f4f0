"""Every output role is inferred on trained models, and every role's judge is shown able to fail
(a known-bad change rejected) and able to pass (FP16 of the same model, decisions unchanged)
(issue 24). The models ship inside public wheels (tests/trained_models.py); the inputs are a
real photograph and rendered text.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from autotune.judges import JudgeLimits, infer_roles, output_producers, parse_limits, parse_role
from autotune.passes.precision import cast_to_low_precision
from autotune.verify import Tolerance, compare_outputs
from tests.trained_models import jittered, model_path, photo, text_lines, text_page

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gpu_grid import yolox_pixels


def run(path: Path | str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


class Trained:
    """A trained model on real inputs: its FP32 reference, its FP16 outputs and its roles."""

    def __init__(self, path: Path, feeds: dict[str, np.ndarray], tmp: Path) -> None:
        self.path = path
        self.feeds = feeds
        self.reference = run(path, feeds)
        fp16 = tmp / f"{path.stem}_fp16.onnx"
        onnx.save(cast_to_low_precision(onnx.load(str(path)), "fp16", kernels="onnxruntime_cpu"), str(fp16))
        self.fp16 = run(fp16, feeds)
        samples = next(iter(feeds.values())).shape[0]
        self.roles = infer_roles(self.reference, samples, output_producers(path))
        self.name = next(iter(self.reference))
        self.tolerance = Tolerance(roles=tuple(self.roles.values()))

    @property
    def role(self) -> Any:
        return self.roles[self.name]

    def judged(self, candidate: np.ndarray, tolerance: Tolerance | None = None) -> Any:
        return compare_outputs({self.name: candidate}, self.reference, tolerance or self.tolerance)

    @property
    def ref(self) -> np.ndarray:
        return self.reference[self.name].copy()

    def jittered(self, mean: Any = 0.0, std: Any = 1.0) -> np.ndarray:
        """FP32's own output on its inputs moved by up to one 8-bit pixel level."""
        return run(self.path, jittered(self.feeds, mean, std))[self.name]


@pytest.fixture(scope="module")
def tmp_models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trained")


@pytest.fixture(scope="module")
def yolov8(tmp_models) -> Trained:
    return Trained(model_path("yolov8n"), {"images": photo(640)}, tmp_models)


def bgr_page(size: int) -> np.ndarray:
    page = text_page(size=(size, size))[0].transpose(1, 2, 0)
    rgb = (page * np.array([0.229, 0.224, 0.225], np.float32) + np.array([0.485, 0.456, 0.406], np.float32)) * 255
    return np.ascontiguousarray(rgb[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32)


@pytest.fixture(scope="module")
def yolox(tmp_models) -> Trained:
    path = yolox_pixels(model_path("yolox_captcha"), tmp_models / "yolox_decoded.onnx")
    return Trained(path, {"images": bgr_page(416)}, tmp_models)


@pytest.fixture(scope="module")
def recognizer(tmp_models) -> Trained:
    return Trained(model_path("ppocr_rec"), {"x": text_lines(320)}, tmp_models)


@pytest.fixture(scope="module")
def recognizer_64(tmp_models) -> Trained:
    """The recognizer on 64 rendered lines (~1000 characters: one edit is 0.1%, under the 1% limit)."""
    words = "invoice total amount date number customer payment receipt order price batch engine".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, int(rng.integers(1, 4)))) for _ in range(64)]
    return Trained(model_path("ppocr_rec"), {"x": text_lines(320, lines)}, tmp_models)


@pytest.fixture(scope="module")
def classifier(tmp_models) -> Trained:
    return Trained(model_path("ppocr_cls"), {"x": text_lines(192, flip=2)}, tmp_models)


@pytest.fixture(scope="module")
def text_map(tmp_models) -> Trained:
    return Trained(model_path("ppocr_det"), {"x": text_page()}, tmp_models)


@pytest.fixture(scope="module")
def embedder(tmp_models) -> Trained:
    """The direction classifier cut at its pooled features (a trained 200-wide embedding)."""
    path = tmp_models / "ppocr_cls_features.onnx"
    model = onnx.load(str(model_path("ppocr_cls")))
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("reshape2_0.tmp_0", onnx.TensorProto.FLOAT, ["b", 200])
    )
    onnx.save(model, str(path))
    return Trained(path, {"x": text_lines(192, flip=2)}, tmp_models)


def test_a_yolov8_detector_has_detections_with_fields_on_axis_1(yolov8):
    assert yolov8.role.role == "detections"
    assert yolov8.role.axis == 1 and not yolov8.role.objectness
    assert "84 fields on axis 1" in yolov8.role.evidence and "Concat(Mul, Sigmoid)" in yolov8.role.evidence


def test_a_yolox_detector_has_detections_with_fields_last_and_objectness(yolox):
    assert yolox.role.role == "detections" and yolox.role.axis == 2 and yolox.role.objectness


def test_the_ocr_models_have_their_roles(recognizer, classifier, text_map, embedder):
    assert recognizer.role.role == "sequence" and "Softmax over 6625 symbols" in recognizer.role.evidence
    assert classifier.role.role == "classes" and classifier.role.probabilities
    assert text_map.role.role == "dense_map"
    assert embedder.role.role == "embedding", embedder.role.evidence


def test_time_major_logits_are_a_sequence_and_batch_first_logits_stay_generic(recognizer):
    # ddddocr's recognizer ends in its classifier's logits, time-major [T, b, V] (CTC's layout).
    probabilities = recognizer.reference[recognizer.name]
    logits = np.log(np.maximum(probabilities, 1e-30))
    samples = probabilities.shape[0]
    time_major = infer_roles({"out": np.ascontiguousarray(logits.transpose(1, 0, 2))}, samples, {"out": "MatMul"})
    assert time_major["out"].role == "sequence" and time_major["out"].batch_axis == 1
    assert "time-major logits" in time_major["out"].evidence
    batch_first = infer_roles({"out": logits}, samples, {"out": "MatMul"})
    assert batch_first["out"].role == "generic"
    judged = Tolerance(roles=tuple(time_major.values()))
    reference = {"out": np.ascontiguousarray(logits.transpose(1, 0, 2))}
    moved = reference["out"] + np.random.default_rng(0).normal(0, 1e-3, reference["out"].shape).astype(np.float32)
    assert compare_outputs({"out": moved}, reference, judged).passed  # logits moved, text kept
    steps = reference["out"][:, 0].argmax(-1)
    step = int(np.flatnonzero(steps != 0)[0])
    moved[step, 0, (steps[step] + 7) % logits.shape[-1] or 1] = reference["out"].max() + 10.0
    report = compare_outputs({"out": moved}, reference, judged)  # one character of line 0 changed
    assert not report.passed and "1 of 6 lines differ" in report.judges["out"].detail


@pytest.mark.parametrize("model", ["yolov8", "yolox", "recognizer", "classifier", "text_map", "embedder"])
def test_fp16_of_a_trained_model_passes_its_judge(model, request):
    trained = request.getfixturevalue(model)
    report = trained.judged(trained.fp16[trained.name])
    assert report.passed, report.rejected_by
    assert report.criterion == "auto" and trained.name in report.judges


def shift_scores(trained: Trained, amount: float, seed: int = 0) -> np.ndarray:
    """The reference with noise of +-`amount` on every score field (boxes untouched)."""
    moved = np.moveaxis(trained.ref, trained.role.axis, -1)
    noise = np.random.default_rng(seed).uniform(-amount, amount, moved[..., 4:].shape)
    moved[..., 4:] = np.clip(moved[..., 4:] + noise, 0, 1)
    return np.moveaxis(moved, -1, trained.role.axis)


def shift_boxes(trained: Trained, share: float) -> np.ndarray:
    """The reference with every box moved right by `share` of its larger side."""
    moved = np.moveaxis(trained.ref, trained.role.axis, -1)
    moved[..., 0] += share * np.maximum(moved[..., 2], moved[..., 3])
    return np.moveaxis(moved, -1, trained.role.axis)


@pytest.mark.parametrize("model", ["yolov8", "yolox"])
@pytest.mark.parametrize("amount", [0.3, 3.0])
def test_detector_scores_moved_are_rejected_which_the_scale_gate_let_through(model, amount, request):
    trained = request.getfixturevalue(model)
    report = trained.judged(shift_scores(trained, amount))
    assert not report.passed and "score" in report.rejected_by
    if model == "yolov8" and amount == 0.3:  # the defect of issue 24: the old default let it pass
        assert compare_outputs(
            {trained.name: shift_scores(trained, amount)}, trained.reference, Tolerance(mode="scale")
        ).passed


@pytest.mark.parametrize("model", ["yolov8", "yolox"])
def test_a_box_shifted_by_20_percent_of_its_size_is_rejected(model, request):
    trained = request.getfixturevalue(model)
    report = trained.judged(shift_boxes(trained, 0.2))
    assert not report.passed and "box moved by 20" in report.rejected_by


def test_a_lost_detection_is_rejected(yolov8):
    """The best-scoring person's anchors fall under the threshold: one of FP32's detections is lost."""
    scores = yolov8.ref
    person = scores[0, 4]
    scores[0, 4, person > 0.25] = 0.1
    report = yolov8.judged(scores, Tolerance(roles=(yolov8.role,), limits=JudgeLimits(probability_error=1.0)))
    assert not report.passed and "F1" in report.rejected_by


def test_one_character_changed_in_a_decoded_line_is_rejected(recognizer):
    probabilities = recognizer.ref
    steps = probabilities[0].argmax(-1)
    step = int(np.flatnonzero(steps != 0)[0])
    wrong = (steps[step] + 7) % probabilities.shape[-1] or 1
    probabilities[0, step] = 0.0
    probabilities[0, step, wrong] = 1.0
    report = recognizer.judged(probabilities)
    assert not report.passed and "character error rate" in report.rejected_by
    assert "1 of 6 lines differ" in report.judges[recognizer.name].detail


def test_a_recognizer_whose_probabilities_move_but_whose_text_does_not_passes(recognizer):
    """What the scale gate rejected (issue 24): the text is what the deployment reads."""
    probabilities = recognizer.ref
    best = probabilities.argmax(-1)
    flattened = probabilities.reshape(-1, probabilities.shape[-1])
    flattened[np.arange(flattened.shape[0]), best.ravel()] *= 0.9  # the winner loses 10%, still the winner
    assert not compare_outputs({recognizer.name: probabilities}, recognizer.reference, Tolerance(mode="scale")).passed
    assert recognizer.judged(probabilities).passed


def test_a_swapped_top1_label_is_rejected(classifier):
    probabilities = classifier.ref
    probabilities[0] = probabilities[0, ::-1]
    report = classifier.judged(probabilities)
    assert not report.passed and "top-1 differs" in report.rejected_by


def test_class_probabilities_moved_by_0_3_are_rejected_even_with_labels_kept(classifier):
    probabilities = classifier.ref
    winner = probabilities.argmax(1)
    rows = np.arange(len(winner))
    keep_label = probabilities[rows, winner] > 0.95
    probabilities[rows[keep_label], winner[keep_label]] -= 0.3
    report = classifier.judged(probabilities)
    assert not report.passed and "probability moved by 0.3" in report.rejected_by


IMAGENET = {
    "mean": np.array([0.485, 0.456, 0.406], np.float32)[:, None, None],
    "std": np.array([0.229, 0.224, 0.225], np.float32)[:, None, None],
}


PADDLE = {"mean": 0.5, "std": 0.5}


@pytest.mark.parametrize(
    ("model", "normalized"),
    [
        ("yolov8", {}),
        ("yolox", {"std": 1 / 255}),
        ("recognizer_64", PADDLE),  # 6 lines' 76 characters cannot resolve 1%: one edit is 1.3%
        ("classifier", PADDLE),
        ("text_map", IMAGENET),
        ("embedder", PADDLE),
    ],
)
def test_fp32_under_one_pixel_level_of_input_noise_passes(model, normalized, request):
    """A judge tighter than the model's own response to noise under one 8-bit pixel level
    rejects FP32 itself. On the PP-OCRv4 text detector every text region stays, while the
    thresholded mask's IoU falls to 0.84 (the old default needed 0.99)."""
    trained = request.getfixturevalue(model)
    report = trained.judged(trained.jittered(**normalized))
    assert report.passed, report.rejected_by
    if model == "text_map":
        old = Tolerance(roles=(trained.role,), limits=JudgeLimits(mask_iou=0.99))
        assert "mask IoU" in trained.judged(trained.jittered(**normalized), old).rejected_by


def largest_region(value: np.ndarray) -> np.ndarray:
    """The mask of the largest 8-connected region over 0.3 of a [1, 1, H, W] probability map."""
    from scipy import ndimage

    labels, _ = ndimage.label(value[0, 0] > 0.3, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def lose_largest_region(value: np.ndarray) -> np.ndarray:
    lost = value.copy()
    lost[0, 0][largest_region(value)] = 0.0
    return lost


def shift_largest_region(value: np.ndarray, share: float) -> np.ndarray:
    """The map with its largest region moved right by `share` of the region's larger side."""
    region = largest_region(value)
    shifted = value.copy()
    plane = shifted[0, 0]
    shift = int(share * max(np.flatnonzero(region.any(0)).size, np.flatnonzero(region.any(1)).size))
    moved = np.roll(np.where(region, plane, 0.0), shift, axis=1)
    plane[region] = 0.0
    plane[:] = np.maximum(plane, moved)
    return shifted


def flip_pixels(value: np.ndarray, share: float) -> np.ndarray:
    flipped = value.copy()
    flat = flipped.reshape(-1)
    chosen = np.random.default_rng(0).choice(flat.size, int(flat.size * share), replace=False)
    flat[chosen] = 1 - flat[chosen]
    return flipped


def test_a_lost_text_region_is_rejected(text_map):
    report = text_map.judged(lose_largest_region(text_map.ref))
    assert not report.passed and "regions F1" in report.rejected_by
    assert report.judges[text_map.name].decisions >= 5


def test_a_text_region_shifted_by_20_percent_of_its_size_is_rejected(text_map):
    report = text_map.judged(shift_largest_region(text_map.ref, 0.2))
    assert not report.passed and "box moved by" in report.rejected_by


def test_five_percent_of_a_maps_pixels_flipped_is_rejected(text_map):
    probability = flip_pixels(text_map.ref, 0.05)
    report = text_map.judged(probability)
    assert not report.passed and "mean pixel change" in report.rejected_by
    matte = Tolerance(roles=(text_map.role,), limits=JudgeLimits(mask_iou=0.9, pixel_error=1.0))
    assert "mask IoU" in text_map.judged(probability, matte).rejected_by  # the mask judged, when asked


def test_an_embedding_turned_away_from_fp32_is_rejected(embedder):
    vectors = embedder.ref
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(vectors[0].shape)
    vectors[0] += noise / np.linalg.norm(noise) * np.linalg.norm(vectors[0]) * 0.2  # cosine ~0.98
    report = embedder.judged(vectors)
    assert not report.passed and "cosine" in report.rejected_by


def test_nan_in_a_candidate_is_rejected_by_every_judge(yolov8, recognizer, classifier, text_map, embedder):
    for trained in (yolov8, recognizer, classifier, text_map, embedder):
        broken = trained.fp16[trained.name].copy()
        broken.reshape(-1)[0] = np.nan
        report = trained.judged(broken)
        assert not report.passed and "NaN" in report.rejected_by, trained.role.role


def test_a_verdict_on_too_few_decisions_says_so(classifier):
    verdict = classifier.judged(classifier.fp16[classifier.name]).judges[classifier.name]
    assert verdict.decisions == 6 and "rests on 6 decisions" in verdict.resolution


def test_a_user_role_overrides_the_inferred_one(yolov8):
    roles = infer_roles(yolov8.reference, 1, overrides={yolov8.name: "generic"})
    assert roles[yolov8.name].role == "generic" and roles[yolov8.name].evidence == "--output-role"
    report = compare_outputs(
        {yolov8.name: shift_scores(yolov8, 0.3)}, yolov8.reference, Tolerance(roles=tuple(roles.values()))
    )
    assert report.passed  # judged by the scale gate, as asked
    transposed = {yolov8.name: np.swapaxes(yolov8.ref, 1, 2)}
    forced = infer_roles(transposed, 1, overrides={yolov8.name: "detections:no-objectness"})[yolov8.name]
    assert forced.axis == 2 and not forced.objectness


def test_role_and_limit_flags_are_checked():
    assert parse_role("out=detections:objectness") == ("out", "detections:objectness")
    for bad in ("out", "out=boxes", "out=classes:objectness", "=classes"):
        with pytest.raises(ValueError, match="--output-role"):
            parse_role(bad)
    assert parse_limits(["cer=0.02", "f1=0.98"]) == JudgeLimits(cer=0.02, f1=0.98)
    for bad in (["cer"], ["speed=1"], ["cer=x"], ["cer=2"], ["cer=0.1", "cer=0.2"]):
        with pytest.raises(ValueError, match="--judge"):
            parse_limits(bad)


def test_a_repair_that_keeps_over_90_percent_float_is_float_not_int8():
    from autotune.sensitivity import _mostly_float

    details: dict[str, object] = {
        "kept_float": [f"n{i}" for i in 19 * [0]],
        "quantized_layers": 20,
        "repair_passed": True,
    }
    _mostly_float(details)
    assert details["mostly_float"] and details["repair_passed"] is False and details["float_share"] == 0.95
    half: dict[str, object] = {"kept_float": ["a"] * 10, "quantized_layers": 20, "repair_passed": True}
    _mostly_float(half)
    assert "mostly_float" not in half and half["repair_passed"] is True


def test_a_study_records_each_outputs_role_from_the_graph_and_the_reference(tiny_model, results_dir):
    from autotune.cli import build_parser, prepare_start
    from autotune.report import tolerance_line
    from autotune.study import compute_references, judged_tolerance
    from autotune.study._records import study_attrs

    argv = ["start", str(tiny_model), "--target", "onnxruntime", "--results-dir", str(results_dir)]
    spec, _ = prepare_start(build_parser().parse_args(argv))
    spec.tolerance = judged_tolerance(spec, compute_references(spec))
    attrs = study_attrs(spec)
    assert [(r["output"], r["role"]) for r in attrs["output_roles"]] == [("y", "classes")]
    assert "y: classes" in tolerance_line(attrs) and "(auto)" in tolerance_line(attrs)
    overridden = prepare_start(build_parser().parse_args([*argv, "--output-role", "y=embedding"]))[0]
    assert judged_tolerance(overridden, compute_references(overridden)).roles[0].role == "embedding"
