"""The study spec (autotune.spec): which options were given, and what a resume inherits."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.spec import _inherit_options, given_options, parse_start, start_args

STORED = {"seed": "3", "max_measure_s": "0.5", "shape": ["x:1,3,8,8"], "target": "onnxruntime", "build_only": False}


def test_an_explicit_default_on_resume_is_kept_not_inherited():
    args = parse_start(["--resume", "s", "--seed", "0", "--target", "auto"])
    _inherit_options(args, STORED)
    assert args.seed == "0" and args.target == "auto"  # given, although equal to the defaults
    assert args.max_measure_s == "0.5" and args.shape == ["x:1,3,8,8"]  # not given: inherited


def test_every_form_of_a_flag_counts_as_given():
    assert given_options(["m.onnx", "--seed=0", "--shape", "a:1", "--foreground"]) == {
        "model",
        "seed",
        "shape",
        "foreground",
    }
    assert given_options(["m.onnx", "--max-measure", "2"]) == {"model", "max_measure_s"}  # an abbreviation
    assert given_options([]) == frozenset()


def test_library_callers_build_options_without_a_command_line(tmp_path):
    args = start_args(tmp_path / "m.onnx", trials="5", seed="0", results_dir=tmp_path)
    assert args.model == str(tmp_path / "m.onnx") and args.trials == "5" and args.max_measure_s == "2"
    assert args.given == {"model", "trials", "seed", "results_dir"}
    _inherit_options(args, STORED)
    assert args.seed == "0" and args.max_measure_s == "0.5"
    with pytest.raises(TypeError, match="unknown options max_measure"):
        start_args(Path("m.onnx"), max_measure="1")


def test_nothing_in_autotune_imports_the_cli():
    import ast

    package = Path(__file__).resolve().parent.parent / "autotune"
    importers = []
    for path in package.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "autotune.cli":
                importers.append(str(path.relative_to(package)))
    assert importers == []
