"""The smallest target written to `autotune.targets.base.Target` alone, for the contract test.

It does not inherit from the ONNX Runtime target: it runs candidates with an ONNX Runtime CPU
session of its own, and declares everything the rest of autotune asks a target (its knobs and
space, precisions, quantization scheme and precision kernels, availability, the files a build
leaves and which of them deploy). Loaded as the plugin "tests.minimal_target:MinimalTarget".

A build writes ONNX Runtime's optimized graph (`minimal_model.ort.onnx`, the artifact) and a
one-line record of the session options (`minimal_build.json`) into the trial directory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autotune.errors import BuildError
from autotune.targets.base import Built, Config, Feeds, Session, Target

ARTIFACT_FILE = "minimal_model.ort.onnx"
RECORD_FILE = "minimal_build.json"
_LEVELS = {"basic": "ORT_ENABLE_BASIC", "all": "ORT_ENABLE_ALL"}


class MinimalSession(Session):
    """One ONNX Runtime CPU session on the built artifact."""

    def __init__(self, artifact: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimized at build
        self._session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))

    def timer(self, feeds: Feeds) -> Callable[[], float]:
        def run_once() -> float:
            start = time.perf_counter()
            self._session.run(self._outputs, feeds)
            return time.perf_counter() - start

        return run_once


class MinimalTarget(Target):
    """ONNX Runtime's optimized graph as a deployable file; one knob."""

    name: ClassVar[str] = "minimal"
    knob_names: ClassVar[frozenset[str]] = frozenset({"graph_optimization_level", "precision"})
    precisions: tuple[str, ...] = ("fp32",)
    quantization_scheme: ClassVar[str] = "asymmetric_u8"
    artifact_files: ClassVar[tuple[str, ...]] = (ARTIFACT_FILE,)
    log_files: ClassVar[tuple[str, ...]] = (RECORD_FILE,)

    @classmethod
    def unavailable_reason(cls, build_only: bool = False) -> str | None:
        import importlib.util

        return None if importlib.util.find_spec("onnxruntime") else "needs onnxruntime: pip install onnxruntime"

    @classmethod
    def default_space_path(cls) -> Path:
        return Path(__file__).with_name("minimal_target.yaml")

    def build(
        self, model_path: Path, config: Config, workdir: Path, input_shapes: Mapping[str, Sequence[int]]
    ) -> Built:
        import onnxruntime as ort

        workdir = Path(workdir)
        artifact = workdir / ARTIFACT_FILE
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS[config.get("graph_optimization_level", "all")]
        )
        options.optimized_model_filepath = str(artifact)
        try:
            ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
            raise BuildError(f"minimal target: ONNX Runtime refused the model ({exc})") from None
        record: dict[str, Any] = {"graph_optimization_level": config.get("graph_optimization_level", "all")}
        (workdir / RECORD_FILE).write_text(json.dumps(record) + "\n")
        digest = hashlib.sha256(artifact.read_bytes() + json.dumps(dict(input_shapes), sort_keys=True).encode())
        return Built(
            artifact=artifact, info={"artifact_size_bytes": artifact.stat().st_size}, digest=digest.hexdigest()
        )

    def open(self, built: Built, config: Config) -> Session:
        return MinimalSession(built.artifact)

    def deploy_commands(self, built: Built, config: Config) -> dict[str, str]:
        return {"python": f"import onnxruntime\nsession = onnxruntime.InferenceSession({built.artifact.name!r})"}
