"""One trial: a pure function from a configuration (and the model) to measurements.

    config ──► graph passes ──► precision ──► build ──► verify ──► benchmark ──► result

`run_trial` touches nothing but its own `workdir`, reads no globals and returns a plain
`TrialResult`, so it runs the same in-process, in a Ray worker, or in a test. Every failure
inside becomes a failed result with its reason; nothing escapes as an exception.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from autotune.calibration import sample_count
from autotune.errors import AutotuneError, condense_reason
from autotune.layout import METRICS_FILE, MODEL_FILE, OUTPUTS_FILE, STAGE_FILE
from autotune.measure import StopRule, clear_of, measure_latency, narrow_within, paired_speedup
from autotune.model import axes_like, feeds_at_batch, file_sha256, join_outputs, verification_feeds
from autotune.passes import (
    QUANTIZATION_KNOB,
    PrecisionError,
    apply_passes,
    apply_precision,
    dynamic_layer_count,
    quantize_dynamic_int8,
)
from autotune.sensitivity import KEEP_FLOAT_KNOB, RANKING_CACHE_DIR, quantize_mixed
from autotune.space import PASS_PREFIX
from autotune.targets import target_class
from autotune.targets.base import Built, TargetOptions
from autotune.verify import Tolerance, compare_outputs


@dataclass
class TrialRequest:
    """Everything one trial needs; picklable so a Ray worker can run it unchanged.

    Args:
        number (int): the Optuna trial number.
        config (dict): one value per active knob.
        model_path (Path): the original ONNX model.
        target_name (str): registered target name.
        target_options (TargetOptions): study-wide target settings.
        input_pool (dict): the fixed input samples (dim 0 = samples when batch is dynamic).
        dynamic_batch (bool): whether dim 0 of every input is a batch dimension.
        reference_outputs (dict): FP32 reference outputs on every sample of `input_pool`, keyed
            by batch size (`autotune.study.compute_references`).
        tolerance (Tolerance): accuracy tolerance.
        stop_rule (StopRule): benchmark stop rule.
        workdir (Path): this trial's directory (created).
        shared_measurements (dict): artifact digest -> earlier result summary, so identical
            artifacts are not measured twice. Default: {}.
        calibration_feeds (list | None): INT8/FP8 calibration batches, held apart from
            `input_pool` (what the trial verifies on). Default: None, calibrate on `input_pool`.
    """

    number: int
    config: dict[str, Any]
    model_path: Path
    target_name: str
    target_options: TargetOptions
    input_pool: dict[str, np.ndarray]
    dynamic_batch: bool
    reference_outputs: dict[int, dict[str, np.ndarray]]
    tolerance: Tolerance
    stop_rule: StopRule
    workdir: Path
    shared_measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration_feeds: list[dict[str, np.ndarray]] | None = None


@dataclass
class TrialResult:
    """What a trial returns: state, measurements, errors, build facts and timings."""

    number: int
    config: dict[str, Any]
    state: str  # "complete" | "failed" | "pruned"
    reason: str = ""
    batch_size: int = 1
    measurements: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    rewrites: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    digest: str = ""
    shared_with: int | None = None
    workdir: str = ""

    @property
    def throughput(self) -> float:
        return float(self.measurements.get("throughput", 0.0))

    @property
    def feasible(self) -> bool:
        return self.state == "complete" and bool(self.accuracy.get("passed", False))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def transform_model(
    model_path: Path,
    config: Mapping[str, Any],
    out_path: Path,
    *,
    calibration_feeds: list,
    scheme: str,
    kernels: str = "onnx_schema",
    tolerance: Tolerance | None = None,
    precision_details: dict[str, Any] | None = None,
    sensitivity_cache: Path | None = None,
) -> dict[str, int]:
    """Applies the configuration's graph passes then its precision; writes `out_path`.

    `kernels` says which ops fp16/bf16 may cast (see `apply_precision`). INT8/FP8 with
    `keep_float_layers` > 0 rank their layers by sensitivity and keep that many in float (or
    "auto": the fewest that pass `tolerance` on the calibration feeds, "non_gemm_auto" the same
    keeping GEMM layers fused INT8 kernels; `autotune.sensitivity`);
    `sensitivity_cache` (a directory, default None) shares rankings between trials. What was
    measured goes into `precision_details` when given. Returns rewrites per pass.
    """

    # ONNX Runtime's quantizer logs advice to the root logger; a trial keeps its own output.
    logging.getLogger().setLevel(logging.ERROR)
    model = onnx.load(str(model_path))
    enabled = [name[len(PASS_PREFIX) :] for name, on in config.items() if name.startswith(PASS_PREFIX) and on]
    rewrites: dict[str, int] = {}
    if enabled:
        model, rewrites = apply_passes(model, enabled)
    precision = config.get("precision", "fp32")
    # "*_flag" precisions are TensorRT 10.x builder flags: the graph stays FP32.
    if precision not in ("fp32", "tf32") and not precision.endswith("_flag"):
        # ONNX Runtime's calibrators print progress to stdout; a trial keeps its output quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            if precision == "int8" and config.get(QUANTIZATION_KNOB, "static") == "dynamic":
                if config.get(KEEP_FLOAT_KNOB, 0) not in (0, "0"):
                    raise PrecisionError(
                        f"{KEEP_FLOAT_KNOB}={config[KEEP_FLOAT_KNOB]} repairs static Q/DQ quantization, "
                        f"not {QUANTIZATION_KNOB}=dynamic"
                    )
                model = quantize_dynamic_int8(model)
                if precision_details is not None:
                    count = dynamic_layer_count(model)
                    precision_details.update({"quantization": "dynamic", "quantized_layers": count, "kept_float": []})
            elif precision in ("int8", "fp8"):
                model, details = quantize_mixed(
                    model,
                    precision,
                    calibration_feeds=calibration_feeds,
                    scheme=scheme,
                    calibration_method=config.get("calibration_method", "minmax"),
                    keep=config.get(KEEP_FLOAT_KNOB, 0),
                    tolerance=tolerance,
                    ranking_cache=sensitivity_cache,
                )
                if precision_details is not None:
                    precision_details.update(details)
            else:
                model = apply_precision(
                    model,
                    precision,
                    calibration_feeds=calibration_feeds,
                    scheme=scheme,
                    calibration_method=config.get("calibration_method", "minmax"),
                    kernels=kernels,
                )
    onnx.save(model, str(out_path))
    return rewrites


def calibration_feeds(pool: Mapping[str, np.ndarray], dynamic_batch: bool) -> list[dict[str, np.ndarray]]:
    """One feed per pool sample (batch 1), the calibration set for INT8/FP8."""
    if not dynamic_batch:
        return [dict(pool)]
    count = next(iter(pool.values())).shape[0]
    return [{name: array[i : i + 1] for name, array in pool.items()} for i in range(count)]


def run_trial(request: TrialRequest) -> TrialResult:
    """Runs one configuration end to end; never raises (failures are results)."""
    start = time.perf_counter()
    result = TrialResult(number=request.number, config=dict(request.config), state="failed")
    result.workdir = str(request.workdir)
    stage = "setup"
    try:
        request.workdir.mkdir(parents=True, exist_ok=True)
        target = target_class(request.target_name)(request.target_options)
        batch_size = int(request.config.get("batch_size", 1)) if request.dynamic_batch else 1
        result.batch_size = batch_size

        stage = _enter(request, "graph passes")
        t0 = time.perf_counter()
        model_path = request.workdir / MODEL_FILE
        precision_details: dict[str, Any] = {}
        result.rewrites = transform_model(
            request.model_path,
            request.config,
            model_path,
            calibration_feeds=request.calibration_feeds
            if request.calibration_feeds is not None
            else calibration_feeds(request.input_pool, request.dynamic_batch),
            scheme=target.quantization_scheme,
            kernels=target.precision_kernels,
            tolerance=request.tolerance,
            precision_details=precision_details,
            # beside the trial directories: trials quantizing the same graph rank it once
            sensitivity_cache=request.workdir.parent / RANKING_CACHE_DIR,
        )
        result.timings_s["passes_s"] = time.perf_counter() - t0

        stage = _enter(request, "build")
        t0 = time.perf_counter()
        shapes = concrete_shapes_for(request, batch_size)
        built = target.build(model_path, request.config, request.workdir, shapes)
        result.timings_s["build_s"] = time.perf_counter() - t0
        result.build = dict(built.info)
        if precision_details:
            result.build["mixed_precision"] = precision_details
        result.digest = built.digest

        shared = request.shared_measurements.get(built.digest) if built.digest else None
        if not target.can_measure:
            if shared is not None:
                # The same engine as an earlier trial: keep one copy on disk, point to it.
                result.shared_with = int(shared["number"])
                if built.artifact != model_path and built.artifact.exists():
                    built.artifact.unlink()
            result.state = "complete"
            return result

        if shared is not None:
            result.measurements = dict(shared["measurements"])
            result.accuracy = dict(shared["accuracy"])
            result.shared_with = int(shared["number"])
            result.state = "complete"
            return result

        # every held-out sample, in batches of the trial's size; the first batch is also timed
        batches = verification_feeds(request.input_pool, batch_size, request.dynamic_batch)
        feeds = batches[0]
        with target.open(built, request.config) as session:
            stage = _enter(request, "verify")
            t0 = time.perf_counter()
            parts = [session.infer(batch) for batch in batches]
            reference = request.reference_outputs[batch_size]
            outputs = join_outputs(parts, sample_count(request.input_pool), axes_like(parts, reference), batch_size)
            report = compare_outputs(outputs, reference, request.tolerance)
            result.accuracy = report.as_dict()
            # numpy's stub checks **kwds against the keyword allow_pickle: bool as well
            np.savez(request.workdir / OUTPUTS_FILE, **outputs)  # type: ignore[arg-type]
            result.timings_s["verify_s"] = time.perf_counter() - t0

            stage = _enter(request, "benchmark")
            t0 = time.perf_counter()
            stats = measure_latency(session.timer(feeds), request.stop_rule)
            result.timings_s["benchmark_s"] = time.perf_counter() - t0
        result.measurements = {**stats.as_dict(), "throughput": stats.throughput(batch_size), "batch_size": batch_size}
        if stats.stopped_by == "too_slow":
            result.state = "pruned"
            result.reason = (
                f"too slow: median {stats.latency_ms_p50:.3g} ms per batch after {stats.iterations} runs, over "
                f"{request.stop_rule.slow_factor:g}x the default's {request.stop_rule.reference_latency_s * 1e3:.3g} ms"
            )
        else:
            result.state = "complete"
    except AutotuneError as exc:
        result.state = "failed"
        result.reason = f"{stage}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a trial's crash is its result, never the study's
        result.state = "failed"
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.reason = f"{stage}: {type(exc).__name__}: {condense_reason(str(exc), 400)} ({Path(last.filename).name}:{last.lineno})"
    finally:
        result.timings_s["total_s"] = time.perf_counter() - start
        try:
            (request.workdir / METRICS_FILE).write_text(json.dumps(result.as_dict(), indent=2, default=str))
        except OSError:
            pass
    return result


def _enter(request: TrialRequest, stage: str) -> str:
    (request.workdir / STAGE_FILE).write_text(stage)
    return stage


def concrete_shapes_for(request: TrialRequest, batch_size: int) -> dict[str, list[int]]:
    """Input shapes at `batch_size`, derived from the pool (authoritative for user inputs)."""
    shapes = {}
    for name, array in request.input_pool.items():
        shape = list(array.shape)
        if request.dynamic_batch and shape:
            shape[0] = batch_size
        shapes[name] = shape
    return shapes


__all__ = ["TrialRequest", "TrialResult", "calibration_feeds", "run_trial", "transform_model"]


@dataclass
class PairedRequest:
    """Two built candidates to compare interleaved (A = trial 0's defaults, B = the best).

    `rounds` paired observations, each from one block per candidate of at least `round_s`
    seconds of timed runs after its own warm-up (see `autotune.measure.paired_speedup`).

    `artifact_a` / `artifact_b`: the trial's own built artifact (a TensorRT engine), measured
    as it is, so the paired speedup is that of the file export ships (a rebuild may pick other
    tactics); None, or a file that is gone: built again from the model.
    """

    target_name: str
    target_options: TargetOptions
    model_a: Path
    config_a: dict[str, Any]
    model_b: Path
    config_b: dict[str, Any]
    input_pool: dict[str, np.ndarray]
    dynamic_batch: bool
    workdir: Path
    rounds: int = 21
    round_s: float = 0.2
    # Sequential stopping (finalize inside the budget): after `min_rounds`, the rounds end once
    # the interval clears `floor` (the A/A control's interval; None: never, e.g. the control
    # itself) or `time_limit_s` seconds after the sessions are open (None: no limit).
    min_rounds: int = 0
    floor: tuple[float, float] | None = None
    sequential: bool = False
    # The A/A control's sequential rule instead (`sequential` off): after `min_rounds`, the rounds
    # end once their interquartile interval is at most this wide (`autotune.measure.narrow_within`).
    settle_width: float | None = None
    time_limit_s: float | None = None
    artifact_a: Path | None = None
    artifact_b: Path | None = None


def run_paired(request: PairedRequest) -> dict[str, Any]:
    """Measures A and B in adjacent, order-alternating, warmed-up blocks and returns the paired
    speedup of B over A (`PairedSpeedup.as_dict()`), with `measured_artifacts`: per side, what
    `paired_sides` says it opened."""

    began = time.perf_counter()
    target = target_class(request.target_name)(request.target_options)
    sides = paired_sides(request, target)
    stages_s = {"sides_s": time.perf_counter() - began}  # where a pairing's wall goes (bench/OVERHEAD.md)
    sessions, timers = [], []
    try:
        for side in sides:
            opened = time.perf_counter()
            session = target.open(side.built, side.config)
            sessions.append(session)
            timers.append(session.timer(side.feeds))
            stages_s[f"open_{side.label}_s"] = time.perf_counter() - opened
        rounds_began = time.perf_counter()
        limit = request.time_limit_s
        result = paired_speedup(
            timers[0],
            timers[1],
            batch_a=sides[0].batch,
            batch_b=sides[1].batch,
            rounds=request.rounds,
            round_s=request.round_s,
            min_rounds=request.min_rounds,
            settled=(
                clear_of(request.floor, request.rounds)
                if request.sequential
                else narrow_within(request.settle_width)
                if request.settle_width is not None
                else None
            ),
            deadline=time.monotonic() + limit if limit is not None else None,
        )
        stages_s["rounds_s"] = time.perf_counter() - rounds_began
        return {
            **result.as_dict(),
            "measured_artifacts": {side.label: side.measured for side in sides},
            "stages_s": stages_s,
        }
    finally:
        for session in sessions:
            session.close()


@dataclass
class PairedSide:
    """One side of a paired run, ready to open: label ("a", "b"), what runs, on which feeds, and
    `measured` (`paired_artifact`'s record of the file)."""

    label: str
    built: Built
    config: dict[str, Any]
    feeds: dict[str, np.ndarray]
    batch: int
    measured: dict[str, Any]


def paired_sides(request: PairedRequest, target: Any) -> list[PairedSide]:
    """A and B of `request` as `run_paired` runs them: each the trial's own artifact where it is on
    disk, else built from its model (`paired_artifact`); nothing is opened or timed here."""
    sides = []
    for label, model, config, artifact in (
        ("a", request.model_a, request.config_a, request.artifact_a),
        ("b", request.model_b, request.config_b, request.artifact_b),
    ):
        workdir = request.workdir / label
        workdir.mkdir(parents=True, exist_ok=True)
        batch = int(config.get("batch_size", 1)) if request.dynamic_batch else 1
        feeds = feeds_at_batch(request.input_pool, batch, request.dynamic_batch)
        shapes = {name: list(array.shape) for name, array in feeds.items()}
        built, measured = paired_artifact(target, model, config, workdir, shapes, artifact)
        sides.append(PairedSide(label, built, dict(config), feeds, batch, measured))
    return sides


def paired_artifact(
    target: Any,
    model: Path,
    config: Mapping[str, Any],
    workdir: Path,
    shapes: Mapping[str, list[int]],
    artifact: Path | None,
) -> tuple[Built, dict[str, Any]]:
    """What one side of a paired run measures: the trial's own `artifact` when it is on disk
    (the file export ships), else a build of `model` in `workdir`; and what was measured,
    {"sha256": of the file opened, "reused": whether it is `artifact`, "path"}."""
    if artifact is not None and Path(artifact).is_file():
        digest = file_sha256(Path(artifact))
        built = Built(artifact=Path(artifact), digest=digest)
        return built, {"sha256": digest, "reused": True, "path": str(artifact)}
    built = target.build(model, config, workdir, shapes)
    digest = file_sha256(built.artifact) if built.artifact.is_file() else ""
    return built, {"sha256": digest, "reused": False, "path": str(built.artifact)}
