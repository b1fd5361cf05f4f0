"""`TargetOptions` is built once, from `start`'s options, recorded with the study, and read back
whole by every command that reads the study (`TargetOptions.from_study_attrs`)."""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest

from autotune.targets.base import TargetOptions

PACKAGE = Path(__file__).resolve().parent.parent / "autotune"
# Where a TargetOptions may be made from scratch: the defaults of `Target.__init__` and
# `resolve_target`, and `start`'s options (spec.py). Everything else reads the study's.
MADE_FROM_SCRATCH = {"autotune/targets/base.py", "autotune/targets/__init__.py", "autotune/spec.py"}


def test_every_field_round_trips_through_the_study_attributes():
    options = TargetOptions(cache_dir=Path("/results/s"), build_only=True, build_timeout_s=42.5)
    defaults = TargetOptions()
    # A field added later must be given a non-default value above, or this test proves nothing.
    assert all(getattr(options, f.name) != getattr(defaults, f.name) for f in fields(TargetOptions))
    attrs = json.loads(json.dumps({"target_options": options.as_study_attrs()}))  # as Optuna stores it
    assert TargetOptions.from_study_attrs(attrs) == options


def test_a_study_recorded_before_target_options_gives_its_build_only_and_directory():
    attrs = {"study_dir": "/results/old", "build_only": True}
    assert TargetOptions.from_study_attrs(attrs) == TargetOptions(cache_dir=Path("/results/old"), build_only=True)


def test_recorded_options_with_a_field_this_version_lacks_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown field.*build_timeout"):
        TargetOptions.from_study_attrs({"target_options": {"build_timeout": 5}})


def test_no_command_that_reads_a_study_makes_its_own_target_options():
    made = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TargetOptions":
                if relative not in MADE_FROM_SCRATCH:
                    made.append(f"{relative}:{node.lineno}")
    assert not made, f"use TargetOptions.from_study_attrs(study.user_attrs): {made}"
