"""Packaging: what `pip install .` (a wheel, not `-e`) gives a user is enough to tune a model."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_tiny_model

REPO = Path(__file__).resolve().parent.parent


def test_the_default_search_spaces_are_package_data_and_the_top_level_folder_shows_them():
    from importlib import resources

    from autotune.targets.onnxruntime import OnnxRuntimeTarget

    path = OnnxRuntimeTarget.default_space_path()
    assert path.is_file() and path.parent == REPO / "autotune" / "search_spaces", path
    shipped = {f.name for f in resources.files("autotune.search_spaces").iterdir()}
    assert {"onnxruntime.yaml", "onnxruntime-cuda.yaml", "tensorrt.yaml", "tensorrt-rtx.yaml"} <= shipped
    # The top-level search_spaces/ a user browses is the same files, not a copy that drifts.
    assert (REPO / "search_spaces").resolve() == path.parent


def test_version_flag_names_the_installed_version(capsys):
    from importlib import metadata

    from autotune.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"autotune {metadata.version('autotune')}"


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


@pytest.mark.slow
def test_a_wheel_installed_into_a_fresh_venv_runs_a_study_from_outside_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("autotune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for space in ("onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx"):
        assert f"autotune/search_spaces/{space}.yaml" in names

    # A fresh venv holding only the wheel; its dependencies come from this project's venv
    # through a .pth file (appended after the venv's own site-packages, whose autotune wins).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    (_site_packages(python) / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]

    work = tmp_path / "user"  # outside the repository: nothing may be found relative to it
    work.mkdir()
    make_tiny_model(work / "tiny.onnx")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    where = subprocess.run(
        [str(python), "-c", "import autotune; print(autotune.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    autotune = venv / "bin" / "autotune"
    version = subprocess.run([str(autotune), "--version"], cwd=work, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == "autotune 0.1.0", version

    run = subprocess.run(
        [str(autotune), "start", "tiny.onnx", "--target", "onnxruntime", "--trials", "3", "--foreground",
         "--max-measure-s", "0.05", "--results-dir", "results"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert (work / "results" / "tiny" / "study.db").is_file()
    export = subprocess.run(
        [str(autotune), "export", "tiny", "-o", "deploy", "--results-dir", "results"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]
    assert (work / "deploy" / "manifest.json").is_file()
