"""TensorRT and TensorRT-RTX targets: build engines through Polygraphy, time them with CUDA events.

Each build runs in its own process (`_tensorrt_build.py`) with a time limit, so a builder
crash, hang or memory blow-up fails one trial and nothing else. The build log (VERBOSE, with
DETAILED profiling verbosity) is kept with the trial; the per-layer table and the first real
error are read from it.

Capability detection, never version strings: a knob or a choice is offered only where the
installed module has the enum member or attribute it needs (`supported_choices`).

Each builder knob is one object in `_tensorrt_knobs.KNOBS` (its name, capability check,
CreateConfig argument or IBuilderConfig setter, read-back, trtexec and `polygraphy convert`
flags and postprocess-script line); `_tensorrt_knobs.knob_table()` renders what they declare.
Besides them: batch_size is the optimization profile (--minShapes/--optShapes/--maxShapes,
--trt-*-shapes); cuda_graph is a runtime knob (CUDA-graph capture when timing; the trtexec timing
line's --useCudaGraph on 10.x, --noCudaGraph when off on 11.x); the profiling verbosity is fixed:
built DETAILED (the layer table), timed at NVTX LAYER_NAMES_ONLY. The Built.info["builder_config"]
read-back is what the IBuilderConfig held. The 10.x INT8/FP8 flags are never offered (see
MISLEADING_FLAG_PRECISIONS).

What each TensorRT version offers, read from its real bindings: docs/tensorrt-versions.md.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import onnx
from packaging.version import Version

from autotune.errors import BuildError
from autotune.passes.precision import PRECISIONS
from autotune.targets import _tensorrt_knobs
from autotune.targets._tensorrt_commands import (
    BUILD_PROFILING_VERBOSITY,
    ENGINE_FILE,
    POSTPROCESS_SCRIPT_FILE,
    TIMED_NVTX_VERBOSITY,
    TIMING_CACHE_FILE,
    deploy_commands,
    postprocess_script,
)
from autotune.targets._tensorrt_log import first_error, layer_from_inspector, parse_layer_table
from autotune.targets._tensorrt_profile import profile_tensorrt
from autotune.targets._tensorrt_runtime import TensorRTSession
from autotune.targets.base import Built, Config, Feeds, Session, Target, TargetOptions
from autotune.targets.cuda_timing import cuda_runtime_available, visible_gpu

if TYPE_CHECKING:
    from packaging.version import Version

_BUILD_SCRIPT = Path(__file__).with_name("_tensorrt_build.py")
BUILD_LOG_FILE = "build.log"

INSTALL_GUIDE_URL = "https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html"
RTX_INSTALL_GUIDE_URL = (
    "https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/installing-tensorrt-rtx/installing.html"
)

# Flags that build something other than what their name says, so they are never offered.
MISLEADING_FLAG_PRECISIONS = {
    "int8_flag": "the INT8 flag without a calibrator or Q/DQ gives no INT8 engine on TensorRT 10 "
    "(and trtexec --int8 uses dummy ranges); use precision 'int8' (Q/DQ with calibration)",
    "fp8_flag": "FP8 only comes from Q/DQ nodes on every TensorRT version; use precision 'fp8'",
}
# First Polygraphy that works with TensorRT 11 and TensorRT-RTX: up to 0.49.20 every build
# reads config.int8_calibrator (gone in 11; guarded from 0.49.22), 0.49.26 adds the TensorRT-RTX
# backend (polygraphy.backend.tensorrt_rtx). Keep equal to pyproject's floor (a test checks).
MIN_POLYGRAPHY = "0.49.26"


# --------------------------------------------------------------------------- environment


def _run_helper(mode: str, flavor: str, request: dict[str, Any], timeout_s: float, log_path: Path) -> dict[str, Any]:
    """Runs `_tensorrt_build.py MODE` in a fresh process; returns its JSON result.

    Raises:
        BuildError: the process failed, crashed or ran past `timeout_s`; the message names
            the first real error in its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autotune-trt-") as tmp:
        request = dict(request, flavor=flavor, result_path=str(Path(tmp) / "result.json"))
        request_path = Path(tmp) / "request.json"
        request_path.write_text(json.dumps(request))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.run(
                    [sys.executable, str(_BUILD_SCRIPT), mode, str(request_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise BuildError(f"{flavor} build timed out after {timeout_s:g} s (log: {log_path})") from None
        if proc.returncode != 0:
            text = log_path.read_text(errors="replace")
            if proc.returncode < 0:
                name = signal.Signals(-proc.returncode).name
                raise BuildError(f"{flavor} builder process died with {name}: {first_error(text)} (log: {log_path})")
            raise BuildError(f"{flavor} build failed: {first_error(text)}")
        return json.loads(Path(request["result_path"]).read_text())


# --------------------------------------------------------------------------- knobs → settings


def onnx_input_dims(model_path: Path) -> dict[str, list[int | None]]:
    """Graph inputs (initializers excluded) and their dims; None marks a dynamic dim."""

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    dims: dict[str, list[int | None]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = value.type.tensor_type.shape
        dims[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    return dims


def optimization_profile(
    input_dims: Mapping[str, Sequence[int | None]], input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, list[list[int]]] | None:
    """min/opt/max per input for a model with dynamic dims; None when every input is static.

    opt = max = the configured shape (batch size included); min has batch 1 where the batch
    dim is dynamic, so the engine also serves smaller batches. Other dynamic dims are fixed.
    """
    if all(d is not None for dims in input_dims.values() for d in dims):
        return None
    profile = {}
    for name, dims in input_dims.items():
        if name not in input_shapes:
            if any(d is None for d in dims):
                raise BuildError(f"input {name!r} has dynamic dims {dims} and no shape was given for it")
            shape = [int(d) for d in dims]  # type: ignore[arg-type]
        else:
            shape = [int(d) for d in input_shapes[name]]
        low = list(shape)
        if dims and dims[0] is None:
            low[0] = 1
        profile[name] = [low, shape, list(shape)]
    return profile


def builder_settings(
    config: Config,
    *,
    flavor: str,
    profile: Mapping[str, Any] | None = None,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Translates a configuration into the settings `_tensorrt_build.py` applies.

    Each knob of `_tensorrt_knobs.KNOBS` writes its own entries; knobs absent from `config`
    keep TensorRT's defaults (nothing is set for them).
    """
    precision = str(config.get("precision", "tf32"))
    if precision in MISLEADING_FLAG_PRECISIONS:
        raise BuildError(f"precision {precision!r} is not offered: {MISLEADING_FLAG_PRECISIONS[precision]}")
    settings: dict[str, Any] = {}
    for knob in _tensorrt_knobs.KNOBS:
        settings.update(knob.settings(config, flavor=flavor))
    settings.update(
        # the layer table needs DETAILED; timing lowers the context's NVTX (TIMED_NVTX_VERBOSITY)
        profiling_verbosity=BUILD_PROFILING_VERBOSITY,
        profile=dict(profile) if profile else None,
        use_gpu=use_gpu,
    )
    return settings


# --------------------------------------------------------------------------- the target


class TensorRTTarget(Target):
    """NVIDIA TensorRT 10.x / 11.x through Polygraphy.

    Args:
        options (TargetOptions): study-wide settings. Default: TargetOptions().
        capabilities (dict | None): what the installed module offers (see
            `_tensorrt_build.capabilities_of`); probed in a child process when None.
            Default: None.
    """

    name: ClassVar[str] = "tensorrt"
    module_name: ClassVar[str] = "tensorrt"
    # The builder knobs are those `_tensorrt_knobs.KNOBS` declares; batch_size (the profile),
    # calibration_method (the precision pass) and cuda_graph (the runtime) are not builder knobs.
    knob_names: ClassVar[frozenset[str]] = _tensorrt_knobs.knob_names() | {
        "batch_size",
        "calibration_method",
        "cuda_graph",
    }
    knob_prefixes: ClassVar[tuple[str, ...]] = (*_tensorrt_knobs.knob_prefixes(), "pass.")
    precisions: tuple[str, ...] = PRECISIONS  # every precision the graph passes produce
    quantization_scheme: ClassVar[str] = "symmetric"
    artifact_files: ClassVar[tuple[str, ...]] = (ENGINE_FILE,)
    log_files: ClassVar[tuple[str, ...]] = (BUILD_LOG_FILE,)
    auto_rank: ClassVar[int] = 20  # where TensorRT and a GPU are present, --target auto picks it

    def __init__(self, options: TargetOptions | None = None, capabilities: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._capabilities = dict(capabilities) if capabilities is not None else None

    # -- availability -----------------------------------------------------------------

    @classmethod
    def needs_gpu(cls, options: TargetOptions) -> bool:
        """Measuring needs a GPU per trial; build-only trials do not."""
        return not options.build_only

    @classmethod
    def _install_hint(cls) -> str:
        return (
            "TensorRT is not installed: pip install 'autotune[tensorrt]' (CUDA 12) or 'autotune[tensorrt-cu13]' "
            f"(CUDA 13), from NVIDIA's index, --extra-index-url https://pypi.nvidia.com; see {INSTALL_GUIDE_URL}"
        )

    @classmethod
    def unavailable_reason(cls, build_only: bool = False) -> str | None:
        """None when usable; else one line naming the fix.

        Args:
            build_only (bool): engines are only built, never run, so no GPU is needed where
                the module can build without one (TensorRT-RTX). Default: False.
        """
        if importlib.util.find_spec(cls.module_name) is None:
            return cls._install_hint()
        if importlib.util.find_spec("polygraphy") is None:
            return f"Polygraphy is not installed: pip install 'polygraphy>={MIN_POLYGRAPHY}'"
        installed = _distribution_version("polygraphy")
        if installed is not None and _version_tuple(installed) < _version_tuple(MIN_POLYGRAPHY):
            return (
                f"Polygraphy {installed} is too old for TensorRT 11 and TensorRT-RTX: "
                f"pip install -U 'polygraphy>={MIN_POLYGRAPHY}'"
            )
        return cls._device_reason(build_only)

    @classmethod
    def _device_reason(cls, build_only: bool) -> str | None:
        gpu = visible_gpu()
        if not gpu.get("count"):
            # Full TensorRT cannot even create a builder without a GPU.
            return (
                "TensorRT is installed but no NVIDIA GPU is visible"
                f" ({gpu.get('error', 'no CUDA device')}); TensorRT needs one to build engines"
            )
        if build_only:
            return None
        if not cuda_runtime_available():
            return "timing engines needs cuda-python: pip install 'autotune[tensorrt]' (or: pip install cuda-python)"
        return cuda_python_mismatch(cls.module_name)

    def describe(self) -> str:
        gpu = visible_gpu()
        where = gpu.get("name", "no GPU")
        mode = ", build only" if self.options.build_only else ""
        return f"{self.name} {self._caps().get('version', '')} on {where}{mode}"

    # -- capabilities -----------------------------------------------------------------

    def _caps(self) -> dict[str, Any]:
        if self._capabilities is None:
            self._capabilities = _probe_capabilities(self.name)
        return self._capabilities

    def supported_choices(self, knob: str, choices: Sequence[Any]) -> list[Any]:
        """Keeps the choices the installed TensorRT has; [] drops the knob.

        A builder knob decides itself (`_tensorrt_knobs.BuilderKnob.offered`: where the probed
        module has what it `needs`; precision: graph precisions whose DataType exists plus the
        10.x flag precisions; tactic.<S>: where TacticSource has S; build_route: "default" plus
        every route of `all_build_routes`, "*" expanding to all). cuda_graph: dropped in
        build-only mode (nothing is run, and it must not split identical engines into two
        trials).
        """
        knob_object = _tensorrt_knobs.knob_for(knob)
        if knob_object is not None:
            return knob_object.offered(knob, choices, self._caps(), self)
        if knob == "cuda_graph":
            return [] if self.options.build_only else list(choices)
        if knob == "quantization":  # TensorRT runs explicit (static) Q/DQ only
            return [c for c in choices if c in self.quantization_modes]
        return list(choices)

    # -- timing cache -----------------------------------------------------------------

    def timing_cache_path(self) -> Path | None:
        """`<cache_dir>/timing-<module>-<version>-<gpu>-sm<cc>.cache`, or None without cache_dir.

        One file per (GPU model, compute capability, TensorRT version): a cache from another
        GPU or version is useless to TensorRT.
        """
        if self.options.cache_dir is None:
            return None
        gpu = visible_gpu()
        if gpu.get("count"):
            major, minor = gpu.get("cc", [0, 0])
            device = f"{re.sub(r'[^A-Za-z0-9]+', '-', gpu.get('name', 'gpu')).strip('-')}-sm{major}{minor}"
        else:
            device = "nogpu"
        version = self._caps().get("version", "unknown")
        return Path(self.options.cache_dir) / f"timing-{self.module_name}-{version}-{device}.cache"

    # -- build ------------------------------------------------------------------------

    def _use_gpu(self) -> bool:
        return False

    def settings_for(self, model_path: Path, config: Config, input_shapes: Mapping[str, Sequence[int]]) -> dict:
        """The builder settings for a trial (see `builder_settings`)."""
        profile = optimization_profile(onnx_input_dims(model_path), input_shapes)
        return builder_settings(config, flavor=self.name, profile=profile, use_gpu=self._use_gpu())

    def build(
        self, model_path: Path, config: Config, workdir: Path, input_shapes: Mapping[str, Sequence[int]]
    ) -> Built:
        """Builds an engine in a child process; raises BuildError with the first real error.

        Built.info: build_time_s (builder only), build_wall_s (with process start),
        engine_size_bytes, layer_count, layers (see `parse_layer_table`), builder_config
        (what the IBuilderConfig held), settings, engine_sha256, timing_cache, build_log.
        Built.digest: sha256 of the engine bytes, plus "+cuda_graph" when that runtime knob
        is on (identical bytes timed differently are different candidates).
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        engine_path = workdir / ENGINE_FILE
        log_path = workdir / BUILD_LOG_FILE
        settings = self.settings_for(Path(model_path), config, input_shapes)
        cache_path = self.timing_cache_path()
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
        request = {
            "model_path": str(model_path),
            "engine_path": str(engine_path),
            "timing_cache_path": str(cache_path) if cache_path else None,
            "settings": settings,
            "inspect": self.name == "tensorrt" and bool(visible_gpu().get("count")),
        }
        start = time.perf_counter()
        result = _run_helper("build", self.name, request, self.options.build_timeout_s, log_path)
        wall_s = time.perf_counter() - start
        log_text = log_path.read_text(errors="replace")
        layers = parse_layer_table(log_text)
        if result.get("inspector_layers"):
            layers = [layer_from_inspector(layer) for layer in result["inspector_layers"]] or layers
        info = {
            "build_time_s": result["build_time_s"],
            "build_wall_s": wall_s,
            "engine_size_bytes": result["engine_size_bytes"],
            "layer_count": len(layers),
            "layers": layers,
            "builder_config": result.get("builder_config", {}),
            "settings": settings,
            "engine_sha256": result["engine_sha256"],
            "timing_cache": str(cache_path) if cache_path else None,
            "build_log": str(log_path),
            "trt_module": self.module_name,
            "trt_version": self._caps().get("version", ""),
            # Built DETAILED for the layer table; timed with the context's NVTX lowered. A
            # deployment that keeps the context's default (DETAILED) runs slower than measured.
            "timed_nvtx_verbosity": TIMED_NVTX_VERBOSITY,
            "weak_typing": self._weak_typing(),
        }
        digest = result["engine_sha256"] + ("+cuda_graph" if config.get("cuda_graph") else "")
        return Built(artifact=engine_path, info=info, digest=digest)

    def describe_builder_configs(self, model_path: Path, configs: Sequence[Config]) -> list[dict[str, Any]]:
        """Creates (without building) the IBuilderConfig of each configuration and reads it back.

        One child process for all of them; each entry is `_tensorrt_build.read_back_config`.
        """
        dims = onnx_input_dims(Path(model_path))
        shapes = {name: [1 if d is None else d for d in ds] for name, ds in dims.items()}
        profile = optimization_profile(dims, shapes)
        request = {
            "model_path": str(model_path),
            "settings_list": [
                builder_settings(c, flavor=self.name, profile=profile, use_gpu=self._use_gpu()) for c in configs
            ],
        }
        with tempfile.TemporaryDirectory(prefix="autotune-trt-describe-") as tmp:
            result = _run_helper("describe", self.name, request, self.options.build_timeout_s, Path(tmp) / "log")
        return result["configs"]

    # -- run --------------------------------------------------------------------------

    def open(self, built: Built, config: Config) -> Session:
        """A TensorRT runtime session on the GPU (needs a GPU and cuda-python)."""
        return TensorRTSession(built.artifact, self.module_name, use_cuda_graph=bool(config.get("cuda_graph", False)))

    def layer_profile(self, built: Built, model_path: Path, config: Config, feeds: Feeds) -> dict[str, Any]:
        """The engine's layer table from the build, timed per layer through `IProfiler` where a GPU
        runs the engine (`_tensorrt_profile.profile_tensorrt`); untimed, with the reason in its
        note, in build-only mode or when the engine was pruned."""

        engine = built.artifact if built.artifact.name in self.artifact_files and built.artifact.is_file() else None
        profile = profile_tensorrt(
            built.info.get("layers", []),
            model=onnx.load(str(model_path), load_external_data=False),
            engine_path=None if self.options.build_only else engine,
            module_name=self.module_name,
            feeds=feeds,
        )
        if self.options.build_only:
            profile["note"] = profile["note"].replace("(no engine to time)", "(a build-only study runs no engine)")
        return profile

    # -- export -----------------------------------------------------------------------

    def export(self, built: Built, config: Config, dest: Path) -> list[Path]:
        """engine.plan, the timing cache, the build log, build_info.json, and (when the
        configuration needs one) the Polygraphy config postprocess script: the files the
        `deploy_commands` name."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        engine = dest / ENGINE_FILE
        shutil.copyfile(built.artifact, engine)
        written.append(engine)
        cache = built.info.get("timing_cache")
        if cache and Path(cache).exists():
            out = dest / TIMING_CACHE_FILE
            shutil.copyfile(cache, out)
            written.append(out)
        log = built.info.get("build_log")
        if log and Path(log).exists():
            out = dest / BUILD_LOG_FILE
            shutil.copyfile(log, out)
            written.append(out)
        script = postprocess_script(
            built.info.get("settings", {}), self.module_name, built.info.get("builder_config", {})
        )
        if script:
            out = dest / POSTPROCESS_SCRIPT_FILE
            out.write_text(script)
            written.append(out)
        out = dest / "build_info.json"
        out.write_text(json.dumps({k: v for k, v in built.info.items() if k != "layers"}, indent=2, default=str))
        written.append(out)
        return written

    def deploy_commands(self, built: Built, config: Config) -> dict[str, str]:
        """`trtexec` (`tensorrt_rtx` for RTX) and `polygraphy convert` lines that rebuild the engine,
        and a trtexec line that times the exported engine as the trial did (see
        `_tensorrt_commands.deploy_commands`); paths are those `export` writes. Which trtexec
        flags apply is decided by what the TensorRT that built it offers (recorded with the build
        as `weak_typing`; else this installation's), never by its version string."""
        settings = built.info.get("settings") or builder_settings(config, flavor=self.name)
        weak_typing = built.info.get("weak_typing")
        if weak_typing is None:
            weak_typing = bool(settings.get("legacy_flags")) or self._weak_typing()
        return deploy_commands(
            settings,
            built.info.get("builder_config", {}),
            config,
            module_name=self.module_name,
            weak_typing=bool(weak_typing),
        )

    def _weak_typing(self) -> bool:
        """Whether this TensorRT has the weak-typing builder flags (10.x's `BuilderFlag.FP16`);
        True when its builder flags are unknown (no capability probe)."""
        flags = self._caps().get("builder_flags") or []
        return not flags or "FP16" in flags


@functools.cache
def _probe_capabilities(flavor: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="autotune-trt-caps-") as tmp:
        return _run_helper("capabilities", flavor, {}, 120.0, Path(tmp) / "log")


class TensorRTRTXTarget(TensorRTTarget):
    """NVIDIA TensorRT-RTX (`tensorrt_rtx`) through Polygraphy's CreateConfigRTX.

    Builds real engines on a CPU-only machine (build-only mode); runs them only on RTX-class
    GPUs (TensorRT-RTX does not support sm_90 data-center Hopper).
    """

    name: ClassVar[str] = "tensorrt-rtx"
    module_name: ClassVar[str] = "tensorrt_rtx"
    # Never picked by --target auto: it runs only on RTX-class GPUs, where full TensorRT (or
    # ONNX Runtime) is what an unspecified study tunes; name it to tune it.
    auto_rank: ClassVar[int] = 0

    @classmethod
    def _install_hint(cls) -> str:
        return (
            "TensorRT-RTX is not installed: pip install 'autotune[tensorrt-rtx]' "
            f"(tensorrt-rtx-cu13); see {RTX_INSTALL_GUIDE_URL}"
        )

    @classmethod
    def _device_reason(cls, build_only: bool) -> str | None:
        if build_only:
            return None  # TensorRT-RTX builds on the CPU
        gpu = visible_gpu()
        if not gpu.get("count"):
            return (
                "TensorRT-RTX is installed but no NVIDIA GPU is visible "
                f"({gpu.get('error', 'no CUDA device')}); use --build-only to build and describe engines"
            )
        if list(gpu.get("cc", [])) == [9, 0]:
            return f"TensorRT-RTX does not run on {gpu.get('name', 'sm_90')} (sm_90); use --target tensorrt or --build-only"
        if not cuda_runtime_available():
            return "timing engines needs cuda-python: pip install 'autotune[tensorrt-rtx]'"
        return cuda_python_mismatch(cls.module_name)

    def _use_gpu(self) -> bool:
        # Compile for the GPU it will run on; a build-only study keeps TensorRT-RTX's default.
        return not self.options.build_only and bool(visible_gpu().get("count"))


def cuda_python_mismatch(module_name: str) -> str | None:
    """One line when the installed cuda-python's CUDA major differs from the TensorRT wheels'
    (tensorrt-cu12-* beside cuda-python 13 needs a CUDA 13 driver and runtime), else None.

    Read from the installed distributions' names and versions; None when either is unknown
    (a TensorRT from a tar or deb package has no wheel metadata).
    """
    stem = "tensorrt-rtx" if module_name == "tensorrt_rtx" else "tensorrt"
    trt_major = next(
        (
            major
            for major in (12, 13)
            for suffix in ("-bindings", "-libs", "")
            if _distribution_version(f"{stem}-cu{major}{suffix}")
        ),
        None,
    )
    cuda = _distribution_version("cuda-bindings") or _distribution_version("cuda-python")
    if trt_major is None or cuda is None:
        return None
    cuda_major = _version_tuple(cuda).major
    if cuda_major == trt_major:
        return None
    extra = {"tensorrt_rtx": "tensorrt-rtx"}.get(module_name, "tensorrt" if trt_major == 12 else "tensorrt-cu13")
    return (
        f"cuda-python {cuda} is for CUDA {cuda_major}, but {stem} is built for CUDA {trt_major}: "
        f"pip install 'cuda-python>={trt_major}.0,<{trt_major + 1}' (or 'autotune[{extra}]')"
    )


def _distribution_version(name: str) -> str | None:

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _version_tuple(version: str) -> Version:

    return Version(version)


__all__ = [
    "TensorRTRTXTarget",
    "TensorRTTarget",
    "builder_settings",
    "first_error",
    "optimization_profile",
    "parse_layer_table",
    "visible_gpu",
]
