"""Task metrics shipped with autotune, for `--metric` (`Tolerance.metric`).

A task metric judges a candidate by what the model is for instead of by its numbers: a
classifier whose FP16 logits move by 2% but whose predicted classes do not change is as good
as the FP32 one. Each is called as `metric(candidate, reference)` with dicts of output name to
array, and returns `{"error": float, "passed": bool, "detail": str}`.
"""

from __future__ import annotations

import numpy as np

# The share of samples whose reference class must stay in the candidate's top k.
MIN_AGREEMENT = 0.99


def top_k_agreement(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray], k: int) -> dict[str, object]:
    """Share of samples whose reference top-1 class is among the candidate's top `k` classes.

    Reads the first output (the last axis holds the classes, every other axis is samples).
    A sample with a NaN or infinite candidate score counts as a disagreement.

    Args:
        candidate (dict[str, np.ndarray]): the candidate's outputs.
        reference (dict[str, np.ndarray]): the FP32 reference's outputs (same names and shapes).
        k (int): how many of the candidate's best classes may hold the reference's class.

    Returns:
        dict: `error` = 1 - agreement, `passed` = agreement >= MIN_AGREEMENT (0.99), `detail`.
    """
    name = next(iter(reference))
    ref = np.asarray(reference[name], dtype=np.float64)
    cand = np.asarray(candidate[name], dtype=np.float64)
    if ref.ndim == 0 or cand.shape != ref.shape:
        raise ValueError(f"output {name!r}: expected class scores of the same shape, got {cand.shape} vs {ref.shape}")
    classes = ref.shape[-1]
    ref, cand = ref.reshape(-1, classes), cand.reshape(-1, classes)
    k = min(k, classes)
    truth = ref.argmax(axis=-1)
    best_k = np.argpartition(-cand, k - 1, axis=-1)[:, :k]
    hits = (best_k == truth[:, None]).any(axis=-1) & np.isfinite(cand).all(axis=-1)
    agreement = float(hits.mean())
    return {
        "error": 1.0 - agreement,
        "passed": agreement >= MIN_AGREEMENT,
        "detail": (
            f"top-{k} agreement {agreement:.1%} over {len(hits)} samples of output {name!r} (need {MIN_AGREEMENT:.0%})"
        ),
    }


def top1(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """The candidate predicts the reference's class (see `top_k_agreement`, k=1)."""
    return top_k_agreement(candidate, reference, 1)


def top5(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, object]:
    """The reference's class is among the candidate's 5 best (see `top_k_agreement`, k=5)."""
    return top_k_agreement(candidate, reference, 5)
