"""The FP32 reference outputs every candidate is verified against, and the warnings a weak
reference earns."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from autotune.calibration import sample_count
from autotune.judges import infer_roles, output_producers
from autotune.model import fp32_cpu_session, join_outputs, output_batch_axes, verification_feeds
from autotune.verify import DEGENERATE_SCALE, Tolerance

if TYPE_CHECKING:
    from autotune.study._spec import StudySpec


def compute_references(spec: StudySpec) -> dict[int, dict[str, np.ndarray]]:
    """FP32 reference outputs of the original model (ONNX Runtime CPU, no graph
    optimizations) on every held-out sample, keyed by each batch size the space may pick, run
    in batches (`verification_feeds`, as the trials run) and joined (`join_outputs`). One
    reference, run at the largest batch, serves every size: one per size would hold the pool's
    outputs that many times (4 x 210 MB for ddddocr's 256 held-out lines), for differences of
    float rounding far below any tolerance. A model with a data-dependent output (detections
    after NMS, numbered within their batch) gets one per size, batched as its trials are."""
    if spec.target_options.build_only:
        return {}  # nothing runs, nothing is compared
    session = fp32_cpu_session(spec.model.path)
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds), strict=True))

    pool, dynamic = spec.input_pool, spec.model.dynamic_batch
    axes, proportional = output_batch_axes(run, pool) if dynamic else ({}, True)
    count = sample_count(pool)
    sizes = spec.batch_sizes()

    def reference(batch: int) -> dict[str, np.ndarray]:
        return join_outputs([run(feeds) for feeds in verification_feeds(pool, batch, dynamic)], count, axes, batch)

    if proportional:
        return dict.fromkeys(sizes, reference(max(sizes)))
    return {batch: reference(batch) for batch in sizes}


def judged_tolerance(spec: StudySpec, references: dict[int, dict[str, np.ndarray]]) -> Tolerance:
    """`spec.tolerance` with the role of every output, inferred once from the op that produces it
    and its FP32 reference on the held-out samples (`--output-role` wins); unchanged unless the
    gate is "auto" without a task metric."""
    tolerance = spec.tolerance
    if tolerance.mode != "auto" or tolerance.metric is not None or not references:
        return tolerance
    reference = references[max(references)]
    roles = infer_roles(
        reference, sample_count(spec.input_pool), output_producers(spec.model.path), dict(tolerance.role_overrides)
    )
    return replace(tolerance, roles=tuple(roles.values()))


def weak_reference_warnings(references: dict[int, dict[str, np.ndarray]], tolerance: Tolerance) -> list[str]:
    """Outputs whose FP32 reference cannot tell a right candidate from a wrong one.

    A reference that stays within `atol` of zero everywhere (a detector's empty heat map on
    synthetic noise) lets any candidate that outputs near-zeros pass (elementwise), or has a
    range so small that float rounding decides (scale); a constant one says nothing either.
    The user should then pass real inputs (`--inputs`).
    """

    warnings = []
    for _batch, outputs in sorted(references.items())[:1]:
        for name, value in outputs.items():
            if value.size == 0 or not np.issubdtype(value.dtype, np.floating):
                continue
            peak = float(np.max(np.abs(value)))
            spread = float(np.ptp(value.astype(np.float64)))
            if peak <= tolerance.atol:
                consequence = "accuracy checks cannot reject a wrong candidate"
                if tolerance.mode != "elementwise" and peak > DEGENERATE_SCALE:
                    scale = spread if spread > DEGENERATE_SCALE else peak
                    consequence = f"its errors are judged against a range of only {scale:.3g}, where rounding decides"
                warnings.append(
                    f"output {name!r} of the FP32 reference is within atol of zero (max |value| {peak:.3g} <= "
                    f"{tolerance.atol:g}) on these inputs: {consequence}; "
                    "pass real inputs with --inputs FILE.npz"
                )
            elif spread <= DEGENERATE_SCALE:
                warnings.append(
                    f"output {name!r} of the FP32 reference is constant ({peak:.3g}) on these inputs: "
                    "accuracy checks are weak; pass real inputs with --inputs FILE.npz"
                )
    return warnings
