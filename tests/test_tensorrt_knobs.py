"""A TensorRT builder knob is one object (`autotune.targets._tensorrt_knobs`), read by every place
that sets, reads back or exports it; the newest, `workspace_limit_mib`, was added as one object
and a line of tensorrt.yaml, and is built for real here with TensorRT-RTX on the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.errors import UsageError
from autotune.space import load_space
from autotune.targets import _tensorrt_commands, _tensorrt_knobs
from autotune.targets.base import Built, TargetOptions
from autotune.targets.tensorrt import TensorRTRTXTarget, TensorRTTarget, builder_settings

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed")
REPO = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the registry


def test_the_targets_knob_names_are_what_the_knob_objects_declare():
    declared = {knob.name for knob in _tensorrt_knobs.KNOBS}
    names = set(TensorRTTarget.knob_names) | set(TensorRTTarget.knob_prefixes)
    assert declared <= names
    assert names - declared == {"batch_size", "calibration_method", "cuda_graph", "pass."}  # not builder knobs


def test_every_builder_knob_of_the_shipped_space_is_declared_by_one_object():
    data = yaml.safe_load((REPO / "search_spaces" / "tensorrt.yaml").read_text())
    builder_knobs = [n for n in data["knobs"] if _tensorrt_knobs.knob_for(n) is not None]
    assert {_tensorrt_knobs.knob_for(n).name for n in builder_knobs} == {k.name for k in _tensorrt_knobs.KNOBS}


def test_every_setting_a_knob_writes_is_one_it_declares():
    config = {"precision": "fp16_flag", "tactic.CUDNN": True, "workspace_limit_mib": 64, "max_aux_streams": 2}
    for knob in _tensorrt_knobs.KNOBS:
        assert set(knob.settings(config, flavor="tensorrt")) == set(knob.keys()), knob.name
    assert set(builder_settings(config, flavor="tensorrt")) == set(_tensorrt_knobs.settings_keys())


def test_a_misspelled_builder_setting_is_an_error_naming_the_nearest_one():
    settings = builder_settings({}, flavor="tensorrt")
    settings["max_aux_stream"] = 2
    with pytest.raises(
        ValueError, match=r"unknown builder setting 'max_aux_stream' \(did you mean 'max_aux_streams'\?\)"
    ):
        _tensorrt_commands.deploy_commands(settings, {}, {}, module_name="tensorrt")


def test_a_misspelled_knob_in_a_space_file_is_an_error_at_start_naming_the_file_and_the_nearest_knob(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "target: tensorrt\nknobs:\n  workspace_limit_mb: {type: categorical, choices: [-1, 16], default: -1}\n"
    )
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities={})
    with pytest.raises(UsageError) as raised:
        load_space(space, target)
    message = str(raised.value)
    assert message.startswith(f"--space {space}: unknown knob 'workspace_limit_mb'")
    assert "did you mean 'workspace_limit_mib'?" in message
    assert "\n" not in message


class _EchoKnob(_tensorrt_knobs.BuilderKnob):
    """A knob declared in a test: one object, nothing else."""

    name = "echo_level"
    needs = ("IBuilderConfig.echo_level",)

    def trtexec(self, settings: Any, *, weak_typing: bool) -> list[str]:
        return [] if settings.get(self.name) is None else [f"--echoLevel={settings[self.name]}"]

    def polygraphy(self, settings: Any, read_back: Any, *, module_name: str) -> list[str]:
        return []

    def script(self, settings: Any, read_back: Any, *, module_name: str) -> list[str]:
        return [] if settings.get(self.name) is None else [f"    config.echo_level = {settings[self.name]}"]


def test_a_knob_object_alone_reaches_the_settings_both_commands_the_script_and_the_capability_check(monkeypatch):
    monkeypatch.setattr(_tensorrt_knobs, "KNOBS", [*_tensorrt_knobs.KNOBS, _EchoKnob()])  # what @register does

    settings = builder_settings({"echo_level": 2}, flavor="tensorrt")
    assert settings["echo_level"] == 2
    commands = _tensorrt_commands.deploy_commands(settings, {}, {}, module_name="tensorrt")
    assert "--echoLevel=2" in shlex.split(commands["trtexec"])
    assert "config.echo_level = 2" in _tensorrt_commands.postprocess_script(settings)
    assert "--trt-config-postprocess-script" in commands["polygraphy"]  # no flag: the script sets it
    has = TensorRTTarget(TargetOptions(build_only=True), capabilities={"config_attributes": ["echo_level"]})
    assert has.supported_choices("echo_level", [1, 2]) == [1, 2]
    lacks = TensorRTTarget(TargetOptions(build_only=True), capabilities={"config_attributes": []})
    assert lacks.supported_choices("echo_level", [1, 2]) == []


# --------------------------------------------------------------------------- workspace_limit_mib


def test_the_workspace_limit_is_dropped_where_the_module_has_no_workspace_memory_pool():
    # TensorRT 8.4 added MemoryPoolType; a module without it (or without set_memory_pool_limit)
    # is not offered the knob, and a space that asks for it keeps TensorRT's default.
    attributes = ["set_memory_pool_limit", "get_memory_pool_limit"]
    without = TensorRTTarget(TargetOptions(build_only=True), capabilities={"config_attributes": attributes})
    assert without.supported_choices("workspace_limit_mib", [-1, 16]) == []
    caps = {"config_attributes": attributes, "memory_pools": ["WORKSPACE"]}
    with_pool = TensorRTTarget(TargetOptions(build_only=True), capabilities=caps)
    assert with_pool.supported_choices("workspace_limit_mib", [-1, 16]) == [-1, 16]


def test_the_workspace_limit_unset_passes_nothing_and_set_passes_mib_to_both_tools():
    default = builder_settings({"workspace_limit_mib": -1}, flavor="tensorrt")
    assert default["workspace_limit_mib"] is None
    commands = TensorRTTarget(TargetOptions(build_only=True), capabilities={}).deploy_commands(
        Built(artifact=Path("engine.plan"), info={"settings": default, "builder_config": {}}), {}
    )
    assert "memPoolSize" not in commands["trtexec"] and "--pool-limit" not in commands["polygraphy"]

    settings = builder_settings({"workspace_limit_mib": 64}, flavor="tensorrt")
    commands = TensorRTTarget(TargetOptions(build_only=True), capabilities={}).deploy_commands(
        Built(artifact=Path("engine.plan"), info={"settings": settings, "builder_config": {}}), {}
    )
    assert "--memPoolSize=workspace:64" in shlex.split(commands["trtexec"])  # MiB, trtexec's unit
    assert "--pool-limit workspace:64M" in commands["polygraphy"]  # Polygraphy's unit is bytes


@needs_rtx
def test_the_workspace_limit_reaches_the_builder_config_and_unset_keeps_tensorrts_default(tmp_path):
    from tests.conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny.onnx")
    target = TensorRTRTXTarget(TargetOptions(build_only=True))
    space = load_space(target.default_space_path(), target)
    assert space["workspace_limit_mib"].choices == (-1, 16, 64, 256, 1024)  # TensorRT-RTX 1.7 has the pool
    configs = [{"workspace_limit_mib": mib} for mib in space["workspace_limit_mib"].choices]
    held = [got["workspace_limit_mib"] for got in target.describe_builder_configs(model, configs)]
    assert held[1:] == [16, 64, 256, 1024]
    assert held[0] > 1024  # not set: TensorRT's default (the device's memory; 64 GiB on a CPU build)


@needs_rtx
def test_an_engine_built_with_a_workspace_limit_is_rebuilt_byte_for_byte_by_the_exported_polygraphy_line(tmp_path):
    from tests.conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny.onnx")
    target = TensorRTRTXTarget(TargetOptions(cache_dir=tmp_path / "study", build_only=True))
    config = {"workspace_limit_mib": 16, "precision": "fp32"}
    built = target.build(model, config, tmp_path / "trial", {"x": [2, 3, 8, 8]})
    assert built.info["builder_config"]["workspace_limit_mib"] == 16

    dest = tmp_path / "export"
    target.export(built, config, dest)
    (dest / "model.onnx").write_bytes(model.read_bytes())
    commands = target.deploy_commands(built, config)
    assert "--memPoolSize=workspace:16" in shlex.split(commands["tensorrt_rtx"])
    (dest / "engine.plan").rename(dest / "trial.plan")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        commands["polygraphy"], shell=True, cwd=dest, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(dest / "engine.plan") == sha256(dest / "trial.plan") == built.info["engine_sha256"]
