"""The exported engine is the measured one (issue 28 item 4), on real TensorRT-RTX builds.

An engine built by a trial, rebuilt by the exported `polygraphy convert` line, and described by
the exported `tensorrt_rtx` lines has one profiling verbosity and one set of builder flags; the
paired run opens the trial's own engine file, and the manifest's digest is of that file. This
machine builds engines but runs none: the paired run's choice of file is exercised for real,
its timing (which needs a GPU) is not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from autotune.targets._tensorrt_commands import BUILD_PROFILING_VERBOSITY, TIMED_NVTX_VERBOSITY
from autotune.targets.base import TargetOptions
from autotune.targets.tensorrt import TensorRTRTXTarget
from autotune.trial import PairedRequest, TrialRequest, paired_sides, run_trial

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed"
)

# Knobs whose builder-config read-back differs from TensorRT-RTX's defaults, one of them (TF32
# off) only reachable through the exported postprocess script.
CONFIG = {
    "precision": "fp32",
    "batch_size": 2,
    "builder_optimization_level": 5,
    "tiling_optimization_level": "FAST",
    "l2_limit_for_tiling": 4194304,
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """Trial 0 of a build-only TensorRT-RTX study, through `run_trial`, and its export."""
    from autotune.measure import StopRule
    from autotune.verify import Tolerance
    from tests.conftest import make_tiny_model

    root = tmp_path_factory.mktemp("export")
    model = make_tiny_model(root / "tiny.onnx")
    request = TrialRequest(
        number=0,
        config=dict(CONFIG),
        model_path=model,
        target_name="tensorrt-rtx",
        target_options=TargetOptions(cache_dir=root, build_only=True),
        input_pool={"x": np.zeros((4, 3, 8, 8), np.float32)},
        dynamic_batch=True,
        reference_outputs={},
        tolerance=Tolerance(),
        stop_rule=StopRule(),
        workdir=root / "trials" / "0",
    )
    result = run_trial(request)
    assert result.state == "complete", result.reason
    return request, result


def export(request, result, dest: Path) -> dict[str, str]:
    """What `write_deploy_dir` writes for a TensorRT target: model, target files, commands."""
    from autotune.targets.base import Built

    target = TensorRTRTXTarget(request.target_options)
    built = Built(artifact=request.workdir / "engine.plan", info=result.build, digest=result.digest)
    shutil.copyfile(request.workdir / "model.onnx", dest / "model.onnx")
    target.export(built, request.config, dest)
    return target.deploy_commands(built, request.config)


def test_the_exported_polygraphy_command_rebuilds_the_trials_engine_with_its_verbosity_and_flags(trial, tmp_path):
    request, result = trial
    commands = export(request, result, tmp_path)
    trial_engine = tmp_path / "engine.plan"
    assert sha256(trial_engine) == result.build["engine_sha256"]  # export ships the trial's file
    trial_engine.rename(tmp_path / "trial.plan")

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        commands["polygraphy"], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    log = proc.stdout + proc.stderr
    held = result.build["builder_config"]
    verbosity = re.search(r"Profiling Verbosity\s*\|\s*ProfilingVerbosity\.(\w+)", log)
    assert verbosity is not None, log
    assert verbosity.group(1) == held["profiling_verbosity"] == BUILD_PROFILING_VERBOSITY
    flags = re.search(r"Flags\s*\|\s*\[([^\]]*)\]", log)
    assert flags is not None, log
    # Polygraphy's table also lists network flags (STRONGLY_TYPED), and is printed before the
    # postprocess script clears TF32: compare the builder flags other than TF32 there, and let
    # the engine bytes below show that the script ran.
    import tensorrt_rtx as trt

    printed = {f.strip() for f in flags.group(1).split(",")} & set(trt.BuilderFlag.__members__)
    assert printed - {"TF32"} == set(held["flags"]) - {"TF32"}
    assert "TF32" not in held["flags"]
    # Same config, same TensorRT-RTX: the same bytes (a CPU build of this model is deterministic).
    assert sha256(tmp_path / "engine.plan") == sha256(tmp_path / "trial.plan") == result.build["engine_sha256"]


def _options(line: str) -> dict[str, str]:
    return dict(word.partition("=")[::2] for word in shlex.split(line)[1:])


def test_the_exported_trtexec_lines_say_what_the_builder_config_held_and_how_the_trial_timed(trial, tmp_path):
    request, result = trial
    commands = export(request, result, tmp_path)
    held = result.build["builder_config"]
    build = _options(commands["tensorrt_rtx"])
    assert build["--profilingVerbosity"].upper() == held["profiling_verbosity"]
    assert ("--noTF32" in build) is ("TF32" not in held["flags"])
    assert int(build["--builderOptimizationLevel"]) == held["builder_optimization_level"]
    assert ("NONE", "FAST", "MODERATE", "FULL")[int(build["--tilingOptimizationLevel"])] == held[
        "tiling_optimization_level"
    ]
    assert int(build["--l2LimitForTiling"]) == held["l2_limit_for_tiling"]
    assert "--skipInference" in build  # it would otherwise time at the build's verbosity

    timing = _options(commands["tensorrt_rtx timing"])
    assert timing["--loadEngine"] == "engine.plan"  # the shipped file itself
    assert timing["--shapes"] == build["--optShapes"] == "x:2x3x8x8"
    assert timing["--profilingVerbosity"].upper() == result.build["timed_nvtx_verbosity"] == TIMED_NVTX_VERBOSITY
    assert not {"--stronglyTyped", "--useCudaGraph"} & (set(build) | set(timing))


def test_the_timed_context_uses_the_verbosity_the_timing_command_passes():
    from types import SimpleNamespace

    import tensorrt_rtx as trt

    from autotune.targets._tensorrt_runtime import quiet_nvtx

    context = SimpleNamespace(nvtx_verbosity=trt.ProfilingVerbosity.DETAILED)
    quiet_nvtx(trt, context)
    assert context.nvtx_verbosity.name == TIMED_NVTX_VERBOSITY


def _paired_request(request, tmp_path: Path, artifact: Path | None) -> PairedRequest:
    return PairedRequest(
        target_name="tensorrt-rtx",
        target_options=request.target_options,
        model_a=request.workdir / "model.onnx",
        config_a=dict(CONFIG),
        model_b=request.workdir / "model.onnx",
        config_b=dict(CONFIG),
        input_pool=request.input_pool,
        dynamic_batch=True,
        workdir=tmp_path / "paired",
        artifact_a=artifact,
        artifact_b=artifact,
    )


def test_the_paired_run_opens_the_trials_own_engine_without_rebuilding(trial, tmp_path):
    request, result = trial
    engine = request.workdir / "engine.plan"
    target = TensorRTRTXTarget(request.target_options)

    sides = paired_sides(_paired_request(request, tmp_path, engine), target)

    assert [s.built.artifact for s in sides] == [engine, engine]
    assert all(
        s.measured == {"sha256": result.build["engine_sha256"], "reused": True, "path": str(engine)} for s in sides
    )
    assert not list((tmp_path / "paired").rglob("engine.plan"))  # nothing was built


def test_a_paired_side_whose_engine_is_gone_is_built_and_its_digest_recorded(trial, tmp_path):
    request, _ = trial
    target = TensorRTRTXTarget(request.target_options)

    sides = paired_sides(_paired_request(request, tmp_path, tmp_path / "pruned" / "engine.plan"), target)

    for side in sides:
        assert side.measured["reused"] is False
        assert side.built.artifact == tmp_path / "paired" / side.label / "engine.plan"
        assert side.measured["sha256"] == sha256(side.built.artifact)


# --------------------------------------------------------------------------- the manifest


@pytest.fixture(scope="module")
def rtx_study(tmp_path_factory):
    from autotune.cli import main
    from tests.conftest import make_tiny_model

    root = tmp_path_factory.mktemp("rtx-export")
    model = make_tiny_model(root / "tiny.onnx")
    results = root / "results"
    args = ["start", str(model), "--target", "tensorrt-rtx", "--build-only", "--foreground", "--trials", "4"]
    assert main([*args, "--study", "rtx", "--results-dir", str(results)]) == 0
    return optuna.load_study(study_name="rtx", storage=f"sqlite:///{results / 'rtx' / 'study.db'}")


def pair_without_a_gpu(request: PairedRequest) -> dict:
    """`run_paired` with its engine choice real and its timing invented (no GPU here): B 1.5x A."""
    sides = paired_sides(request, TensorRTRTXTarget(request.target_options))
    return {
        "speedup_median": 1.5,
        "speedup_p25": 1.4,
        "speedup_p75": 1.6,
        "rounds": 3,
        "a_ms_per_sample_median": 0.3,
        "b_ms_per_sample_median": 0.2,
        "measured_artifacts": {side.label: side.measured for side in sides},
    }


def _answer_with_paired_speedup(study, tmp_path: Path):
    """Finalize's paired measurement of a finalist against trial 0 (`measure_speedup`), stored as
    the answer at its batch, as `choose_answers` does."""
    from autotune.answer import Answer
    from autotune.finalize import measure_speedup
    from autotune.report import trial_by_number

    zero = trial_by_number(study, 0)
    assert zero is not None
    candidate = next(
        t
        for t in study.trials
        if t.number > 0 and t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    )
    batch = int(candidate.user_attrs.get("batch_size", 1))
    speedup = measure_speedup(study, zero, candidate, batch, 3, pair_without_a_gpu)
    answer = Answer(
        batch, candidate.number, "faster", speedup, speedup.best_ms_per_sample, [candidate.number], candidate.number
    )
    study.set_user_attr("answers", {str(batch): answer.as_dict()})
    return candidate, speedup


def test_the_manifests_engine_digest_is_the_one_the_paired_run_measured(rtx_study, tmp_path):
    from autotune.export import write_deploy_dir
    from autotune.layout import trial_dir

    candidate, speedup = _answer_with_paired_speedup(rtx_study, tmp_path)
    engine = trial_dir(Path(rtx_study.user_attrs["study_dir"]), candidate.number) / "engine.plan"
    assert speedup.best_artifact_sha256 == sha256(engine)  # it measured the trial's own file

    write_deploy_dir(rtx_study, candidate, tmp_path / "best")

    manifest = json.loads((tmp_path / "best" / "manifest.json").read_text())
    assert manifest["artifact"]["sha256"] == sha256(tmp_path / "best" / "engine.plan") == speedup.best_artifact_sha256
    assert manifest["artifact"]["paired_measured_sha256"] == speedup.best_artifact_sha256
    assert manifest["artifact"]["is_the_measured_one"] is True and "note" not in manifest["artifact"]
    assert manifest["artifact"]["timed_nvtx_verbosity"] == TIMED_NVTX_VERBOSITY
    timing = (tmp_path / "best" / "tensorrt_rtx_timing.sh").read_text()
    assert "Times the exported engine" in timing and "--loadEngine=engine.plan" in timing
    # the scripts state the batch and shapes they were tuned at (issue 29), and time at them
    stated = "# Tuned and measured at batch "
    assert stated in timing and all(f"{name} {shape}" in timing for name, shape in manifest["input_shapes"].items())
    rebuild = next(p for p in (tmp_path / "best").glob("*.sh") if "timing" not in p.name).read_text()
    assert all(f"{name} {shape}" in rebuild for name, shape in manifest["input_shapes"].items())


def test_a_shipped_engine_other_than_the_measured_one_is_said_in_the_manifest(rtx_study, tmp_path):
    from autotune.export import write_deploy_dir
    from autotune.layout import trial_dir

    candidate, speedup = _answer_with_paired_speedup(rtx_study, tmp_path)
    engine = trial_dir(Path(rtx_study.user_attrs["study_dir"]), candidate.number) / "engine.plan"
    original = engine.read_bytes()
    try:
        engine.write_bytes(original + b"\0")  # another engine than the paired run opened
        write_deploy_dir(rtx_study, candidate, tmp_path / "best")
    finally:
        engine.write_bytes(original)

    shipped = json.loads((tmp_path / "best" / "manifest.json").read_text())["artifact"]
    assert shipped["is_the_measured_one"] is False
    assert shipped["paired_measured_sha256"] == speedup.best_artifact_sha256 != shipped["sha256"]
    assert speedup.best_artifact_sha256[:12] in shipped["note"]
