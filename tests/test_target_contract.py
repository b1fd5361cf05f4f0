"""The target contract (`autotune.targets.base.Target`) is the whole of what autotune asks a target.

A minimal target written to `base.Target` alone (tests/minimal_target.py: no ONNX Runtime target
code) runs a study, a report and an export through the CLI as the plugin
"tests.minimal_target:MinimalTarget"; what it produced is found from what it declares, never
from file names autotune knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from autotune import targets
from autotune.cli import main
from autotune.targets.onnxruntime import OnnxRuntimeTarget
from tests.conftest import make_tiny_model
from tests.minimal_target import ARTIFACT_FILE, RECORD_FILE, MinimalTarget

PLUGIN = "tests.minimal_target:MinimalTarget"
STUDY = "tiny"


def test_the_minimal_target_implements_the_contract_without_the_onnxruntime_target():
    assert not issubclass(MinimalTarget, OnnxRuntimeTarget)
    assert MinimalTarget.__mro__[1] is targets.Target
    assert MinimalTarget.artifact_files == (ARTIFACT_FILE,) and MinimalTarget.log_files == (RECORD_FILE,)


def test_a_registered_target_with_a_higher_auto_rank_is_what_auto_picks(monkeypatch):
    monkeypatch.setitem(targets._REGISTRY, "ranked", f"{__name__}:RankedMinimalTarget")
    target, message = targets.resolve_target("auto")
    assert isinstance(target, RankedMinimalTarget)
    assert message.startswith("target auto: picked minimal")


def test_a_registered_target_of_auto_rank_0_is_never_picked_by_auto(monkeypatch):
    monkeypatch.setitem(targets._REGISTRY, "minimal", PLUGIN)
    target, _ = targets.resolve_target("auto")
    assert not isinstance(target, MinimalTarget)


class RankedMinimalTarget(MinimalTarget):
    auto_rank: ClassVar[int] = 1000


# --------------------------------------------------------------------------- one study, through the CLI


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished 3-trial study of the minimal target, then `autotune report` and `autotune export`."""
    root = tmp_path_factory.mktemp("contract")
    model = make_tiny_model(root / f"{STUDY}.onnx")
    results = root / "results"
    exported = root / "exported"
    common = ["--results-dir", str(results)]
    started = main(["start", str(model), "--foreground", "--no-ray", "--target", PLUGIN, "--trials", "3",
                    "--max-measure-s", "0.05", *common])  # fmt: skip
    reported = main(["report", STUDY, *common])
    export = main(["export", STUDY, "-o", str(exported), *common])
    assert (started, reported, export) == (0, 0, 0)
    return {"study_dir": results / STUDY, "exported": exported}


@pytest.mark.slow
def test_export_writes_the_model_the_declared_artifact_and_the_targets_commands(study_run):
    exported = study_run["exported"]
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["target"] == PLUGIN
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        ["model.onnx", ARTIFACT_FILE, "python.py", "manifest.json", "report.md", "pareto.png"]
    )
    answer_dir = study_run["study_dir"] / "trials" / str(manifest["trial"])
    assert (exported / ARTIFACT_FILE).read_bytes() == (answer_dir / ARTIFACT_FILE).read_bytes()
    assert ARTIFACT_FILE in (exported / "python.py").read_text()


@pytest.mark.slow
def test_export_leaves_out_what_the_target_declares_as_a_build_log(study_run):
    assert (study_run["study_dir"] / "trials" / "0" / RECORD_FILE).is_file()
    assert not (study_run["exported"] / RECORD_FILE).exists()


@pytest.mark.slow
def test_finalize_keeps_the_declared_artifact_and_log_of_the_answer_on_the_dashboard(study_run):
    import optuna
    from optuna.artifacts import get_all_artifact_meta

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{study_run['study_dir'] / 'study.db'}")
    best = study.user_attrs["best_trial"]
    uploaded = {meta.filename for meta in get_all_artifact_meta(study)}
    assert {f"trial-{best}-{ARTIFACT_FILE}", f"trial-{best}-{RECORD_FILE}", f"trial-{best}-model.onnx"} <= uploaded


@pytest.mark.slow
def test_the_report_names_the_plugin_and_the_answer_it_measured(study_run):
    report = (study_run["study_dir"] / "report.md").read_text()
    manifest = json.loads((study_run["exported"] / "manifest.json").read_text())
    # Re-rendered from the database, which never imports a plugin named in it.
    assert "- target: plugin tests.minimal_target.MinimalTarget (not imported from the database)" in report
    assert f"Trial {manifest['trial']}: " in report
    assert "## Pareto front" in report and "batch-1 latency: trial" in report


@pytest.mark.slow
def test_a_target_without_a_profiler_gets_no_profile_and_the_study_says_why(study_run):
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{study_run['study_dir'] / 'study.db'}")
    assert "no profiler" in study.user_attrs["profile_error"]
    assert not (study_run["study_dir"] / "profile.json").exists()
