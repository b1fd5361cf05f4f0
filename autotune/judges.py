"""Output roles and the judge of each role: a candidate is judged the way its deployment is.

An expert judges a detector by its detections, a recognizer by its decoded text, a classifier
by its labels, a probability map by its thresholded mask and an embedding by its cosine, not
by the largest error as a share of an output's range (issue 24: that yardstick let a YOLOv8
detector's class scores move by 3.0 and rejected a recognizer's FP16 whose text was identical).

Each output gets a role, inferred from the op that produces it (`output_producers`) and from
its FP32 reference values on the held-out samples (`infer_roles`), or set by the user
(`--output-role NAME=ROLE`). Each role has a judge (`judge_output`) with limits an expert would
accept (`JudgeLimits`, `--judge KEY=VALUE`); "generic" outputs keep the per-output scale gate of
`autotune.verify`. Every judge is tested against a known-bad change on a trained model
(tests/test_judges.py).

To add a judge: write its function here (`(role, candidate, reference, limits) -> JudgeVerdict`)
and add one `register_judge` line at the end of this module; its role is then accepted by
`--output-role`, judged in "auto" mode, named in reports, and its verdict's resolution checked
against its `decision_limit`. Inferring the role from a graph (`_infer_role`) is optional: a role
no inference picks is still given with `--output-role NAME=ROLE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from scipy import ndimage

# The roles, in the order they were registered (`register_judge`, at the end of this module).
ROLES: tuple[str, ...] = ()
# A role of --output-role may carry options after a colon: detections:objectness / detections:no-objectness.
DETECTION_OPTIONS = ("objectness", "no-objectness")

SUM_TO_ONE = 1e-3  # rows of a softmax sum to 1 within float rounding
UNIT_NORM = 1e-3  # rows of an L2-normalized embedding have norm 1 within float rounding
MIN_ANCHORS = 64  # a packed detection output has many candidate rows
MAX_DETECTION_FIELDS = 4 + 1024  # 4 box fields, [objectness], up to 1024 classes
MIN_MAP_SIDE = 8  # a dense map is an image, not a vector
NMS_IOU = 0.45
MATCH_IOU = 0.5  # PASCAL VOC's criterion, COCO's AP50
MASK_THRESHOLDS = (0.3, 0.5)  # DB text detectors binarize at 0.3; 0.5 is the usual probability cut
# A probability map's regions as a DB text detector's post-processing finds them (PaddleOCR's
# defaults): connected pixels above 0.3, kept when both sides are at least 3 px and their mean
# probability is at least 0.6 (`box_thresh`).
REGION_THRESHOLD = 0.3
MIN_REGION_SIDE = 3
REGION_SCORE = 0.6

POOLING_OPS = {"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "Flatten", "ReduceMean", "ReduceMax"}
NORMALIZING_OPS = {"LpNormalization"}
SOFTMAX_OPS = {"Softmax", "LogSoftmax"}


@dataclass(frozen=True)
class JudgeLimits:
    """The limits of every role's judge; each default is what an expert would accept.

    Args:
        label_change (float): classes, labels, segmentation maps: largest share of decisions
            (top-1 labels, pixels' labels) that may differ from FP32's. Default: 0.01.
        probability_error (float): classes: largest change of a class probability; detections:
            of a matched detection's score. Default: 0.05.
        cer (float): sequences: largest character error rate of the greedy decode against
            FP32's decode. Default: 0.01.
        f1 (float): detections, probability maps' regions: lowest F1 of the candidate's
            detections (regions) matched to FP32's (same class, IoU >= 0.5). Default: 0.99.
        box_error (float): detections, probability maps' regions: largest shift of a matched box's
            edge, as a share of the box's larger side. Default: 0.1.
        score_threshold (float): detections: the score a detection needs (YOLO's default
            confidence). Default: 0.25.
        mask_iou (float): probability maps: lowest IoU of the thresholded maps, for a map whose
            mask is itself the output (a matte). Default: 0, reported but not checked: a region
            map's edges move with noise its deployment never sees (the trained PP-OCRv4 text
            detector's own FP32, its inputs moved by one 8-bit level, gives a mask IoU of
            0.84-0.98 with every text region kept, tests/test_judges.py), so its regions judge it.
        pixel_error (float): probability maps: largest mean change of a pixel's probability.
            Default: 0.02.
        cosine (float): embeddings: lowest cosine of a sample's vector to FP32's. Default: 0.99.
        blank (int): sequences: the CTC blank class. Default: 0 (PaddleOCR, ddddocr).
    """

    label_change: float = 0.01
    probability_error: float = 0.05
    cer: float = 0.01
    f1: float = 0.99
    box_error: float = 0.1
    score_threshold: float = 0.25
    mask_iou: float = 0.0
    pixel_error: float = 0.02
    cosine: float = 0.99
    blank: int = 0

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def tightened(self, share: float) -> JudgeLimits:
        """These limits with `share` of each one's room: a largest change times `share`, a lowest
        score's distance from 1 times `share`; the thresholds that define a decision unchanged."""
        return replace(
            self,
            **{key: getattr(self, key) * share for key in ("label_change", "probability_error", "cer", "box_error")},
            **{key: 1 - (1 - getattr(self, key)) * share for key in ("f1", "cosine")},
            mask_iou=1 - (1 - self.mask_iou) * share if self.mask_iou > 0 else 0.0,
            pixel_error=self.pixel_error * share,
        )


@dataclass(frozen=True)
class OutputRole:
    """What one output is for, how it is laid out, and why autotune thinks so.

    Args:
        output (str): the output's name.
        role (str): one of `ROLES`.
        evidence (str): the graph op and reference values the role was inferred from, or
            "--output-role".
        batch_axis (int): the samples' axis. Default: 0.
        axis (int): classes: the class axis; sequence: the vocabulary axis; detections: the
            field axis; dense_map: the channel axis. Default: -1.
        objectness (bool): detections: field 4 is an objectness multiplied into the class
            scores (YOLOX, YOLOv5); otherwise fields 4.. are class scores (YOLOv8). Default: False.
        probabilities (bool): classes/dense_map: the values are probabilities already (softmax
            or sigmoid), not logits. Default: True.
    """

    output: str
    role: str
    evidence: str
    batch_axis: int = 0
    axis: int = -1
    objectness: bool = False
    probabilities: bool = True

    @property
    def judge(self) -> str:
        return JUDGE_NAMES[self.role]

    def describe(self) -> str:
        return f"output {self.output!r}: {self.role} ({self.evidence}); judged by {self.judge}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "judge": self.judge}


# role -> what its judge looks at (said in reports); filled by `register_judge`.
JUDGE_NAMES: dict[str, str] = {}


@dataclass(frozen=True)
class JudgeVerdict:
    """What a role's judge said of one output: its main error (0 = FP32's decisions), whether
    it passed, how many decisions the verdict rests on, and why."""

    output: str
    role: str
    error: float
    passed: bool
    decisions: int
    detail: str
    rejected_by: str = ""
    resolution: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Roles


def output_producers(model_path: str | Path) -> dict[str, str]:
    """Each graph output's producing op, with a Concat's inputs' ops ("Concat(Mul, Sigmoid)"),
    looking through shape-only ops (Reshape, Transpose, Squeeze, Unsqueeze, Identity, Cast)."""
    model = onnx.load(str(model_path), load_external_data=False)
    producer = {out: node for node in model.graph.node for out in node.output}
    passthrough = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "Flatten"}

    def op_of(name: str, depth: int = 0) -> str:
        node = producer.get(name)
        if node is None:
            return "input"
        if node.op_type in passthrough and node.input and depth < 8:
            below = op_of(node.input[0], depth + 1)
            return below if node.op_type != "Flatten" or below not in ("input",) else "Flatten"
        return node.op_type

    result = {}
    for output in model.graph.output:
        node = producer.get(output.name)
        op = op_of(output.name)
        if node is not None and op == "Concat":
            concat = node
            while concat.op_type != "Concat":
                concat = producer[concat.input[0]]
            op = f"Concat({', '.join(op_of(i) for i in concat.input)})"
        result[output.name] = op
    return result


def parse_role(text: str, flag: str = "--output-role") -> tuple[str, str]:
    """`NAME=ROLE[:OPTION]` -> (name, role spec); ValueError naming `flag` otherwise."""
    name, sep, role = text.partition("=")
    base, _, option = role.partition(":")
    if not sep or not name or base not in ROLES:
        raise ValueError(f"{flag} {text!r}: expected NAME=ROLE with ROLE one of {', '.join(ROLES)}")
    if option and (base != "detections" or option not in DETECTION_OPTIONS):
        raise ValueError(f"{flag} {text!r}: only detections takes an option ({' or '.join(DETECTION_OPTIONS)})")
    return name, role


def role_misfit(role: str, value: np.ndarray) -> str:
    """Why `value` (one output at batch 1, [b, ...]) cannot be judged as `role` ("NAME=ROLE"'s
    ROLE, option included), or "" when it can: the layout each judge reads (`JUDGES`), checked
    before a study starts rather than met as a crash or a meaningless verdict in every trial."""

    base = role.partition(":")[0]
    shape = "x".join(str(d) for d in value.shape) or "a scalar"
    floating = np.issubdtype(value.dtype, np.floating)
    if base == "generic":
        return ""
    if base == "labels":
        return "" if not floating else f"labels are integers; it holds {value.dtype} values ({shape})"
    if not floating:
        return f"it holds {value.dtype} values ({shape}), not scores; judge it as labels"
    if base == "classes" and (value.ndim < 2 or int(np.prod(value.shape[1:])) < 2):
        return f"classes need [b, classes] with 2 or more classes; it is {shape}"
    if base == "sequence" and (value.ndim != 3 or value.shape[-1] < 2):
        return f"a sequence needs [b, T, symbols] or [T, b, symbols]; it is {shape}"
    if base == "detections":
        fields_needed = 6 if role.endswith(":objectness") else 5
        if value.ndim != 3 or min(value.shape[1:]) < fields_needed:
            return (
                f"detections need [b, fields, rows] or [b, rows, fields] with 4 box fields and "
                f"{fields_needed - 4} or more score fields; it is {shape}"
            )
    if base == "dense_map" and value.ndim not in (3, 4):
        return f"a dense map needs [b, H, W] or [b, C, H, W]; it is {shape}"
    if base == "embedding" and value.ndim < 2:
        return f"an embedding needs [b, features]; it is {shape}"
    return ""


def infer_roles(
    reference: Mapping[str, np.ndarray],
    samples: int | None = None,
    producers: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, OutputRole]:
    """The role of each output of `reference` (FP32 outputs on the held-out samples).

    Args:
        reference (Mapping[str, np.ndarray]): FP32 outputs, samples joined on their batch axis.
        samples (int | None): how many samples the reference holds (finds a [T, b, V] batch
            axis). Default: None (the first axis is the batch).
        producers (Mapping[str, str] | None): `output_producers` of the model. Default: None.
        overrides (Mapping[str, str] | None): output name -> role (`--output-role`). Default: None.
    """
    producers = producers or {}
    overrides = overrides or {}
    roles = {}
    for name, value in reference.items():
        override = overrides.get(name)
        inferred = _infer_role(name, np.asarray(value), samples, producers.get(name, ""))
        if override is not None:
            base, _, option = override.partition(":")
            layout = inferred if inferred.role == base else _forced_layout(name, base, np.asarray(value), samples)
            objectness = layout.objectness if not option else option == "objectness"
            inferred = replace(layout, role=base, evidence="--output-role", objectness=objectness)
        roles[name] = inferred
    return roles


def _forced_layout(name: str, role: str, value: np.ndarray, samples: int | None) -> OutputRole:
    """A role given by the user whose layout the values do not show: the usual one."""
    batch_axis = _batch_axis(value, samples)
    if role == "detections" and value.ndim == 3:
        field_axis = 1 if value.shape[1] < value.shape[2] else 2
        return OutputRole(name, role, "", axis=field_axis, objectness=field_axis == 2 and value.shape[2] >= 6)
    if role == "dense_map":
        return OutputRole(name, role, "", batch_axis=batch_axis, axis=1, probabilities=True)
    if role == "classes":
        return OutputRole(name, role, "", batch_axis=batch_axis, axis=-1, probabilities=_rows_sum_to_one(value, -1))
    return OutputRole(name, role, "", batch_axis=batch_axis)


def _batch_axis(value: np.ndarray, samples: int | None) -> int:
    if samples is not None and value.ndim >= 2 and value.shape[0] != samples and value.shape[1] == samples:
        return 1
    return 0


def _rows_sum_to_one(value: np.ndarray, axis: int) -> bool:
    if value.size == 0 or value.min() < -1e-6 or value.max() > 1 + 1e-6:
        return False
    return bool(np.all(np.abs(value.sum(axis=axis, dtype=np.float64) - 1.0) <= SUM_TO_ONE))


def _in_unit_interval(value: np.ndarray) -> bool:
    return value.size > 0 and float(value.min()) >= -1e-6 and float(value.max()) <= 1 + 1e-6


def _infer_role(name: str, value: np.ndarray, samples: int | None, op: str) -> OutputRole:
    shape = "x".join(str(d) for d in value.shape)
    made_by = f"produced by {op}" if op else "producer unknown"
    if value.size == 0 or value.ndim == 0:
        return OutputRole(name, "generic", f"{shape}: empty or scalar")
    if not np.issubdtype(value.dtype, np.floating):
        return OutputRole(name, "labels", f"integer values ({value.dtype}), {made_by}")
    wide = value.astype(np.float64)
    batch_axis = _batch_axis(value, samples)
    if value.ndim == 3 and batch_axis == 0:
        detection = _detection_layout(wide)
        if detection is not None:
            field_axis, evidence = detection
            objectness = field_axis == 2 and value.shape[2] >= 6
            extra = (
                "; field 4 is objectness (fields last: the YOLOX/YOLOv5 layout)"
                if objectness
                else "; fields 4.. are class scores"
            )
            return OutputRole(
                name, "detections", f"[b, {shape}] {evidence}{extra}, {made_by}", axis=field_axis, objectness=objectness
            )
    if value.ndim == 3 and value.shape[-1] >= 3 and value.shape[1 - batch_axis] >= 2:
        softmax = op in SOFTMAX_OPS or _rows_sum_to_one(wide, -1)
        # Time-major scores ([T, b, V], the samples on axis 1) are the CTC layout (PyTorch's
        # CTCLoss takes them so): a recognizer that ends in its classifier's logits (ddddocr)
        # is read the same way, by its greedy decode. Batch-first logits could be a language
        # model's or a token classifier's: those stay generic unless softmax says otherwise.
        if softmax or batch_axis == 1:
            order = "[T, b, V]" if batch_axis == 1 else "[b, T, V]"
            why = f"{op}" if op in SOFTMAX_OPS else "rows summing to 1" if softmax else f"time-major logits ({made_by})"
            return OutputRole(
                name, "sequence", f"{order} {shape}, {why} over {value.shape[-1]} symbols", batch_axis=batch_axis
            )
    spatial = value.shape[-2:] if value.ndim >= 3 else ()
    if value.ndim in (3, 4) and batch_axis == 0 and min(spatial) >= MIN_MAP_SIDE:
        channels = value.shape[1] if value.ndim == 4 else 1
        if channels > 1 and value.ndim == 4 and (op in SOFTMAX_OPS or _rows_sum_to_one(wide, 1)):
            return OutputRole(
                name, "dense_map", f"{shape}: per-pixel scores over {channels} classes, {made_by}", axis=1
            )
        if op == "Sigmoid" or _in_unit_interval(wide):
            return OutputRole(
                name,
                "dense_map",
                f"{shape}: probability map{'s' if channels > 1 else ''} in [0, 1], {made_by}",
                axis=1 if value.ndim == 4 else -1,
            )
    squeezed = value.reshape(value.shape[0], -1) if value.ndim >= 2 else None
    if (
        squeezed is not None
        and batch_axis == 0
        and squeezed.shape[1] >= 2
        and (value.ndim == 2 or all(d == 1 for d in value.shape[2:]))
    ):
        norms = np.linalg.norm(squeezed.astype(np.float64), axis=1)
        if op in NORMALIZING_OPS or (op == "Div" and np.all(np.abs(norms - 1) <= UNIT_NORM)):
            return OutputRole(name, "embedding", f"{shape}: L2-normalized rows, {made_by}")
        if np.all(np.abs(norms - 1) <= UNIT_NORM) and not _rows_sum_to_one(wide.reshape(squeezed.shape), 1):
            return OutputRole(name, "embedding", f"{shape}: rows of unit L2 norm, {made_by}")
        if op in POOLING_OPS:
            return OutputRole(name, "embedding", f"{shape}: pooled features, {made_by}")
        probabilities = op in ("Softmax", "Sigmoid") or _rows_sum_to_one(wide.reshape(squeezed.shape), 1)
        kind = "class probabilities" if probabilities else "class logits"
        return OutputRole(
            name,
            "classes",
            f"{shape}: {kind} over {squeezed.shape[1]} classes, {made_by}",
            axis=1,
            probabilities=probabilities or op == "Sigmoid",
        )
    return OutputRole(name, "generic", f"{shape}, {made_by}: no task layout recognized")


def _detection_layout(reference: np.ndarray) -> tuple[int, str] | None:
    """(field axis, evidence) when a [b, A, B] output holds packed detections: on one axis a few
    fields, the first 4 box coordinates in pixels (non-negative sizes, larger than 2) and the rest
    scores in [0, 1]; on the other, many candidate rows. Fields last is tried first."""
    for field_axis in (2, 1):
        count, anchors = reference.shape[field_axis], reference.shape[3 - field_axis]
        if not 5 <= count <= MAX_DETECTION_FIELDS or anchors < MIN_ANCHORS or anchors <= count:
            continue
        rows = np.moveaxis(reference, field_axis, -1).reshape(-1, count)
        boxes, scores = rows[:, :4], rows[:, 4:]
        if not _in_unit_interval(scores) or boxes[:, 2:].min() < 0 or boxes.max() <= 2.0:
            continue
        where = "axis 1" if field_axis == 1 else "the last axis"
        return field_axis, (
            f"{count} fields on {where} ({anchors} rows): 4 box fields in pixels (up to {boxes.max():.0f}), "
            f"{count - 4} score fields in [0, 1]"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Judges


def judge_output(role: OutputRole, candidate: np.ndarray, reference: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    """The verdict of `role`'s judge on one output (not for "generic": that is the scale gate)."""
    cand = np.asarray(candidate)
    ref = np.asarray(reference)
    if np.issubdtype(cand.dtype, np.floating) and not np.all(np.isfinite(cand)):
        bad = int(np.size(cand) - np.isfinite(cand).sum())
        return JudgeVerdict(
            role.output,
            role.role,
            float("inf"),
            False,
            0,
            f"{bad} NaN or infinite values",
            rejected_by=f"output {role.output!r}: the candidate has {bad} NaN or infinite values",
        )
    verdict = JUDGES[role.role](role, cand, ref, limits)
    return replace(verdict, resolution=_resolution(verdict, role, limits))


def _resolution(verdict: JudgeVerdict, role: OutputRole, limits: JudgeLimits) -> str:
    """Said when the verdict rests on too few decisions to resolve its limit."""
    decision_limit = DECISION_LIMITS.get(role.role)
    limit = decision_limit(limits) if decision_limit is not None else None
    if limit is None or verdict.decisions == 0 or limit <= 0:
        return "" if verdict.decisions else "no decisions to judge (the FP32 reference makes none on these inputs)"
    if 1 / verdict.decisions > limit:
        return (
            f"rests on {verdict.decisions} decisions: one changed decision ({1 / verdict.decisions:.2%}) is already "
            f"over the {limit:.2%} limit, so any change fails; {int(np.ceil(1 / limit))} or more resolve it"
        )
    return ""


def _samples_first(role: OutputRole, value: np.ndarray) -> np.ndarray:
    return np.moveaxis(value.astype(np.float64), role.batch_axis, 0)


def _softmax(value: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(value - value.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _classes(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    c = cand.astype(np.float64).reshape(cand.shape[0], -1)
    r = ref.astype(np.float64).reshape(ref.shape[0], -1)
    classes = r.shape[1]
    if not role.probabilities:
        c, r = _softmax(c, 1), _softmax(r, 1)
    top1 = c.argmax(1) == r.argmax(1)
    changed = 1.0 - float(top1.mean())
    k = min(5, classes)
    ref_top = np.argsort(-r, axis=1)[:, :k]
    cand_top = np.argsort(-c, axis=1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, cand_top, strict=True)]))
    probability_error = float(np.max(np.abs(c - r)))
    failed = []
    if changed > limits.label_change:
        failed.append(f"top-1 differs on {changed:.2%} of samples (limit {limits.label_change:.2%})")
    if probability_error > limits.probability_error:
        failed.append(f"a class probability moved by {probability_error:.3g} (limit {limits.probability_error:g})")
    detail = (
        f"top-1 agreement {1 - changed:.2%} of {len(top1)} samples, top-{k} overlap {overlap:.2%}, "
        f"max probability error {probability_error:.3g}"
    )
    return _verdict(role, changed, len(top1), detail, failed)


def _labels(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    same = cand == ref
    changed = 1.0 - float(same.mean()) if same.size else 0.0
    failed = (
        [f"{changed:.2%} of labels differ (limit {limits.label_change:.2%})"] if changed > limits.label_change else []
    )
    return _verdict(
        role, changed, int(same.size), f"{same.size - int(same.sum())} of {same.size} labels differ", failed
    )


def ctc_decode(probabilities: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC per sample of [samples, steps, symbols]: argmax per step, repeats merged,
    `blank` dropped."""
    best = probabilities.argmax(axis=-1)
    texts = []
    for steps in best:
        keep = np.ones(len(steps), bool)
        keep[1:] = steps[1:] != steps[:-1]
        texts.append(tuple(int(s) for s in steps[keep & (steps != blank)]))
    return texts


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _sequence(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    cand_text = ctc_decode(_samples_first(role, cand), limits.blank)
    ref_text = ctc_decode(_samples_first(role, ref), limits.blank)
    edits = sum(edit_distance(c, r) for c, r in zip(cand_text, ref_text, strict=True))
    characters = sum(len(r) for r in ref_text)
    lines = sum(c != r for c, r in zip(cand_text, ref_text, strict=True))
    cer = edits / characters if characters else float(edits > 0)
    failed = [f"character error rate {cer:.2%} (limit {limits.cer:.2%})"] if cer > limits.cer else []
    detail = f"character error rate {cer:.2%} ({edits} edits over {characters} characters); {lines} of {len(ref_text)} lines differ"
    return _verdict(role, cer, characters, detail, failed)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with many."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def decode_detections(
    rows: np.ndarray, objectness: bool, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes x1 y1 x2 y2, scores, classes) of one image's [rows, fields] (cx cy w h [obj] scores...)
    above `threshold`, after class-wise NMS at IoU 0.45, highest score first."""
    class_scores = rows[:, 5:] if objectness else rows[:, 4:]
    classes = class_scores.argmax(1)
    scores = class_scores.max(1) * (rows[:, 4] if objectness else 1.0)
    keep = scores >= threshold
    rows, scores, classes = rows[keep], scores[keep], classes[keep]
    half_w, half_h = rows[:, 2] / 2, rows[:, 3] / 2
    boxes = np.stack([rows[:, 0] - half_w, rows[:, 1] - half_h, rows[:, 0] + half_w, rows[:, 1] + half_h], axis=1)
    order, kept = np.argsort(-scores, kind="stable"), []
    while order.size:
        first, rest = order[0], order[1:]
        kept.append(first)
        overlapping = (_iou(boxes[first], boxes[rest]) >= NMS_IOU) & (classes[rest] == classes[first])
        order = rest[~overlapping]
    return boxes[kept], scores[kept], classes[kept]


class Match:
    """Boxes of a candidate matched to FP32's, image by image, as detection metrics match them:
    each FP32 box, highest score first, takes the free candidate box of its class that overlaps
    it most, if at IoU >= 0.5. Keeps the counts for F1, and the largest edge shift (as a share
    of the FP32 box's larger side) and score change of a matched pair."""

    def __init__(self) -> None:
        self.matched = self.found = self.expected = 0
        self.box_error = self.score_error = 0.0

    def add(
        self, candidate: tuple[np.ndarray, np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        """One image's (boxes x1 y1 x2 y2, scores, classes) of each side."""
        (c_boxes, c_scores, c_classes), (r_boxes, r_scores, r_classes) = candidate, reference
        self.found, self.expected = self.found + len(c_boxes), self.expected + len(r_boxes)
        free = np.ones(len(c_boxes), bool)
        for box, score, label in zip(r_boxes, r_scores, r_classes, strict=True):
            if not free.any():
                break
            overlaps = np.where(free & (c_classes == label), _iou(box, c_boxes), 0.0)
            best = int(np.argmax(overlaps))
            if overlaps[best] >= MATCH_IOU:
                free[best] = False
                self.matched += 1
                size = max(box[2] - box[0], box[3] - box[1], 1e-9)
                self.box_error = max(self.box_error, float(np.max(np.abs(c_boxes[best] - box)) / size))
                self.score_error = max(self.score_error, float(abs(c_scores[best] - score)))

    @property
    def f1(self) -> float:
        total = self.found + self.expected
        return 2 * self.matched / total if total else 1.0


def _detections(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    count = ref.shape[role.axis]
    cand_rows = np.moveaxis(cand.astype(np.float64), role.axis, -1)
    ref_rows = np.moveaxis(ref.astype(np.float64), role.axis, -1)
    match = Match()
    for c_image, r_image in zip(cand_rows, ref_rows, strict=True):
        match.add(
            decode_detections(c_image.reshape(-1, count), role.objectness, limits.score_threshold),
            decode_detections(r_image.reshape(-1, count), role.objectness, limits.score_threshold),
        )
    f1, matched, found, expected = match.f1, match.matched, match.found, match.expected
    box_error, score_error = match.box_error, match.score_error
    failed = []
    if f1 < limits.f1:
        failed.append(f"detections F1 {f1:.4f} against FP32's (need {limits.f1:g})")
    if box_error > limits.box_error:
        failed.append(f"a matched box moved by {box_error:.1%} of its size (limit {limits.box_error:.0%})")
    if score_error > limits.probability_error:
        failed.append(f"a matched detection's score moved by {score_error:.3g} (limit {limits.probability_error:g})")
    detail = (
        f"{matched} of {expected} FP32 detections matched at IoU >= {MATCH_IOU} ({found} found; F1 {f1:.4f}); "
        f"largest box shift {box_error:.1%} of its size; largest change of a matched detection's score "
        f"{score_error:.3g}"
    )
    return _verdict(role, 1 - f1, expected, detail, failed)


def _dense_map(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    c, r = cand.astype(np.float64), ref.astype(np.float64)
    channels = r.shape[1] if r.ndim == 4 else 1
    if channels > 1 and role.axis == 1 and _rows_sum_to_one(r, 1):
        same = c.argmax(1) == r.argmax(1)
        changed = 1.0 - float(same.mean())
        failed = (
            [f"{changed:.2%} of pixels change class (limit {limits.label_change:.2%})"]
            if changed > limits.label_change
            else []
        )
        return _verdict(role, changed, int(same.size), f"{changed:.3%} of {same.size} pixels change class", failed)
    match = Match()
    planes = c.reshape(-1, *c.shape[-2:]), r.reshape(-1, *r.shape[-2:])
    for c_plane, r_plane in zip(*planes, strict=True):
        match.add(map_regions(c_plane), map_regions(r_plane))
    worst_iou, at = 1.0, MASK_THRESHOLDS[0]
    for threshold in MASK_THRESHOLDS:
        c_mask, r_mask = c > threshold, r > threshold
        union = int(np.logical_or(c_mask, r_mask).sum())
        iou = float(np.logical_and(c_mask, r_mask).sum() / union) if union else 1.0
        if iou < worst_iou:
            worst_iou, at = iou, threshold
    pixel_error = float(np.mean(np.abs(c - r)))
    failed = []
    if match.f1 < limits.f1:
        failed.append(f"regions F1 {match.f1:.4f} against FP32's (need {limits.f1:g})")
    if match.box_error > limits.box_error:
        failed.append(
            f"a matched region's box moved by {match.box_error:.1%} of its size (limit {limits.box_error:.0%})"
        )
    if worst_iou < limits.mask_iou:
        failed.append(f"mask IoU {worst_iou:.4f} at threshold {at} (need {limits.mask_iou:g})")
    if pixel_error > limits.pixel_error:
        failed.append(f"mean pixel change {pixel_error:.3g} (limit {limits.pixel_error:g})")
    detail = (
        f"{match.matched} of {match.expected} FP32 regions matched at IoU >= {MATCH_IOU} ({match.found} found; "
        f"F1 {match.f1:.4f}); largest box shift {match.box_error:.1%} of its size; mask IoU {worst_iou:.4f} "
        f"(worst of thresholds {', '.join(map(str, MASK_THRESHOLDS))}); mean pixel change {pixel_error:.3g}"
    )
    return _verdict(role, 1 - match.f1, match.expected, detail, failed)


def map_regions(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes x1 y1 x2 y2, mean probabilities, classes: all 0) of one [H, W] probability map's
    regions as a DB text detector's post-processing finds them: 8-connected pixels above 0.3,
    both sides at least 3 px, mean probability at least 0.6; highest mean first."""
    labels, _ = ndimage.label(plane > REGION_THRESHOLD, structure=np.ones((3, 3), bool))
    boxes, scores = [], []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        rows, cols = where
        if min(rows.stop - rows.start, cols.stop - cols.start) < MIN_REGION_SIDE:
            continue
        score = float(plane[where][labels[where] == index].mean())
        if score >= REGION_SCORE:
            boxes.append((cols.start, rows.start, cols.stop, rows.stop))
            scores.append(score)
    order = np.argsort(-np.asarray(scores), kind="stable")
    box_array = np.asarray(boxes, np.float64).reshape(-1, 4)[order]
    return box_array, np.asarray(scores, np.float64)[order], np.zeros(len(boxes), np.int64)


def _embedding(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    c = _samples_first(role, cand).reshape(cand.shape[role.batch_axis], -1)
    r = _samples_first(role, ref).reshape(ref.shape[role.batch_axis], -1)
    norms = np.linalg.norm(c, axis=1) * np.linalg.norm(r, axis=1)
    cosine = np.where(norms > 0, np.sum(c * r, axis=1) / np.maximum(norms, 1e-300), 1.0)
    worst = float(cosine.min()) if cosine.size else 1.0
    failed = [f"a sample's cosine to FP32 is {worst:.5f} (need {limits.cosine:g})"] if worst < limits.cosine else []
    return _verdict(
        role, 1 - worst, len(cosine), f"lowest per-sample cosine {worst:.5f} over {len(cosine)} samples", failed
    )


def _verdict(role: OutputRole, error: float, decisions: int, detail: str, failed: list[str]) -> JudgeVerdict:
    rejected = "; ".join(failed)
    return JudgeVerdict(
        role.output,
        role.role,
        float(error),
        not failed,
        int(decisions),
        detail,
        rejected_by=f"output {role.output!r} ({role.role}): {rejected}" if failed else "",
    )


JudgeFunction = Callable[[OutputRole, np.ndarray, np.ndarray, JudgeLimits], JudgeVerdict]
# role -> its judge; "generic" has none (autotune.verify's per-output scale gate judges it).
JUDGES: dict[str, JudgeFunction] = {}
# role -> the share of decisions one changed decision must stay under (`_resolution`).
DECISION_LIMITS: dict[str, Callable[[JudgeLimits], float]] = {}


def register_judge(
    role: str,
    judged_by: str,
    judge: JudgeFunction | None = None,
    decision_limit: Callable[[JudgeLimits], float] | None = None,
) -> None:
    """Makes `role` a role: `--output-role NAME=ROLE` accepts it and `judge_output` judges it.

    Args:
        role (str): the role's name.
        judged_by (str): what the judge looks at, as reports say it.
        judge (callable | None): `(role, candidate, reference, limits) -> JudgeVerdict`; None
            leaves the output to `autotune.verify`'s scale gate ("generic"). Default: None.
        decision_limit (callable | None): `limits -> share` of decisions one changed decision
            is held to, for saying when a verdict rests on too few decisions. Default: None.

    Raises:
        ValueError: `role` is registered already.
    """
    global ROLES
    if role in JUDGE_NAMES:
        raise ValueError(f"judge for role {role!r} is registered already")
    ROLES = (*ROLES, role)
    JUDGE_NAMES[role] = judged_by
    if judge is not None:
        JUDGES[role] = judge
    if decision_limit is not None:
        DECISION_LIMITS[role] = decision_limit


register_judge("classes", "top-1 agreement and class-probability error", _classes, lambda lim: lim.label_change)
register_judge("labels", "label agreement", _labels, lambda lim: lim.label_change)
register_judge("sequence", "character error rate of the greedy CTC decode", _sequence, lambda lim: lim.cer)
register_judge(
    "detections", "detections matched to FP32's (F1), box and score error", _detections, lambda lim: 1 - lim.f1
)
register_judge(
    "dense_map",
    "regions matched to FP32's (F1, box shift), IoU of the thresholded maps, mean pixel change",
    _dense_map,
    lambda lim: 1 - lim.f1,
)
register_judge("embedding", "per-sample cosine", _embedding)
register_judge("generic", "error over the output's range (scale gate)")


def parse_limits(items: Iterable[str], flag: str = "--judge") -> JudgeLimits:
    """`KEY=VALUE` items (keys of `JudgeLimits`) over the defaults; ValueError naming `flag`."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in JudgeLimits.keys():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE with KEY one of {', '.join(JudgeLimits.keys())}")
        if key in values:
            raise ValueError(f"{flag} {key}: given twice")
        try:
            number = int(text) if key == "blank" else float(text)
        except ValueError:
            raise ValueError(f"{flag} {item!r}: {text!r} is not a number") from None
        if key != "blank" and not 0 <= number <= 1:
            raise ValueError(f"{flag} {item!r}: {key} is a share between 0 and 1")
        values[key] = number
    return JudgeLimits(**values)


def roles_from_attrs(records: Iterable[Mapping[str, Any]]) -> tuple[OutputRole, ...]:
    """The roles a study recorded (`OutputRole.as_dict`), as `Tolerance.roles`."""
    names = {f.name for f in fields(OutputRole)}
    return tuple(OutputRole(**{k: v for k, v in record.items() if k in names}) for record in records)


def roles_table(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """A markdown table of a study's output roles: what each output is, why, and its judge."""
    rows = ["| output | role | evidence | judged by |", "| --- | --- | --- | --- |"]
    for record in records:
        rows.append(
            f"| `{record['output']}` | {record['role']} | {record['evidence']} | {JUDGE_NAMES[record['role']]} |"
        )
    return rows if len(rows) > 2 else []
