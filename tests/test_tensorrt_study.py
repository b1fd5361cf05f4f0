"""Build-only studies on TensorRT-RTX: real engines built on the CPU, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import optuna
import pytest
from onnx import TensorProto, helper

from autotune.cli import main

pytestmark = pytest.mark.slow
pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install tensorrt-rtx-cu13) is not installed")


def load(results: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / name / 'study.db'}")


@pytest.fixture(scope="module")
def rtx_study(tmp_path_factory):
    from tests.conftest import make_tiny_model

    root = tmp_path_factory.mktemp("rtx")
    model = make_tiny_model(root / "tiny.onnx")
    results = root / "results"
    code = main(
        [
            "start",
            str(model),
            "--target",
            "tensorrt-rtx",
            "--build-only",
            "--foreground",
            "--trials",
            "20",
            "--study",
            "rtx",
            "--results-dir",
            str(results),
        ]
    )
    assert code == 0
    return results, load(results, "rtx")


def test_a_build_only_study_completes_twenty_trials(rtx_study):
    _, study = rtx_study
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 20
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in finished) >= 18


def test_every_distinct_engine_is_on_disk_with_its_layer_table(rtx_study):
    results, study = rtx_study
    built = [
        t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    distinct = [t for t in built if "shared_measurement_with_trial" not in t.user_attrs]
    assert distinct
    for trial in distinct:
        trial_dir = results / "rtx" / "trials" / str(trial.number)
        assert (trial_dir / "engine.plan").stat().st_size == trial.user_attrs["details"]["build"]["engine_size_bytes"]
        layers = json.loads((trial_dir / "metrics.json").read_text())["build"]["layers"]
        assert len(layers) == trial.user_attrs["details"]["build"]["layer_count"] > 0
        assert all("name" in layer and "type" in layer for layer in layers)


def test_byte_identical_engines_are_deduplicated(rtx_study):
    results, study = rtx_study
    digests: dict[str, int] = {}
    for trial in sorted(study.trials, key=lambda t: t.number):
        if trial.state != optuna.trial.TrialState.COMPLETE or "duplicate_of" in trial.user_attrs:
            continue
        digest = trial.user_attrs["digest"]
        if digest in digests:
            assert trial.user_attrs["shared_measurement_with_trial"] == digests[digest]
            assert not (results / "rtx" / "trials" / str(trial.number) / "engine.plan").exists()
        else:
            digests[digest] = trial.number
            assert "shared_measurement_with_trial" not in trial.user_attrs
    assert len(digests) >= 2  # knobs that change the engine (tf32, aux streams) were tried


def test_the_report_lists_builds_and_layers(rtx_study):
    results, _ = rtx_study
    report = (results / "rtx" / "report.md").read_text()
    assert "## Builds" in report
    assert "## Engine layers: trial 0" in report


def test_export_writes_the_engine_and_the_rebuild_commands(rtx_study, tmp_path):
    results, study = rtx_study
    out = tmp_path / "deploy"
    assert main(["export", "rtx", "-o", str(out), "--trial", "0", "--results-dir", str(results)]) == 0
    assert (out / "engine.plan").is_file()
    commands = json.loads((out / "manifest.json").read_text())["commands"]
    assert any("--saveEngine=engine.plan" in c for c in commands.values())
    assert any("polygraphy convert" in c for c in commands.values())


def test_a_model_with_an_unsupported_op_fails_its_trials_with_the_parsers_message(tmp_path):
    node = helper.make_node("Det", ["x"], ["y"], name="determinant")
    graph = helper.make_graph(
        [node],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    results = tmp_path / "results"
    code = main(
        [
            "start",
            str(path),
            "--target",
            "tensorrt-rtx",
            "--build-only",
            "--foreground",
            "--trials",
            "4",
            "--study",
            "det",
            "--results-dir",
            str(results),
        ]
    )
    assert code == 0
    study = load(results, "det")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    built = [t for t in failed if t.user_attrs["reason"].startswith("build:")]
    assert built
    assert all(
        "operator: Det" in t.user_attrs["reason"] and "UNSUPPORTED_NODE" in t.user_attrs["reason"] for t in built
    )
    # Quantization fails before the build, with its own reason (no operator to quantize).
    assert all(t in built or "no operator to quantize" in t.user_attrs["reason"] for t in failed)
    assert len([t for t in study.trials if t.state.is_finished()]) == 4


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_symmetric_int8_of_the_example_model_builds_on_tensorrt_rtx(tmp_path, method):
    import numpy as np

    from autotune.passes import apply_precision
    from autotune.targets.base import TargetOptions
    from autotune.targets.tensorrt import TensorRTRTXTarget

    example = Path(__file__).resolve().parent.parent / "examples" / "example.onnx"
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32)} for _ in range(4)]
    quantized = apply_precision(
        onnx.load(str(example)), "int8", calibration_feeds=feeds, scheme="symmetric", calibration_method=method
    )
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    path = tmp_path / "int8.onnx"
    onnx.save(quantized, str(path))
    target = TensorRTRTXTarget(TargetOptions(cache_dir=tmp_path, build_only=True))
    built = target.build(path, {"precision": "int8"}, tmp_path / "build", {"images": [1, 3, 96, 96]})
    assert built.artifact.stat().st_size > 0
    assert any("Int8" in dt or "INT8" in dt.upper() for layer in built.info["layers"] for dt in layer["datatypes"])
