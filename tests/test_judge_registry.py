"""Adding an output judge touches one module and one registration line (`judges.register_judge`):
a judge registered here is accepted by `--output-role`, judges its output in "auto" mode, and is
named in the roles table."""

from __future__ import annotations

import numpy as np
import pytest

from autotune import judges
from autotune.judges import JudgeLimits, JudgeVerdict, OutputRole, parse_role, register_judge, roles_table
from autotune.verify import Tolerance, compare_outputs


def _bitwise(role: OutputRole, cand: np.ndarray, ref: np.ndarray, limits: JudgeLimits) -> JudgeVerdict:
    """A judge of a role that tolerates no change at all."""
    changed = int(np.count_nonzero(cand != ref))
    failed = [f"{changed} values differ from FP32's"] if changed else []
    return judges._verdict(role, changed / max(ref.size, 1), ref.size, f"{changed} changed", failed)


@pytest.fixture
def registry(monkeypatch):
    """The judge registry as shipped, restored after the test."""
    monkeypatch.setattr(judges, "ROLES", judges.ROLES)
    for name in ("JUDGE_NAMES", "JUDGES", "DECISION_LIMITS"):
        monkeypatch.setattr(judges, name, dict(getattr(judges, name)))


def test_the_shipped_roles_are_registered_in_their_order():
    assert judges.ROLES == ("classes", "labels", "sequence", "detections", "dense_map", "embedding", "generic")
    assert set(judges.JUDGES) == set(judges.ROLES) - {"generic"}  # generic: verify's scale gate


def test_a_judge_registered_with_one_line_is_accepted_used_and_named(registry):
    register_judge("bitwise", "no value may change", _bitwise, lambda limits: 0.0)

    assert parse_role("y=bitwise") == ("y", "bitwise")
    reference = {"y": np.arange(12, dtype=np.float32).reshape(3, 4)}
    tolerance = Tolerance(role_overrides=(("y", "bitwise"),))
    assert compare_outputs(reference, reference, tolerance).passed
    report = compare_outputs({"y": reference["y"] + 1e-6 * (reference["y"] == 5)}, reference, tolerance)
    assert not report.passed
    assert report.judges["y"].role == "bitwise"
    assert report.rejected_by == "output 'y' (bitwise): 1 values differ from FP32's"
    record = OutputRole("y", "bitwise", "--output-role").as_dict()
    assert record["judge"] == "no value may change"
    assert "| `y` | bitwise | --output-role | no value may change |" in roles_table([record])


def test_a_role_registered_twice_is_an_error(registry):
    with pytest.raises(ValueError, match="'classes' is registered already"):
        register_judge("classes", "again")
