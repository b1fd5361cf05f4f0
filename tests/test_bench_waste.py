"""The bench's count of wasted trials (issue 27): duplicates, repeated failures and repeated
known-slow values, from a study's trial rows as `bench/gpu_grid.py` reads them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gpu_grid import wasted_trials
from waste_cpu import contradictions


def row(number: int, config: dict, *, state: str = "COMPLETE", known_slow: float | None = None, **attrs) -> dict:
    return {"number": number, "state": state, "config": config, "reason": attrs.get("reason", ""),
            "duplicate_of": attrs.get("duplicate_of"), "ruled_out": attrs.get("ruled_out", False),
            "baseline": number == 0, "known_slow": known_slow}  # fmt: skip


DEFAULTS = {"search": "EXHAUSTIVE", "graph": True, "batch_size": 1}


def test_a_third_known_slow_trial_of_a_value_two_made_slow_is_waste_and_the_first_two_are_not():
    rows = [
        row(0, DEFAULTS),
        row(1, {**DEFAULTS, "search": "DEFAULT"}, known_slow=2.8),
        row(2, {**DEFAULTS, "search": "DEFAULT", "batch_size": 8}, known_slow=3.1),
        row(3, {**DEFAULTS, "graph": False}),
        row(4, {**DEFAULTS, "search": "DEFAULT", "graph": False}, known_slow=2.6),
    ]
    wasted = wasted_trials(rows, lambda reason: reason)
    assert [r["number"] for r in wasted["repeat_known_slow"]] == [4]
    assert wasted["repeat_known_slow"][0]["after"] == {"search='DEFAULT'": [1, 2]}
    assert wasted["count"] == 1


def test_known_slow_trials_sharing_no_value_and_a_batch_alone_are_not_waste():
    rows = [
        row(0, DEFAULTS),
        row(1, {**DEFAULTS, "search": "DEFAULT", "batch_size": 8}, known_slow=2.5),
        row(2, {**DEFAULTS, "graph": False, "batch_size": 8}, known_slow=2.2),
        row(3, {**DEFAULTS, "search": "HEURISTIC", "batch_size": 8}, known_slow=2.4),
        row(4, {**DEFAULTS, "search": "DEFAULT"}, duplicate_of=1),
    ]
    wasted = wasted_trials(rows, lambda reason: reason)
    assert wasted["repeat_known_slow"] == []
    assert wasted["duplicates"] == [4] and wasted["count"] == 1


def test_the_surfaces_check_finds_a_verdict_its_own_figures_contradict():
    """Issue 26: every stored verdict is checked against its interval, per-side milliseconds and the
    A/A control (bench/waste_cpu.py); each contradiction is found, a consistent study has none."""
    aa = {"median": 1.0, "p25": 0.99, "p75": 1.01, "rounds": 9, "default_ms_per_sample": 1.0, "best_ms_per_sample": 1.0}

    def answer(verdict: str, median: float, p25: float, p75: float, default_ms: float, best_ms: float) -> dict:
        speedup = {"median": median, "p25": p25, "p75": p75, "rounds": 9, "default_ms_per_sample": default_ms,
                   "best_ms_per_sample": best_ms}  # fmt: skip
        return {"batch_size": 1, "trial": 1, "verdict": verdict, "speedup": speedup, "ms_per_sample": best_ms}

    consistent = {
        "1": answer("faster", 1.2, 1.15, 1.25, 1.2, 1.0),
        "2": answer("no measurable difference", 1.0, 0.98, 1.02, 1.0, 1.0),
        "4": answer("slower", 0.8, 0.75, 0.85, 1.0, 1.25),
        "8": answer("defaults", 1.0, 1.0, 1.0, 1.0, 1.0),  # nothing paired: nothing to contradict
    }
    assert contradictions({"aa_control": aa, "answers": consistent}) == []
    bad = {
        "1": answer("faster", 1.02, 1.0, 1.05, 1.02, 1.0),  # inside the A/A control's interval
        "2": answer("faster", 1.2, 1.15, 1.25, 1.0, 1.1),  # its milliseconds say slower
        "4": answer("no measurable difference", 1.3, 1.25, 1.35, 1.3, 1.0),  # clearly faster
        "8": answer("slower", 1.1, 1.05, 1.15, 1.1, 1.0),
    }
    found = contradictions({"aa_control": aa, "answers": bad})
    assert [line.split(":")[0] for line in found] == ["batch 1", "batch 2", "batch 4", "batch 8"]
