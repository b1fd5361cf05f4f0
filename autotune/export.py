"""Exporting a trial: the deployment directory (model, target files, runnable commands,
manifest.json with configuration, measurements, the paired speedup, versions and host)."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from autotune.answer import answer_for_trial, details
from autotune.layout import INPUTS_FILE, MANIFEST_FILE, trial_dir
from autotune.model import file_sha256
from autotune.report import tolerance_line
from autotune.study._records import FLAT_ACCURACY, FLAT_MEASUREMENTS, regenerate_model
from autotune.targets import target_class
from autotune.targets.base import Built, TargetOptions, TunedInputs
from autotune.trial import MODEL_FILE

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


# Where the tool an exported script calls comes from: trtexec and tensorrt_rtx are not in the
# pip wheels a study runs on, so a script says so instead of failing with "command not found".
TOOL_SOURCES = {
    "trtexec": "it ships in bin/ of TensorRT's tar/zip download and deb packages, not in the tensorrt pip wheel",
    "tensorrt_rtx": "it ships in bin/ of the TensorRT-RTX SDK download, not in the tensorrt-rtx pip wheel",
    "polygraphy": "pip install polygraphy",
}


def runnable_script(
    command: str, purpose: str = "Rebuilds the engine from model.onnx", tuned: TunedInputs | None = None
) -> str:
    """A POSIX shell script that runs `command` from the export directory, and first checks that
    the tool it calls is on PATH (one line naming where it comes from, exit 127, otherwise);
    `purpose` is its first comment, then the batch and input shapes the study tuned (`tuned`)."""
    words = shlex.split(command, comments=True)
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # leading VAR=value settings
        words.pop(0)
    lines = ["#!/bin/sh", f"# {purpose}; run it in this directory."]
    if tuned is not None:
        lines.append(f"# Tuned and measured at {tuned.describe()}.")
    lines.append('cd "$(dirname "$0")"')
    if words:
        tool = words[0]
        source = TOOL_SOURCES.get(tool, "put it on PATH")
        lines += [
            f"# {tool}: {source}.",
            f"command -v {shlex.quote(tool)} >/dev/null 2>&1 || {{ echo {shlex.quote(f'{tool}: not found on PATH; {source}')} >&2; exit 127; }}",
        ]
    return "\n".join([*lines, command, ""])


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the libraries a result depends on (plus `extra` packages)."""

    versions = {"python": platform.python_version()}
    for package in (
        *extra,
        "autotune",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "onnx-graphsurgeon",
        "polygraphy",
        "optuna",
        "ray",
        "numpy",
        "tensorrt",
        "tensorrt-rtx-cu13",
        "tensorrt_rtx",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
    }
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            facts["gpus"] = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return facts


def tuned_inputs(study: optuna.Study, trial: FrozenTrial) -> TunedInputs | None:
    """The batch and input shapes `trial` was tuned and measured at: its batch, and the study's
    held-out inputs at that batch (their dim 0 is the batch where it is dynamic; a static batch
    is the model's own); None where the study's inputs are not on disk."""

    path = Path(study.user_attrs.get("study_dir", "")) / INPUTS_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    if not arrays:
        return None
    dynamic = bool(study.user_attrs.get("dynamic_batch"))
    first = next(iter(arrays.values()))
    batch = int(trial.user_attrs.get("batch_size", trial.params.get("batch_size", 1)))
    if not dynamic:
        batch = int(first.shape[0]) if first.ndim else 1
    shapes = {
        name: [batch, *map(int, array.shape[1:])] if dynamic and array.ndim else list(map(int, array.shape))
        for name, array in arrays.items()
    }
    return TunedInputs(batch, shapes, {name: str(array.dtype) for name, array in arrays.items()})


def write_deploy_dir(study: optuna.Study, trial: FrozenTrial, dest: Path) -> list[Path]:
    """Writes the deployable files of `trial` into `dest`: model after passes, target files,
    manifest.json with configuration, measurements, errors, the paired speedup against the
    defaults at the same batch and the A/A noise floor, versions and host, and commands."""

    study_dir = Path(study.user_attrs.get("study_dir", ""))
    source_dir = trial_dir(study_dir, trial.number)
    model = source_dir / MODEL_FILE
    if not model.exists():
        model = regenerate_model(study, trial, source_dir)
    dest.mkdir(parents=True, exist_ok=True)
    written = [dest / MODEL_FILE]
    shutil.copyfile(model, dest / MODEL_FILE)
    target_name = study.user_attrs["target"]
    target = target_class(target_name)(TargetOptions.from_study_attrs(study.user_attrs))
    artifact = target.trial_artifact(source_dir) or model
    tuned = tuned_inputs(study, trial)
    built = Built(
        artifact=artifact,
        info=dict(details(trial).get("build", {})),
        digest=trial.user_attrs.get("digest", ""),
        tuned=tuned,
    )
    if artifact != model:
        written += target.export(built, trial.params, dest)
    shipped = exported_artifact(study, trial, dest / artifact.name if artifact != model else None)
    commands = target.deploy_commands(built, trial.params)
    for name, text in commands.items():
        suffix = {"python": ".py"}.get(name, ".sh")
        path = dest / f"{name.replace(' ', '_')}{suffix}"
        # "<tool> timing": a command that times the exported files rather than rebuilding them
        purpose = "Times the exported engine as the study timed it" if name.endswith(" timing") else None
        script = runnable_script(text, purpose, tuned) if purpose else runnable_script(text, tuned=tuned)
        path.write_text(script if suffix == ".sh" else text + "\n")
        if suffix == ".sh":
            path.chmod(0o755)
        written.append(path)
    manifest = {
        "study": study.study_name,
        "trial": trial.number,
        "target": target_name,
        "config": trial.params,
        "measurements": {
            **{k: trial.user_attrs[k] for k in (*FLAT_MEASUREMENTS, "batch_size") if k in trial.user_attrs},
            **details(trial).get("measurement", {}),
        },
        "errors": {
            **{k: trial.user_attrs[k] for k in FLAT_ACCURACY if k in trial.user_attrs},
            "per_output": details(trial).get("errors_per_output", {}),
            "judges": details(trial).get("judges", {}),
        },
        "tolerance": {"atol": study.user_attrs.get("atol"), "rtol": study.user_attrs.get("rtol")},
        "accuracy": {
            "mode": study.user_attrs.get("accuracy_mode"),
            "gate": tolerance_line(study.user_attrs),
            "output_roles": study.user_attrs.get("output_roles", []),
            "judge_limits": study.user_attrs.get("judge_limits"),
        },
        "build": details(trial).get("build", {}),
        "artifact": shipped,
        "rewrites": details(trial).get("rewrites", {}),
        "batch_size": int(trial.user_attrs.get("batch_size", 1)),
        "input_shapes": tuned.shapes if tuned is not None else None,
        "speedup_over_defaults": _answer_speedup(study, trial),
        "answer": _answer_of(study, trial),
        "aa_control": study.user_attrs.get("aa_control"),
        "commands": commands,
        "versions": library_versions(),
        "host": host_facts(),
        "model_sha256": study.user_attrs.get("model_sha256"),
    }
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    written.append(dest / MANIFEST_FILE)
    return written


def measured_artifact_sha256(study: optuna.Study, trial: FrozenTrial) -> str | None:
    """sha256 of the file finalize's paired run measured for `trial` where it is an answer (the
    candidate's side, or the defaults' side when the defaults are the answer); None when no
    paired run measured it, or it recorded no digest (a study finalized before digests)."""
    answer = answer_for_trial(study, trial.number)
    if answer is None or answer.speedup is None:
        return None
    speedup = answer.speedup
    side = speedup.best_artifact_sha256 if answer.trial == answer.paired_winner else speedup.default_artifact_sha256
    return side or None


def exported_artifact(study: optuna.Study, trial: FrozenTrial, path: Path | None) -> dict[str, Any] | None:
    """The manifest's `artifact`: the deployed file (`path`; None: the model itself deploys), its
    sha256, the sha256 of what the paired run measured, and whether the two are one file. A
    mismatch (a paired run that had to rebuild: TensorRT's tactic choice is not deterministic)
    is said, never hidden: the speedup then belongs to another engine than the one shipped."""
    if path is None or not path.is_file():
        return None

    digest = file_sha256(path)
    measured = measured_artifact_sha256(study, trial)
    entry: dict[str, Any] = {
        "file": path.name,
        "sha256": digest,
        "paired_measured_sha256": measured,
        "is_the_measured_one": None if measured is None else measured == digest,
    }
    info = details(trial).get("build", {})
    if info.get("timed_nvtx_verbosity"):
        entry["timed_nvtx_verbosity"] = info["timed_nvtx_verbosity"]
    if measured is not None and measured != digest:
        entry["note"] = (
            f"the paired speedup was measured on engine {measured[:12]}, not on this file ({digest[:12]}): "
            "its trial's engine was not on disk for the paired run, which built another"
        )
    return entry


def _answer_of(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
    answer = answer_for_trial(study, trial.number)
    return answer.as_dict() if answer is not None else None


def _answer_speedup(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
    """The paired speedup against the defaults at the trial's batch, when it is the answer
    there and measurably faster (None otherwise: never a speedup the run did not show)."""
    answer = answer_for_trial(study, trial.number)
    if answer is None or answer.verdict != "faster" or answer.speedup is None:
        return None
    return asdict(answer.speedup)
