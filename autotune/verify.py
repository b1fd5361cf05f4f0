"""Accuracy of a candidate against the FP32 reference, with Polygraphy's comparator.

Polygraphy's `SimpleCompareFunc` decides pass/fail elementwise (an element mismatches only
when both its absolute and its relative difference exceed the tolerances) and reports the
max/mean absolute and relative differences. Relative differences divide by the *second*
result, so the reference goes second. Cosine similarity is added here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Accuracy tolerance against the FP32 reference.

    Args:
        atol (float): absolute tolerance. Default: 1e-2.
        rtol (float): relative tolerance. Default: 1e-2.
    """

    atol: float = 1e-2
    rtol: float = 1e-2


@dataclass(frozen=True)
class OutputError:
    """Errors of one output against the reference."""

    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    mean_rel_error: float
    cosine_similarity: float
    passed: bool
    max_abs_reference: float = 0.0
    scale_floor: float = 0.0

    @property
    def normalized_error(self) -> float:
        """Max absolute error over the reference's largest magnitude, floored at atol.

        The floor keeps a near-zero output (a detector's empty heat map on synthetic input)
        from turning a negligible absolute error into a 100% "error".
        """
        scale = max(self.max_abs_reference, self.scale_floor)
        return self.max_abs_error / scale if scale > 0 else self.max_abs_error


@dataclass(frozen=True)
class AccuracyReport:
    """Per-output errors and the summary numbers the study optimizes and constrains."""

    outputs: dict[str, OutputError]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs.values())

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
        """The error the study minimizes: worst output's max abs error over its magnitude."""
        return max(o.normalized_error for o in self.outputs.values())

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


def compare_outputs(
    candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], tolerance: Tolerance
) -> AccuracyReport:
    """Compares `candidate` outputs with `reference` outputs (same names) under `tolerance`.

    A missing output or a shape mismatch counts as a failure with infinite error.
    """
    from polygraphy import comparator as pg
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.logger import G_LOGGER

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
    accuracy = Comparator.compare_accuracy(results, compare_func=compare)
    # One AccuracyResult per compare function; then runner pair, iteration, output name.
    per_iteration = accuracy[0][("candidate", "reference")][0]
    errors = {}
    for name, ref_value in ref.items():
        stats = per_iteration.get(name) if name in cand else None
        if stats is None or cand[name].shape != ref_value.shape:
            inf = float("inf")
            errors[name] = OutputError(inf, inf, inf, inf, 0.0, False, 0.0)
            continue
        errors[name] = OutputError(
            max_abs_error=float(stats.max_absdiff),
            max_rel_error=float(stats.max_reldiff),
            mean_abs_error=float(stats.mean_absdiff),
            mean_rel_error=float(stats.mean_reldiff),
            cosine_similarity=_cosine(cand[name], ref_value),
            passed=bool(stats),
            max_abs_reference=float(np.max(np.abs(ref_value))) if ref_value.size else 0.0,
            scale_floor=tolerance.atol,
        )
    return AccuracyReport(errors)
