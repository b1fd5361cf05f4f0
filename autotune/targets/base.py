"""The narrow interface every target implements.

A target turns a (transformed) ONNX model plus a configuration into something that runs,
runs it, and exports it. The study code never knows which target runs: it only sees
this interface, the knob space the target declares, and the measurements it returns.
"""

from __future__ import annotations

import abc
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

Feeds = dict[str, np.ndarray]
Config = Mapping[str, Any]


@dataclass(frozen=True)
class TunedInputs:
    """The batch and the input shapes a candidate was tuned and measured at: what a deploy
    script states and runs at (export fills it in `Built.tuned`).

    Args:
        batch_size (int): the batch measured (the model's own where its batch is static).
        shapes (dict[str, list[int]]): each input's shape at that batch, by input name.
        dtypes (dict[str, str]): each input's numpy dtype name, by input name.
    """

    batch_size: int
    shapes: dict[str, list[int]]
    dtypes: dict[str, str]

    def describe(self) -> str:
        """ "batch 2 at inputs x [2, 3, 8, 8] float32"."""
        inputs = ", ".join(f"{name} {shape} {self.dtypes[name]}" for name, shape in self.shapes.items())
        return f"batch {self.batch_size} at inputs {inputs}"


@dataclass
class Built:
    """What `Target.build` produced.

    Args:
        artifact (Path): the deployable file (an ONNX model, a TensorRT plan): the first of
            the target's `artifact_files`, or the transformed model when it declares none.
        info (dict): facts about the build to record with the trial (build time, size, layers).
        digest (str): content hash of what would actually run, used to share measurements
            between configurations that produce identical artifacts. Default: "".
        tuned (TunedInputs | None): the batch and input shapes it was tuned at, where export
            knows them (`deploy_commands` then writes scripts that run at them). Default: None.
    """

    artifact: Path
    info: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    tuned: TunedInputs | None = None


class Session(abc.ABC):
    """A runnable instance of a built candidate, bound to fixed input shapes."""

    @abc.abstractmethod
    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Runs once and returns outputs by name, as host arrays."""

    @abc.abstractmethod
    def timer(self, feeds: Feeds) -> Callable[[], float]:
        """Returns a callable that runs once on `feeds` and returns its latency in seconds.

        Inputs are staged once, outside the timed region, where the target can do that
        (device-resident buffers on a GPU).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases the session's resources."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class TargetOptions:
    """Study-wide settings a target is constructed with (picklable, so workers get them).

    Args:
        cache_dir (Path | None): where shared caches live (TensorRT's timing cache). Default: None.
        build_only (bool): build and describe candidates without running them. Default: False.
        build_timeout_s (float): limit for one build. Default: 600.
    """

    cache_dir: Path | None = None
    build_only: bool = False
    build_timeout_s: float = 600.0

    def as_study_attrs(self) -> dict[str, Any]:
        """Every field as a JSON value: what a study records as its "target_options" attribute."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    @classmethod
    def from_study_attrs(cls, attrs: Mapping[str, Any]) -> TargetOptions:
        """The options a study's trials ran with, from its user attributes: the one way every
        command that reads a study (finalize, report, export, profile, regeneration) makes them.

        A study recorded before "target_options" was kept gives its `build_only` and its
        directory (where its trials' caches lived); the other fields keep their defaults.

        Raises:
            ValueError: the recorded options name a field this class does not have.
        """
        recorded = attrs.get("target_options")
        if not isinstance(recorded, Mapping):
            study_dir = attrs.get("study_dir")
            return cls(cache_dir=Path(study_dir) if study_dir else None, build_only=bool(attrs.get("build_only")))
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(recorded) - names)
        if unknown:
            raise ValueError(
                f"target_options: unknown field(s) {', '.join(unknown)} (fields: {', '.join(sorted(names))})"
            )
        values = dict(recorded)
        if values.get("cache_dir") is not None:
            values["cache_dir"] = Path(values["cache_dir"])
        return cls(**values)


class Target(abc.ABC):
    """One way to deploy a model (ONNX Runtime, TensorRT, TensorRT-RTX): the whole contract.

    Everything the rest of autotune knows about a target is here; a subclass of this class
    alone (no other target's code) can run a study, a report and an export. It declares:

    - `name`: the `--target` name, the `target:` of its space files, and the study's record.
    - `knob_names` / `knob_prefixes`: the knobs of a space it understands.
    - `precisions`: the precision choices it can run (`supported_choices` filters by them).
    - `quantization_scheme` and `precision_kernels`: how the trial pipeline writes an INT8/FP8
      or FP16/BF16 model for it (`autotune.trial.transform_model`; report regenerates a pruned
      trial's model with the same two).
    - `artifact_files` / `log_files`: the files `build` leaves in a trial's directory that
      deploy, and those that only explain the build. `trial_artifact` finds the artifact;
      finalize keeps both kinds with the trial on the dashboard; `export` writes what deploys.
    - `auto_rank`: whether, and before which others, `--target auto` picks it.

    and implements `unavailable_reason` (with `build_only`), `build`, `open`, and optionally
    `needs_gpu`, `describe`, `default_space_path`, `supported_choices`, `export`,
    `deploy_commands` and `layer_profile` (where the time goes, for `autotune profile`).
    """

    name: ClassVar[str]
    knob_names: ClassVar[frozenset[str]]
    knob_prefixes: ClassVar[tuple[str, ...]] = ()  # families of knobs, e.g. "tactic."
    # The precision choices it can run. Like `precision_kernels`, not a ClassVar: an instance
    # may narrow or widen them for the device it found (ONNX Runtime on CUDA runs fp16).
    precisions: tuple[str, ...] = ("fp32",)
    # "symmetric" (int8 activations and weights, zero point 0: TensorRT) or "asymmetric_u8"
    # (uint8 activations: ONNX Runtime's CPU kernels); see `passes.apply_precision`'s `scheme`.
    quantization_scheme: ClassVar[str] = "symmetric"
    # How it can run INT8 (the `quantization` knob's choices, `passes.QUANTIZATION_MODES`):
    # "static" Q/DQ everywhere; "dynamic" only where the runtime has dynamic INT8 kernels.
    quantization_modes: tuple[str, ...] = ("static",)
    # Which ops FP16/BF16 may cast (`passes.apply_precision`'s `kernels`): "onnx_schema" (every
    # op whose ONNX schema allows the type) or "onnxruntime_cpu" (only ops ONNX Runtime's CPU
    # provider has a kernel for in it). Set per instance where it depends on the device.
    precision_kernels: str = "onnx_schema"
    # Files `build` writes into the trial directory that deployment needs, the first being
    # `Built.artifact` (TensorRT: ("engine.plan",)). Empty: the transformed model (model.onnx),
    # which every export holds, is what deploys (ONNX Runtime).
    artifact_files: ClassVar[tuple[str, ...]] = ()
    # Files `build` writes into the trial directory that explain a build (TensorRT's build
    # log): kept with the trial on the dashboard, not deployed unless `export` copies them.
    log_files: ClassVar[tuple[str, ...]] = ()
    # `--target auto` picks the usable registered target of highest rank (see
    # `autotune.targets.resolve_target`); 0: never picked by auto, only when named.
    auto_rank: ClassVar[int] = 0

    def __init__(self, options: TargetOptions | None = None) -> None:
        self.options = options or TargetOptions()

    @property
    def can_measure(self) -> bool:
        """Whether this target runs candidates here (False in build-only mode)."""
        return not self.options.build_only

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls, build_only: bool = False) -> str | None:
        """None when this target can be used here, else a one-line reason with the fix.

        Args:
            build_only (bool): candidates are built, never run (`--build-only`), so no GPU is
                needed. Default: False. Always passed by keyword; a plugin written before this
                argument existed (`unavailable_reason(cls)`) is still called without it (see
                `autotune.targets.unavailable_reason`).
        """

    @classmethod
    def trial_artifact(cls, trial_dir: Path) -> Path | None:
        """The artifact `build` left in `trial_dir`: the first of `artifact_files` there, else
        None (no artifact besides the transformed model, or one since pruned)."""
        return next((trial_dir / name for name in cls.artifact_files if (trial_dir / name).is_file()), None)

    @classmethod
    def needs_gpu(cls, options: TargetOptions) -> bool:
        """Whether a trial of this target must hold a GPU (Ray `num_gpus=1`). Default: False."""
        return False

    @classmethod
    def knobs_named_by(cls, reason: str) -> dict[str, Any]:
        """The knob values a failure's reason names as its cause, for certain (a property of the
        model and the knob, not of the trial): one such failure is a rule, where others need two
        (`autotune.rules.FailureRules.named_by`). Default: none."""
        return {}

    @classmethod
    def probe_first(cls) -> list[dict[str, Any]]:
        """Knob values that fail on some models whatever else a configuration holds (values
        `knobs_named_by` names): until a trial holding them has completed, a second one waits
        instead of running beside it (`autotune.study._loop.held_back`). Default: none."""
        return []

    def describe(self) -> str:
        """A short human description of where this target runs (provider, device)."""
        return self.name

    @classmethod
    def default_space_path(cls) -> Path:
        """The search space shipped for this target: `autotune/search_spaces/<name>.yaml`, package
        data found with importlib.resources, so a wheel install has it (the repository's top-level
        `search_spaces/` is a link to the same files)."""
        return Path(str(resources.files("autotune.search_spaces") / f"{cls.name}.yaml"))

    def supported_choices(self, knob: str, choices: Sequence[Any]) -> list[Any]:
        """Filters a knob's choices to those this installation can run (capability detection).

        Default: precision choices are filtered by `precisions`, quantization choices by
        `quantization_modes`; other knobs keep all choices.
        """
        if knob == "precision":
            return [c for c in choices if c in self.precisions]
        if knob == "quantization":
            return [c for c in choices if c in self.quantization_modes]
        return list(choices)

    @abc.abstractmethod
    def build(
        self, model_path: Path, config: Config, workdir: Path, input_shapes: Mapping[str, Sequence[int]]
    ) -> Built:
        """Builds the candidate; raises BuildError with the first real error on failure.

        Args:
            model_path (Path): the ONNX model after graph and precision passes.
            config (Mapping): one value per knob of this target's space (inactive knobs absent).
            workdir (Path): the trial's own directory (it holds `model_path`); where the
                `artifact_files` and `log_files` are written, under those names.
            input_shapes (Mapping[str, Sequence[int]]): concrete shape of every input at the
                configuration's batch size (the optimization profile's opt shape).
        """

    @abc.abstractmethod
    def open(self, built: Built, config: Config) -> Session:
        """Opens a session that runs the built candidate."""

    def layer_profile(self, built: Built, model_path: Path, config: Config, feeds: Feeds) -> dict[str, Any] | None:
        """Where the built candidate's time goes, per layer or node (`autotune profile`, the report's
        "Where the time goes"); None when this target has no profiler. Default: None.

        Called after the search, never inside a timed measurement; in build-only mode a target
        describes its layers without running them, or returns None.

        Args:
            built (Built): the trial's build as it was left: `artifact` is `trial_artifact` of its
                directory, else the transformed model (pruned, or no `artifact_files`); `info` is
                what `build` recorded, its layer table included.
            model_path (Path): the transformed ONNX model the candidate was built from.
            config (Mapping): the trial's configuration.
            feeds (Feeds): inputs at the configuration's batch size.

        Returns:
            `autotune.targets.layer_profile.finish_profile` of the layers (each with `name`, `op_type`, `class`,
            `precision`, `time_ms` or None when untimed) and facts (`source`, `note`, `runs`,
            `run_ms`, `timing`).

        Raises:
            ProfileError: the candidate cannot be profiled (its model does not load or run).
        """
        return None

    def export(self, built: Built, config: Config, dest: Path) -> list[Path]:
        """Copies what deployment needs, besides the transformed model, into `dest`; returns the
        files written. Called only for a trial with an artifact (`trial_artifact`).

        Default: every one of `artifact_files` found beside `built.artifact`, under its own name.
        """

        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for name in self.artifact_files or (built.artifact.name,):
            source = built.artifact.parent / name
            if source.is_file():
                shutil.copyfile(source, dest / name)
                written.append(dest / name)
        return written

    def deploy_commands(self, built: Built, config: Config) -> dict[str, str]:
        """Command lines that rebuild or run the same candidate outside autotune, by name; export
        writes each as `<name>.sh` (a checked shell script), "python" as `python.py`. Where
        `built.tuned` is given, a script that runs the candidate states that batch and those
        shapes, and runs at them. Default: {}."""
        return {}
