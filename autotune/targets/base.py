"""The narrow interface every target implements.

A target turns a (transformed) ONNX model plus a configuration into something that runs,
runs it, and exports it. The study code never knows which target runs: it only sees
this interface, the knob space the target declares, and the measurements it returns.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

Feeds = dict[str, np.ndarray]
Config = Mapping[str, Any]


@dataclass
class Built:
    """What `Target.build` produced.

    Args:
        artifact (Path): the deployable file (an ONNX model, a TensorRT plan).
        info (dict): facts about the build to record with the trial (build time, size, layers).
        digest (str): content hash of what would actually run, used to share measurements
            between configurations that produce identical artifacts. Default: "".
    """

    artifact: Path
    info: dict[str, Any] = field(default_factory=dict)
    digest: str = ""


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


class Target(abc.ABC):
    """One way to deploy a model (ONNX Runtime, TensorRT, TensorRT-RTX).

    Subclasses declare `name`, the knobs they understand (`knob_names`), the precisions
    they can run (`precisions`), and the quantization scheme they want for INT8/FP8.
    """

    name: ClassVar[str]
    knob_names: ClassVar[frozenset[str]]
    knob_prefixes: ClassVar[tuple[str, ...]] = ()  # families of knobs, e.g. "tactic."
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    quantization_scheme: ClassVar[str] = "symmetric"

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
                needed. Default: False. A plugin may leave this argument out; it is then
                called without it.
        """

    @classmethod
    def needs_gpu(cls, options: TargetOptions) -> bool:
        """Whether a trial of this target must hold a GPU (Ray `num_gpus=1`). Default: False."""
        return False

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

        Default: precision choices are filtered by `precisions`; other knobs keep all choices.
        """
        if knob == "precision":
            return [c for c in choices if c in self.precisions]
        return list(choices)

    @abc.abstractmethod
    def build(
        self, model_path: Path, config: Config, workdir: Path, input_shapes: Mapping[str, Sequence[int]]
    ) -> Built:
        """Builds the candidate; raises BuildError with the first real error on failure.

        Args:
            model_path (Path): the ONNX model after graph and precision passes.
            config (Mapping): one value per knob of this target's space (inactive knobs absent).
            workdir (Path): a fresh directory for this trial's files.
            input_shapes (Mapping[str, Sequence[int]]): concrete shape of every input at the
                configuration's batch size (the optimization profile's opt shape).
        """

    @abc.abstractmethod
    def open(self, built: Built, config: Config) -> Session:
        """Opens a session that runs the built candidate."""

    def export(self, built: Built, config: Config, dest: Path) -> list[Path]:
        """Copies what deployment needs into `dest`; returns the files written."""
        import shutil

        dest.mkdir(parents=True, exist_ok=True)
        out = dest / built.artifact.name
        shutil.copyfile(built.artifact, out)
        return [out]

    def deploy_commands(self, built: Built, config: Config) -> dict[str, str]:
        """Command lines that rebuild or run the same candidate outside autotune."""
        return {}
