"""Task gates for bench/precision.py: each judges a candidate by what its model is for, at 1%.

Passed to autotune as `Tolerance(metric="precision_metrics:<name>")` (bench/ is on the path
when bench/precision.py runs); each returns autotune's metric verdict
`{"error", "passed", "detail"}` (see `autotune.metrics`).

- `ctc_text`: recognizer (PP-OCR rec, [samples, steps, classes] probabilities): the greedy CTC
  decoding (argmax per step, repeats merged, blank 0 dropped) against the reference's; error =
  character error rate (edit distance over the reference's characters, all samples); passes at
  <= 1%. (The detail also counts the texts that differ at all.) `ctc_text_steps_first`: the same
  for [steps, samples, classes] (ddddocr's recognizer). `ctc_text_nocase`: that, with upper and
  lower case counted as one character (ddddocr's alphabet); chosen after `ctc_text_steps_first`
  failed, because ddddocr's FP32 model gets the case wrong on a tenth of the rendered captcha
  characters (bench/PRECISION.md, fourth pass): agreement on a coin flip is not accuracy.
- `detections`: YOLOX-style decoded output ([images, anchors, cx cy w h obj cls]): detections
  (obj x cls >= 0.3, NMS at IoU 0.45) matched one-to-one to the reference's at IoU >= 0.5
  (PASCAL VOC's criterion); error = 1 - F1 of that matching; passes at <= 1% (with ~100 boxes:
  at most one box lost or added). `detections_iou90`: the same at IoU >= 0.9.
  `detections_ap50`: AP at IoU 0.5 of the candidate's detections, reference detections as ground
  truth (the usual "mAP drop" of a quantized detector, without labels); passes at AP >= 0.99.
- `text_mask`: text detector (PP-OCR det, [images, 1, H, W] probability map): the text mask at
  PaddleOCR's threshold 0.3; error = 1 - IoU of candidate and reference masks; passes at <= 1%.
  `text_boxes`: the text regions of that mask (connected, mean probability >= 0.6: DB's
  post-processing without its polygon unclip) matched at IoU >= 0.5; error = 1 - F1.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

MAX_ERROR = 0.01
SCORE_THRESHOLD = 0.3
AP_SCORE_THRESHOLD = 0.01
NMS_IOU = 0.45
VOC_IOU = 0.5
STRICT_IOU = 0.9
MASK_THRESHOLD = 0.3
BOX_THRESHOLD = 0.6
MIN_TEXT_AREA = 9  # pixels: PaddleOCR drops boxes under 3x3


def _first(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())), dtype=np.float64)


def _verdict(error: float, detail: str) -> dict[str, object]:
    return {"error": float(error), "passed": bool(error <= MAX_ERROR), "detail": detail}


def ctc_decode(probabilities: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC: argmax per step, repeats merged, blank (class 0) dropped; one tuple per sample."""
    best = probabilities.argmax(axis=-1)
    texts = []
    for steps in best.reshape(-1, best.shape[-1]):
        merged = [int(c) for i, c in enumerate(steps) if c != 0 and (i == 0 or c != steps[i - 1])]
        texts.append(tuple(merged))
    return texts


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _cer_verdict(cand: list[tuple[int, ...]], ref: list[tuple[int, ...]], what: str) -> dict[str, object]:
    edits = sum(edit_distance(c, r) for c, r in zip(cand, ref, strict=True))
    characters = max(sum(len(r) for r in ref), 1)
    differ = sum(c != r for c, r in zip(cand, ref, strict=True))
    return _verdict(edits / characters, f"{what} {edits}/{characters}; {differ} of {len(ref)} decoded texts differ")


def ctc_text(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    return _cer_verdict(ctc_decode(_first(candidate)), ctc_decode(_first(reference)), "character error rate")


def ctc_text_steps_first(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """`ctc_text` for a recognizer whose output is [steps, samples, classes] (ddddocr's)."""
    return ctc_text(
        {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in candidate.items()},
        {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in reference.items()},
    )


def case_folding(charset: list[str]) -> np.ndarray:
    """class index -> the index of its lower-case character (itself where there is none)."""
    index = {char: i for i, char in enumerate(charset)}
    return np.array([index.get(char.lower(), i) for i, char in enumerate(charset)], dtype=np.int64)


@functools.cache
def _ddddocr_folding() -> np.ndarray:
    from models import ddddocr_charset  # bench/models.py: the charset's JSON, read once per process

    return case_folding(ddddocr_charset())


def ctc_text_nocase(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """`ctc_text_steps_first` with ddddocr's upper- and lower-case characters counted as one."""
    fold = _ddddocr_folding()

    def folded(outputs: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
        return [tuple(int(fold[c]) for c in text) for text in ctc_decode(np.swapaxes(_first(outputs), 0, 1))]

    return _cer_verdict(folded(candidate), folded(reference), "case-folded character error rate")


def truth_cer(outputs: dict[str, np.ndarray], texts: list[str], charset: list[str]) -> dict[str, float]:
    """ddddocr_rec's character error rate against the text each line was rendered from: exact,
    and with case folded."""
    decoded = ctc_decode(np.swapaxes(_first(outputs), 0, 1))
    fold = case_folding(charset)
    exact = sum(edit_distance(tuple(charset[c] for c in d), tuple(t)) for d, t in zip(decoded, texts, strict=True))
    nocase = sum(
        edit_distance(tuple(charset[fold[c]] for c in d), tuple(t.lower())) for d, t in zip(decoded, texts, strict=True)
    )
    characters = sum(len(t) for t in texts)
    return {"cer": exact / characters, "cer_nocase": nocase / characters, "characters": characters}


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with many."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def yolox_detections(rows: np.ndarray) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) kept by score threshold and NMS from one image's [anchors, 6]."""
    return _scored_detections(rows, SCORE_THRESHOLD)[0]


def detections(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """Boxes matched at IoU >= 0.5 (PASCAL VOC's criterion, COCO's AP50)."""
    return match_detections(candidate, reference, VOC_IOU)


def detections_iou90(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """Boxes matched at IoU >= 0.9 (stricter than any detection benchmark)."""
    return match_detections(candidate, reference, STRICT_IOU)


def match_detections(
    candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray], match_iou: float
) -> dict[str, object]:
    cand, ref = _first(candidate), _first(reference)
    pairs = ((yolox_detections(c), yolox_detections(r)) for c, r in zip(cand, ref, strict=True))
    matched, found, expected = _match_boxes(pairs, match_iou)
    f1 = 2 * matched / (found + expected) if found + expected else 1.0
    return _verdict(1 - f1, f"{matched} of {expected} reference boxes matched at IoU >= {match_iou} ({found} found)")


def _match_boxes(pairs: Any, match_iou: float) -> tuple[int, int, int]:
    """(matched, found, expected) over (candidate boxes, reference boxes) per image: each
    reference box takes the free candidate it overlaps most, if at IoU >= `match_iou`."""
    matched = found = expected = 0
    for cand_boxes, ref_boxes in pairs:
        found, expected = found + len(cand_boxes), expected + len(ref_boxes)
        free = np.ones(len(cand_boxes), bool)
        for box in ref_boxes:
            if not free.any():
                break
            overlaps = np.where(free, _iou(box, cand_boxes), 0.0)
            best = int(np.argmax(overlaps))
            if overlaps[best] >= match_iou:
                free[best] = False
                matched += 1
    return matched, found, expected


def _scored_detections(rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(boxes, scores) after NMS of one image's [anchors, 6] at score >= `threshold`."""
    scores = rows[:, 4] * rows[:, 5:].max(axis=1)
    rows, scores = rows[scores >= threshold], scores[scores >= threshold]
    boxes = np.stack(
        [
            rows[:, 0] - rows[:, 2] / 2,
            rows[:, 1] - rows[:, 3] / 2,
            rows[:, 0] + rows[:, 2] / 2,
            rows[:, 1] + rows[:, 3] / 2,
        ],
        axis=1,
    )
    order, kept = np.argsort(-scores), []
    while order.size:
        first = order[0]
        kept.append(first)
        order = order[1:][_iou(boxes[first], boxes[order[1:]]) < NMS_IOU]
    return boxes[kept], scores[kept]


def detections_ap50(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """AP at IoU 0.5 of the candidate's detections (score >= 0.01, as detection benchmarks
    evaluate) against the reference's detections (score >= 0.3) taken as ground truth; error =
    1 - AP. Near-threshold scores that cross 0.3 move the F1 of `detections`, not this."""
    cand, ref = _first(candidate), _first(reference)
    hits, scores, truths = [], [], 0
    for cand_rows, ref_rows in zip(cand, ref, strict=True):
        truth, _ = _scored_detections(ref_rows, SCORE_THRESHOLD)
        boxes, box_scores = _scored_detections(cand_rows, AP_SCORE_THRESHOLD)
        truths += len(truth)
        free = np.ones(len(truth), bool)
        for box, score in zip(boxes, box_scores, strict=True):  # highest score first (NMS order)
            overlaps = np.where(free, _iou(box, truth), 0.0) if len(truth) else np.zeros(0)
            best = int(np.argmax(overlaps)) if overlaps.size else -1
            hit = best >= 0 and overlaps[best] >= VOC_IOU
            if hit:
                free[best] = False
            hits.append(hit)
            scores.append(score)
    if not truths:
        return _verdict(0.0 if not hits else 1.0, "no reference detections")
    order = np.argsort(-np.asarray(scores), kind="stable")
    true_positives = np.cumsum(np.asarray(hits, float)[order])
    precision = true_positives / np.arange(1, len(order) + 1)
    recall = true_positives / truths
    # all-point interpolated AP (VOC 2010+, COCO): precision made monotone, summed over recall steps
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    ap = float(np.sum(envelope * steps))
    return _verdict(1 - ap, f"AP50 {ap:.4f} against the reference's {truths} detections")


def text_mask(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    cand, ref = _first(candidate) > MASK_THRESHOLD, _first(reference) > MASK_THRESHOLD
    union = np.logical_or(cand, ref).sum()
    iou = float(np.logical_and(cand, ref).sum() / union) if union else 1.0
    return _verdict(1 - iou, f"text mask IoU {iou:.4f} ({int(ref.sum())} reference text pixels)")


def _text_boxes(probability: np.ndarray) -> np.ndarray:
    """DB post-processing, simplified: connected regions of the text mask (probability > 0.3)
    whose mean probability is >= 0.6 (PaddleOCR's box_thresh), as (x1, y1, x2, y2)."""
    import cv2

    mask = (probability > MASK_THRESHOLD).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, width, height, area = stats[label]
        if area >= MIN_TEXT_AREA and probability[labels == label].mean() >= BOX_THRESHOLD:
            boxes.append((x, y, x + width, y + height))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def text_boxes(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """Text regions (see `_text_boxes`) matched one-to-one at IoU >= 0.5; error = 1 - F1."""
    cand, ref = _first(candidate), _first(reference)
    maps = zip(cand.reshape(-1, *cand.shape[-2:]), ref.reshape(-1, *ref.shape[-2:]), strict=True)
    matched, found, expected = _match_boxes(((_text_boxes(c), _text_boxes(r)) for c, r in maps), VOC_IOU)
    f1 = 2 * matched / (found + expected) if found + expected else 1.0
    return _verdict(1 - f1, f"{matched} of {expected} reference text boxes matched at IoU >= {VOC_IOU} ({found} found)")


# Which gate reads each bench model's output.
TASK_GATES = {
    "ppocr_cls": "top1",
    "ppocr_v4_rec": "precision_metrics:ctc_text",
    "ddddocr_rec": "precision_metrics:ctc_text_steps_first",
    "yolox_det": "precision_metrics:detections",
    "ppocr_v4_det": "precision_metrics:text_mask",
}
# Second task gates, chosen after the first ones above failed every INT8 candidate of these
# models (bench/PRECISION.md says so beside their results): the usual quantization criterion of a
# detector (AP drop), DB's boxes instead of its pixels, and the recognizer's characters without
# the case its FP32 model cannot tell on these lines.
POSTHOC_GATES = {
    "yolox_det": "precision_metrics:detections_ap50",
    "ppocr_v4_det": "precision_metrics:text_boxes",
    "ddddocr_rec": "precision_metrics:ctc_text_nocase",
}
