"""Accuracy of a candidate against the FP32 reference, with Polygraphy's comparator.

Polygraphy's `SimpleCompareFunc` computes the max/mean absolute and relative differences of
each output (relative differences divide by the *second* result, so the reference goes
second). Which candidates pass is one of three criteria:

- "scale" (default): each output's max absolute error over that output's own reference range
  is at most `max_error`, and its cosine similarity at least `min_cosine`. An error is judged
  against what the output spans, so a detector's boxes in pixels (range ~640) may move by half
  a pixel while its scores in [0, 1] may not move by 0.3.
- "elementwise": Polygraphy's test, an element mismatches only when both its absolute and its
  relative difference exceed `atol`/`rtol`. Strict on large-magnitude outputs: 0.5 px on a box
  at x=20 is 2.5% relative.
- a task metric, `Tolerance.metric = "module:function"`, decides instead (see `load_metric`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from polygraphy import comparator as pg
from polygraphy.comparator import Comparator, IterationResult, RunResults
from polygraphy.comparator import util as comparator_util
from polygraphy.logger import G_LOGGER

from autotune.errors import MetricError
from autotune.judges import JudgeLimits, JudgeVerdict, OutputRole, infer_roles, judge_output

ACCURACY_MODES = ("auto", "scale", "elementwise")
# Task metrics shipped with autotune, by the short names the CLI accepts.
BUILTIN_METRICS = {"top1": "autotune.metrics:top1", "top5": "autotune.metrics:top5"}
# The roles whose first output the built-in metrics can read: class scores on the last axis
# (`autotune.metrics.top_k_agreement`), a sequence's symbols per step included.
# A generic output is not refused: its layout is unknown, not known to be another.
BUILTIN_METRIC_ROLES = ("classes", "sequence", "generic")
_HOLDS = {
    "labels": "integer labels",
    "detections": "packed detections",
    "dense_map": "a dense map",
    "embedding": "an embedding",
}
# A reference whose range and magnitude are both below this is all zeros up to float32
# rounding: no range to judge an error against.
DEGENERATE_SCALE = 1e-12


@dataclass(frozen=True)
class Tolerance:
    """Accuracy tolerance against the FP32 reference (frozen and picklable: Ray workers get it).

    Args:
        atol (float): absolute tolerance of "elementwise" mode; in "scale" mode the largest
            absolute error a degenerate (all-zero) output may have. Default: 1e-2.
        rtol (float): relative tolerance of "elementwise" mode. Default: 1e-2.
        mode (str): "auto", "scale" or "elementwise" (see the module docstring). Default: "auto".
        max_error (float): "scale" mode's limit on max abs error over the output's reference
            range (max - min, else max |ref|). Default: 1e-2 (1% of the range).
        min_cosine (float): "scale" mode's lowest cosine similarity. Default: 0.99.
        metric (str | None): "module:function" (or "top1"/"top5") of a task metric that decides
            pass/fail instead of `mode`. Default: None.
        roles (tuple[OutputRole, ...]): "auto" mode's role of each output, inferred once from the
            graph and the FP32 reference (`autotune.judges.infer_roles`); an output without one
            is inferred from its reference values alone. Default: ().
        limits (JudgeLimits): "auto" mode's judges' limits. Default: `JudgeLimits()`.
        role_overrides (tuple[tuple[str, str], ...]): (output, role) pairs of `--output-role`,
            applied when the roles are inferred. Default: ().
    """

    atol: float = 1e-2
    rtol: float = 1e-2
    mode: str = "auto"
    max_error: float = 1e-2
    min_cosine: float = 0.99
    metric: str | None = None
    roles: tuple[OutputRole, ...] = ()
    limits: JudgeLimits = JudgeLimits()
    role_overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ACCURACY_MODES:
            raise ValueError(f"Tolerance.mode {self.mode!r}: expected one of {', '.join(ACCURACY_MODES)}")

    def tightened(self, share: float) -> Tolerance:
        """This tolerance with `share` of each limit's room (`JudgeLimits.tightened`); a task
        metric's own threshold is the metric's, so a tolerance with one is returned unchanged."""
        if self.metric:
            return self
        return replace(
            self,
            atol=self.atol * share,
            rtol=self.rtol * share,
            max_error=self.max_error * share,
            min_cosine=1 - (1 - self.min_cosine) * share,
            limits=self.limits.tightened(share),
        )


@dataclass(frozen=True)
class OutputError:
    """Errors of one output against the reference, and its verdict under the tolerance's mode.

    `reference_range` is the scale "scale" mode judges against (0 for a degenerate output,
    whose `error_over_range` is then its absolute error); `rejected_by` says which criterion
    rejected the output and by how much (empty when it passed).
    """

    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    mean_rel_error: float
    cosine_similarity: float
    passed: bool
    max_abs_reference: float = 0.0
    scale_floor: float = 0.0
    reference_range: float = 0.0
    error_over_range: float = 0.0
    rejected_by: str = ""

    @property
    def normalized_error(self) -> float:
        """Max absolute error over the reference's largest magnitude, floored at atol.

        The floor keeps a near-zero output (a detector's empty heat map on synthetic input)
        from turning a negligible absolute error into a 100% "error".
        """
        scale = max(self.max_abs_reference, self.scale_floor)
        return self.max_abs_error / scale if scale > 0 else self.max_abs_error


@dataclass(frozen=True)
class MetricVerdict:
    """What a task metric said of a candidate: its error (lower is better) and verdict."""

    name: str
    error: float
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        return f"metric {self.name}: error {self.error:.3g}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class AccuracyReport:
    """Per-output errors and the summary numbers the study optimizes and constrains.

    `criterion` is the tolerance's mode, or "metric" when a task metric decides; `metric` is
    None when none was run (none given, or an output was missing or misshapen).
    """

    outputs: dict[str, OutputError]
    criterion: str = "scale"
    metric: MetricVerdict | None = None
    judges: dict[str, JudgeVerdict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        if self.metric is not None:
            return self.metric.passed
        return all(o.passed for o in self.outputs.values())

    @property
    def rejected_by(self) -> str:
        """Which criterion rejected the candidate and by how much; empty when it passed."""
        if self.passed:
            return ""
        if self.metric is not None:
            return self.metric.describe()
        failed = [o.rejected_by for o in self.outputs.values() if not o.passed]
        more = f"; and {len(failed) - 3} more outputs" if len(failed) > 3 else ""
        return "; ".join(failed[:3]) + more

    @property
    def max_abs_error(self) -> float:
        return max(o.max_abs_error for o in self.outputs.values())

    @property
    def max_rel_error(self) -> float:
        return max(o.max_rel_error for o in self.outputs.values())

    @property
    def mean_rel_error(self) -> float:
        return max(o.mean_rel_error for o in self.outputs.values())

    @property
    def normalized_error(self) -> float:
        """The error the study minimizes: the metric's error when one decides; in "scale" mode
        the worst output's max abs error over its reference range; in "elementwise" mode over
        its largest reference magnitude (floored at atol)."""
        if self.metric is not None:
            return self.metric.error
        if self.criterion == "auto":
            return max(
                self.judges[name].error if name in self.judges else o.error_over_range
                for name, o in self.outputs.items()
            )
        if self.criterion == "elementwise":
            return max(o.normalized_error for o in self.outputs.values())
        return max(o.error_over_range for o in self.outputs.values())

    @property
    def min_cosine_similarity(self) -> float:
        return min(o.cosine_similarity for o in self.outputs.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "mean_rel_error": self.mean_rel_error,
            "min_cosine_similarity": self.min_cosine_similarity,
            "normalized_error": self.normalized_error,
            "criterion": self.criterion,
            "rejected_by": self.rejected_by,
            **({"metric": asdict(self.metric)} if self.metric is not None else {}),
            **({"judges": {name: v.as_dict() for name, v in self.judges.items()}} if self.judges else {}),
            "outputs": {name: asdict(o) for name, o in self.outputs.items()},
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


@contextlib.contextmanager
def _output_stats_not_logged() -> Iterator[None]:
    """Polygraphy computes the statistics of every output and difference it logs (medians: a
    partial sort of each array) before it looks at the log level: 10 of 17 s comparing
    ddddocr's 256 held-out lines (52M values), with its log muted. Not logged, not computed."""
    original = getattr(comparator_util, "log_output_stats", None)
    if original is None:
        yield
        return
    comparator_util.log_output_stats = lambda *_args, **_kwargs: None
    try:
        yield
    finally:
        comparator_util.log_output_stats = original


def compare_outputs(
    candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], tolerance: Tolerance
) -> AccuracyReport:
    """Compares `candidate` outputs with `reference` outputs (same names) under `tolerance`.

    A missing output or a shape mismatch counts as a failure with infinite error, whatever
    the criterion. With `tolerance.metric` the metric decides; the per-output verdicts of
    `tolerance.mode` are still recorded.

    Raises:
        MetricError: the metric does not import, raises, or returns something other than
            `(error, passed)` or `{"error", "passed"[, "detail"]}`.
    """
    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    logging.getLogger("polygraphy").setLevel(logging.CRITICAL)
    results = RunResults()
    cand = {n: np.asarray(candidate[n]) for n in reference if n in candidate}
    ref = {n: np.asarray(reference[n]) for n in reference}
    results.append(("candidate", [IterationResult(outputs=cand, runner_name="candidate")]))
    results.append(("reference", [IterationResult(outputs=ref, runner_name="reference")]))
    # Polygraphy >= 0.50 exposes SimpleCompareFunc directly and deprecates CompareFunc.simple.
    make_compare = getattr(pg, "SimpleCompareFunc", None) or pg.CompareFunc.simple
    compare = make_compare(atol=tolerance.atol, rtol=tolerance.rtol, check_shapes=True)
    with _output_stats_not_logged():
        accuracy = Comparator.compare_accuracy(results, compare_func=compare)
    # One AccuracyResult per compare function; then runner pair, iteration, output name.
    per_iteration = accuracy[0][("candidate", "reference")][0]
    roles = _roles(tolerance, ref)
    errors, judges = {}, {}
    for name, ref_value in ref.items():
        stats = per_iteration.get(name) if name in cand else None
        if stats is None or cand[name].shape != ref_value.shape:
            inf = float("inf")
            problem = (
                "missing from the candidate"
                if name not in cand
                else f"shape {list(cand[name].shape)} differs from the reference's {list(ref_value.shape)}"
            )
            errors[name] = OutputError(
                inf, inf, inf, inf, 0.0, False, error_over_range=inf, rejected_by=f"output {name!r}: {problem}"
            )
            continue
        wide = ref_value.astype(np.float64)
        max_abs_error = float(stats.max_absdiff)
        cosine = _cosine(cand[name], ref_value)
        reference_range = float(np.ptp(wide)) if wide.size else 0.0
        if reference_range <= DEGENERATE_SCALE:
            reference_range = float(np.max(np.abs(wide))) if wide.size else 0.0
        degenerate = reference_range <= DEGENERATE_SCALE
        error_over_range = max_abs_error if degenerate else max_abs_error / reference_range
        label, judged_error = f"output {name!r}", max_abs_error
        field = _worst_packed_field(cand[name], wide, reference_range) if tolerance.mode != "elementwise" else None
        if field is not None and not degenerate:
            index, count, judged_error, reference_range = field
            error_over_range = judged_error / reference_range
            label = f"output {name!r} field {index} of {count} (last axis)"
        role = roles.get(name)
        if role is not None and role.role != "generic":
            judges[name] = judge_output(role, cand[name], ref_value, tolerance.limits)
            rejected_by = judges[name].rejected_by
        elif tolerance.mode == "elementwise":
            rejected_by = "" if bool(stats) else _elementwise_rejection(name, stats, tolerance)
        else:
            rejected_by = _scale_rejection(
                label, cand[name], judged_error, reference_range, degenerate, cosine, tolerance
            )
        errors[name] = OutputError(
            max_abs_error=max_abs_error,
            max_rel_error=float(stats.max_reldiff),
            mean_abs_error=float(stats.mean_absdiff),
            mean_rel_error=float(stats.mean_reldiff),
            cosine_similarity=cosine,
            passed=not rejected_by,
            max_abs_reference=float(np.max(np.abs(wide))) if wide.size else 0.0,
            scale_floor=tolerance.atol,
            reference_range=0.0 if degenerate else reference_range,
            error_over_range=error_over_range,
            rejected_by=rejected_by,
        )
    if tolerance.metric is None:
        return AccuracyReport(errors, criterion=tolerance.mode, judges=judges)
    complete = len(cand) == len(ref) and all(cand[n].shape == ref[n].shape for n in ref)
    verdict = run_metric(tolerance.metric, cand, ref) if complete else None
    return AccuracyReport(errors, criterion="metric", metric=verdict, judges=judges)


def _roles(tolerance: Tolerance, reference: Mapping[str, np.ndarray]) -> dict[str, OutputRole]:
    """ "auto" mode's role of each output: the study's, else inferred from the reference alone."""
    if tolerance.mode != "auto" or tolerance.metric is not None:
        return {}
    known = {role.output: role for role in tolerance.roles}
    missing = {name: value for name, value in reference.items() if name not in known}
    return known | (infer_roles(missing, overrides=dict(tolerance.role_overrides)) if missing else {})


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


# A packed detection output ([..., rows, fields]: box coordinates in pixels beside scores in
# [0, 1]) is judged per field: against the whole output's range, set by the pixels, a score
# could move by 30% unnoticed. Outputs with a short last axis and many rows are packed.
PACKED_MAX_FIELDS = 16
PACKED_MIN_ROWS = 64


def _worst_packed_field(
    candidate: np.ndarray, reference: np.ndarray, output_range: float
) -> tuple[int, int, float, float] | None:
    """For a packed output, the field (last-axis index) with the largest max abs error over
    its own range: (index, field count, its max abs error, its range); None otherwise. A
    constant field is judged against the output's range."""
    if reference.ndim < 2 or not np.issubdtype(candidate.dtype, np.floating):
        return None
    fields = reference.shape[-1]
    if not 2 <= fields <= PACKED_MAX_FIELDS or reference.size // fields < PACKED_MIN_ROWS:
        return None
    ref = reference.reshape(-1, fields)
    diff = np.abs(candidate.astype(np.float64).reshape(-1, fields) - ref)
    errors = diff.max(axis=0)
    ranges = np.ptp(ref, axis=0)
    ranges = np.where(ranges > DEGENERATE_SCALE, ranges, output_range)
    worst = int(np.argmax(errors / ranges))
    return worst, fields, float(errors[worst]), float(ranges[worst])


def _scale_rejection(
    label: str,
    candidate: np.ndarray,
    max_abs_error: float,
    reference_range: float,
    degenerate: bool,
    cosine: float,
    tolerance: Tolerance,
) -> str:
    """Why "scale" mode rejects this output (empty when it passes)."""
    if np.issubdtype(candidate.dtype, np.floating) and not np.all(np.isfinite(candidate)):
        return f"{label}: the candidate has NaN or infinite values"
    if degenerate:
        if max_abs_error <= tolerance.atol:
            return ""
        return (
            f"{label}: the reference is zero everywhere, and max abs error {max_abs_error:.3g} is over the "
            f"absolute floor {tolerance.atol:g}"
        )
    error_over_range = max_abs_error / reference_range
    if not error_over_range <= tolerance.max_error:
        return (
            f"{label}: max abs error {max_abs_error:.3g} is {_percent(error_over_range)} of its range "
            f"{reference_range:.3g} (limit {_percent(tolerance.max_error)})"
        )
    if not cosine >= tolerance.min_cosine:
        return f"{label}: cosine {cosine:.4g} < {tolerance.min_cosine:g}"
    return ""


def _elementwise_rejection(name: str, stats: Any, tolerance: Tolerance) -> str:
    return (
        f"output {name!r}: elements differ by more than both atol {tolerance.atol:g} and rtol {tolerance.rtol:g} "
        f"(max abs error {float(stats.max_absdiff):.3g}, max rel error {float(stats.max_reldiff):.3g})"
    )


def load_metric(spec: str) -> Callable[..., Any]:
    """The task metric named `spec`: "package.module:function", or a short name of
    `BUILTIN_METRICS` ("top1", "top5").

    Raises:
        MetricError: `spec` is not "module:function", the module does not import, or the
            attribute is missing or not callable.
    """
    full = BUILTIN_METRICS.get(spec, spec)
    module_name, _, function_name = full.partition(":")
    if not module_name or not function_name:
        raise MetricError(f"metric {spec!r}: expected module:function, or one of {', '.join(BUILTIN_METRICS)}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure of user code is a bad metric name
        raise MetricError(f"metric {spec!r}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise MetricError(f"metric {spec!r}: {module_name} has no callable {function_name!r}")
    return function


def metric_misfit(metric: str, role: OutputRole, value: np.ndarray) -> str:
    """Why the built-in task metric `metric` (a `BUILTIN_METRICS` name or its target) cannot
    judge the model's first output, whose role is `role` and whose value at batch 1 is `value`;
    "" when it can, or when `metric` is the user's own code (it may read any output)."""

    short = next((name for name, full in BUILTIN_METRICS.items() if metric in (name, full)), None)
    if short is None:
        return ""
    shape = "x".join(map(str, value.shape)) or "a scalar"
    if role.role in BUILTIN_METRIC_ROLES:
        if value.ndim >= 2 and value.shape[-1] >= 2:
            return ""
        return f"output {role.output!r} ({shape}) has no 2 or more classes on its last axis, which {short} reads"
    inferred = "given by --output-role" if role.evidence == "--output-role" else "inferred"
    return (
        f"output {role.output!r} ({shape}) holds {_HOLDS.get(role.role, role.role)} ({inferred}), not class scores "
        f"on its last axis, which {short} reads"
    )


def run_metric(spec: str, candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> MetricVerdict:
    """Runs the task metric `spec` on one candidate's outputs and checks what it returns.

    The metric is called as `metric(candidate, reference)` (dicts of output name to array) and
    returns `(error, passed)` or `{"error": float, "passed": bool, "detail": str}` (detail optional).

    Raises:
        MetricError: the metric does not load, raises, or returns anything else.
    """
    function = load_metric(spec)
    try:
        returned = function(candidate, reference)
    except Exception as exc:  # the metric is user code: any failure fails this trial's verification
        message = " ".join(str(exc).split())[:300]
        raise MetricError(f"metric {spec}: raised {type(exc).__name__}: {message}") from exc
    detail: Any = ""
    if isinstance(returned, Mapping) and "error" in returned and "passed" in returned:
        error, passed, detail = returned["error"], returned["passed"], returned.get("detail", "")
    elif isinstance(returned, tuple | list) and len(returned) == 2:
        error, passed = returned
    else:
        raise MetricError(
            f"metric {spec}: returned {_short(returned)}; expected (error, passed) or a dict with 'error' and 'passed'"
        )
    if isinstance(error, bool) or not isinstance(error, int | float | np.number) or math.isnan(float(error)):
        raise MetricError(f"metric {spec}: error {_short(error)} is not a number")
    if not isinstance(passed, bool | np.bool_):
        raise MetricError(f"metric {spec}: passed {_short(passed)} is not a bool")
    return MetricVerdict(name=spec, error=float(error), passed=bool(passed), detail=" ".join(str(detail).split()))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
