"""The study spec: `start`'s options, validated into a `StudySpec` (nothing written yet), and the
options stored with a study so that `--resume` inherits every option not given again.

The CLI and the daemon both parse `start` here (`parse_start`); library callers, benchmarks and
tests build the options directly (`start_args(model, trials="5")`) instead of faking a command
line. Which options were *given* is recorded (`args.given`): a resume inherits exactly the others,
so an explicit `--seed 0` is kept even where 0 is the default.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
import onnxruntime as ort

from autotune.calibration import (
    load_inputs,
    load_preprocess_file,
    parse_preprocess,
    parse_preprocess_flags,
    split_samples,
    synthetic_split,
)
from autotune.errors import AutotuneError, UsageError, first_line
from autotune.judges import infer_roles, output_producers, parse_limits, parse_role, role_misfit
from autotune.layout import CALIBRATION_FILE, INPUTS_FILE, check_results_dir_writable, check_study_name, daemon_state
from autotune.measure import StopRule
from autotune.model import (
    POOL_BATCH,
    check_inputs_match_shapes,
    concrete_shapes,
    expand_short_shapes,
    fp32_cpu_session,
    free_memory_bytes,
    load_model_info,
    parse_shape_overrides,
    pool_sha256,
    require_resolved_dims,
    synthetic_samples_that_fit,
    trial_memory_bytes,
)
from autotune.passes.precision import dynamic_quantizable, precision_unavailable
from autotune.space import Knob, load_space, read_space_data, space_sha256
from autotune.study import StudySpec, existing_study_model
from autotune.targets import resolve_target, target_names
from autotune.targets.base import TargetOptions
from autotune.verify import ACCURACY_MODES, BUILTIN_METRICS, Tolerance, load_metric, metric_misfit
from autotune.workers import Executor, InProcessExecutor, RayExecutor

DEFAULT_RESULTS = Path("results")


_BUDGET = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


MAX_DURATION_S = 366 * 24 * 3600.0  # a --budget or --trial-timeout beyond a year is a typo


def parse_budget(text: str, flag: str = "--budget") -> float:
    """Parses a duration like `90s`, `10m`, `2h` or `1h30m` into seconds (UsageError naming
    `flag` otherwise)."""
    match = _BUDGET.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise UsageError(f"{flag} {text!r}: expected a duration like 90s, 10m, 2h or 1h30m")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    seconds = parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds <= 0:
        raise UsageError(f"{flag} {text!r}: must be longer than zero")
    if seconds > MAX_DURATION_S:
        raise UsageError(f"{flag} {text!r}: longer than a year; give the time the study may really take")
    return seconds


def positive_int(flag: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a positive integer") from None
    if number <= 0:
        raise UsageError(f"{flag} {value!r}: must be at least 1")
    return number


def positive_float(flag: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a number") from None
    if not math.isfinite(number):
        raise UsageError(f"{flag} {value!r}: must be a finite number (an infinite limit checks nothing)")
    if not number > 0:
        raise UsageError(f"{flag} {value!r}: must be greater than zero")
    return number


def _study_name(text: str) -> str:
    if "/" in text or "\\" in text or text in (".", ".."):
        raise UsageError(f"--study {text!r}: a study name, not a path (studies live in --results-dir)")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    if not name:
        raise UsageError(f"--study {text!r}: a study name needs letters or digits")
    return check_study_name(name, "--study")


def largest_int(values: Any) -> int:
    """The largest of a knob's values, read off a range's ends (a `batch_size` range 1-10^12 is
    never iterated: that hung `start`), else the largest listed; 1 when there are none."""
    if isinstance(values, range):
        return int(max(values[0], values[-1])) if len(values) else 1
    return max((int(v) for v in values), default=1)


def _synthetic_samples(info: Any, overrides: Any, space: Any) -> int:
    """How many samples each synthetic pool holds (`synthetic_samples_that_fit`); UsageError
    naming --shape when even the largest batch tuned does not fit in free memory: one line,
    before anything is allocated."""

    largest = largest_int(space["batch_size"].values()) if "batch_size" in space else 1
    free = free_memory_bytes()
    if free is None:
        return POOL_BATCH
    samples, need = synthetic_samples_that_fit(info, overrides, largest, free)
    if need > free:
        given = " ".join(f"--shape {name}:{','.join(map(str, dims))}" for name, dims in overrides.items())
        count = samples if info.dynamic_batch else 1
        raise UsageError(
            f"{given or '--shape'}: the synthetic inputs need {need / 2**30:.1f} GiB ({count} samples per pool), "
            f"more than the {free / 2**30:.1f} GiB free; pass smaller shapes"
        )
    return samples


def _check_trial_memory(info: Any, overrides: Any, space: Any, args: argparse.Namespace, space_path: Path) -> None:
    """UsageError when one trial at the largest batch tuned would need more memory than is free
    (`model.trial_memory_bytes`), naming what makes it so: `--shape` (or the model's own shapes)
    when batch 1 does not fit either, else `--batch`, or the space file and its `batch_size` knob
    (a space with batch_size up to 10^8 started, and its daemon died 141 s later: issue 29).
    Refused before anything is written, rather than grown into until the kernel kills processes
    that are not the study's."""

    free = free_memory_bytes()
    largest = largest_int(space["batch_size"].values()) if "batch_size" in space else 1
    need = trial_memory_bytes(info, concrete_shapes(info, largest, overrides)) if free else None
    if need is None or free is None or need <= free:
        return
    given = " ".join(f"--shape {name}:{','.join(map(str, dims))}" for name, dims in overrides.items())
    sizes = f"a trial needs about {need / 2**30:.1f} GiB (weights and the largest tensors at that shape), more than the {free / 2**30:.1f} GiB free"
    one = trial_memory_bytes(info, concrete_shapes(info, 1, overrides)) if largest > 1 else need
    if args.batch is None and largest > 1 and one is not None and one <= free:
        where = f"--space {space_path}" if args.space else f"the default space {space_path}"
        at = f" at {given}" if given else ""
        raise UsageError(
            f"{where}: knob batch_size up to {largest}{at}: {sizes}; give batch_size smaller values "
            "or cap it with --batch"
        )
    what = f"--batch (up to {largest})" if largest > 1 and args.batch is not None else ""
    culprit = " with ".join(part for part in (given or "the model's input shapes", what) if part)
    raise UsageError(f"{culprit}: {sizes}; pass smaller shapes or batches")


def _check_model_runs(
    info: Any, pool: dict[str, np.ndarray], args: argparse.Namespace, calibration: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Runs the FP32 model once on one sample of `pool` here, before anything is written or
    detached (issue 29): inputs with non-finite values, or shapes the model cannot run (a
    Reshape or Resize that needs a static size the --shape changed), are one line naming the
    flag, the input and the runtime's reason. Returns the outputs of that run, by name."""

    if args.inputs:
        what = f"--inputs {args.inputs}"
    else:
        what = f"--shape {' '.join(args.shape)}" if args.shape else f"{info.path.name}'s own input shapes"
    for name, array in [item for feeds in [pool, *calibration] for item in feeds.items()]:
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise UsageError(
                f"{what}: input {name!r} holds {bad} non-finite values (inf or nan); every trial would fail"
            )
    one = {name: array[:1] if info.dynamic_batch else array for name, array in pool.items()}
    shapes = ", ".join(f"{name}:{','.join(map(str, a.shape))}" for name, a in one.items())
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the reason is in the one line below, not printed twice
    try:
        outputs = fp32_cpu_session(info.path).run(None, one, quiet)
    except Exception as exc:  # noqa: BLE001 - any runtime failure here is the user's shape or input
        raise UsageError(f"{what}: the model cannot run at {shapes} in FP32 ({first_line(exc, 200)})") from None
    return dict(zip(info.output_names, outputs, strict=True))


def _check_judging_fits(info: Any, outputs: dict[str, np.ndarray], tolerance: Any, metric_flag: str | None) -> None:
    """UsageError naming --output-role or --metric when an output cannot be judged that way,
    read off the FP32 outputs of one sample (`_check_model_runs`): issue 29's `--metric top1` on
    a detector was accepted, and every trial was then judged by an argmax over box fields."""

    for name, role in tolerance.role_overrides:
        why = role_misfit(role, np.asarray(outputs[name]))
        if why:
            raise UsageError(f"--output-role {name}={role}: {why}")
    if tolerance.metric is None or not info.output_names:
        return
    first = info.output_names[0]  # the output the built-in metrics read
    value = np.asarray(outputs[first])
    samples = value.shape[0] if value.ndim and info.dynamic_batch else None
    role = infer_roles({first: value}, samples, output_producers(info.path), dict(tolerance.role_overrides))[first]
    why = metric_misfit(tolerance.metric, role, value)
    if why:
        raise UsageError(f"--metric {metric_flag}: {why}; drop --metric (each output is then judged by its role)")


def _check_ray_address(address: str) -> None:
    """UsageError unless something answers at `--ray-address` within a few seconds (Ray
    itself retries an unreachable address for minutes, long after `start` said "started")."""

    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT of a Ray cluster's head")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(f"--ray-address {address}: no Ray cluster answers there ({why})") from None
    # A Ray head's address is its GCS, a gRPC server. Something that accepts TCP but does not
    # speak HTTP/2 is another service, which Ray would retry for minutes: an HTTP/2 server answers
    # the client connection preface with a SETTINGS frame (RFC 9113 section 3.4).
    if not _speaks_http2(host, int(port)):
        raise UsageError(
            f"--ray-address {address}: something answers there, but not a Ray cluster's head (no gRPC/HTTP/2 reply)"
        )
    why = _ray_head_refusal(f"{host}:{port}")
    if why:
        raise UsageError(f"--ray-address {address}: no Ray cluster answers there ({why})")


# Asks the address for its cluster id the way ray.init's GCS client does, in a child process: Ray's
# C++ client logs its warnings straight to file descriptor 2, and a black hole is ended by a kill.
_GCS_PROBE = """
import sys
try:
    from ray._raylet import GcsClient
except Exception as exc:
    print("unknown", exc)
    sys.exit()
try:
    client = GcsClient(address=sys.argv[1])
except TypeError as exc:
    print("unknown", exc)  # another Ray's private API: not this check's to judge
except Exception as exc:
    print("refused", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
else:
    print("ok", client.cluster_id)
"""
GCS_PROBE_TIMEOUT_S = 20.0  # a cold `import ray` on a loaded 2-core machine takes seconds


def _ray_head_refusal(address: str) -> str:
    """Why a Ray head's GCS at `address` does not answer, or "" when it does (or the probe cannot
    tell): something that speaks HTTP/2 there (a proxy, another gRPC service) is no Ray head, and
    ray.init would retry it for 30 s in the daemon, after `start` wrote the study (issue 29)."""

    try:
        probe = subprocess.run(
            [sys.executable, "-c", _GCS_PROBE, address],
            capture_output=True,
            text=True,
            timeout=GCS_PROBE_TIMEOUT_S,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    except subprocess.TimeoutExpired:
        return f"its GCS gave no cluster id within {GCS_PROBE_TIMEOUT_S:.0f} s"
    verdict, _, detail = (probe.stdout.strip().splitlines() or [""])[-1].partition(" ")
    return (detail or "refused") if verdict == "refused" else ""


def _speaks_http2(host: str, port: int, timeout_s: float = 5.0) -> bool:

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(preface)
            header = b""
            while len(header) < 9:
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return header[3] == 4  # frame type SETTINGS


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own errors: one line, exit 2
        command = self.prog.removeprefix("autotune").strip()  # main() prefixes "autotune: error:"
        raise UsageError(f"{command}: {message}" if command else message)


def prepare_start(args: argparse.Namespace) -> Any:
    """Validates every input of `start` and returns a StudySpec; writes nothing."""

    results_dir: Path = args.results_dir
    resumed = None
    if args.resume:
        name = check_study_name(args.resume, "--resume")
        resumed = existing_study_model(results_dir, name, args.storage)
        if resumed is None:
            state = daemon_state(results_dir / name) if (results_dir / name).is_dir() else "not started"
            if state.startswith("crashed before its first trial"):
                raise UsageError(f"--resume {args.resume}: its daemon {state}")
            raise UsageError(f"--resume {args.resume}: no such study under {results_dir}")
        _inherit_options(args, resumed.get("start_options", {}))
        model_path = Path(args.model) if args.model else Path(resumed["model_path"])
    else:
        if not args.model:
            raise UsageError("start: give the ONNX model to tune (or --resume STUDY)")
        model_path = Path(args.model)
        name = _study_name(args.study or model_path.stem)

    trials = positive_int("--trials", args.trials) if args.trials is not None else None
    budget = parse_budget(args.budget) if args.budget is not None else None
    if trials is None and budget is None:
        budget = parse_budget("30m")
    if resumed is not None and args.trials is None and args.budget is None:
        trials, budget = resumed.get("n_trials"), resumed.get("budget_s")
    seed = int_flag("--seed", args.seed)
    max_measure_s = positive_float("--max-measure-s", args.max_measure_s)
    tolerance = _tolerance(args, resumed)
    sla = positive_float("--latency-sla-ms", args.latency_sla_ms) if args.latency_sla_ms is not None else None
    worker_count(args)
    trial_timeout_s(args)
    if args.ray_address:
        _check_ray_address(args.ray_address)

    info = load_model_info(model_path)
    for output, _role in tolerance.role_overrides:  # not `name`: that is the study's
        if output not in info.output_names:
            raise UsageError(
                f"--output-role {output}: the model has no output {output!r} (outputs: {', '.join(info.output_names)})"
            )
    if resumed is not None and resumed.get("model_sha256") != info.sha256:
        raise UsageError(f"--resume {name}: {model_path} is not the model this study tuned (content differs)")
    target_options = TargetOptions(build_only=args.build_only)
    target, target_message = resolve_target(
        resumed["target"] if resumed and args.target == "auto" else args.target, target_options
    )
    space_path = args.space or target.default_space_path()
    if not space_path.is_file():
        raise UsageError(f"--space {space_path}: no such file (target {target.name} ships no default space)")
    space = load_space(space_path, target)
    overrides = parse_shape_overrides(expand_short_shapes(args.shape, info), info)
    if "batch_size" in space and not info.dynamic_batch:
        space = space.restrict("batch_size", [])
    if args.batch is not None:
        space = _restrict_batch(space, args.batch, info)
    space, precision_note = _drop_unavailable_precisions(space, info)
    if precision_note:
        target_message = f"{target_message}\n{precision_note}"
    space, quantization_note = _drop_unavailable_quantization(
        space, onnx.load(str(info.path), load_external_data=False)
    )
    if quantization_note:
        target_message = f"{target_message}\n{quantization_note}"
    known_good = _known_good(space_path, space)
    avoid = _avoid(space_path, space)
    if not args.inputs:
        require_resolved_dims(info, overrides)
    pool_samples = POOL_BATCH if args.inputs else _synthetic_samples(info, overrides, space)
    _check_trial_memory(info, overrides, space, args, space_path)
    conversions: list[str] = []  # "--inputs x.npz: 'x' is float64, converted to the model's float32"
    try:
        samples = _samples(args, info, overrides, seed, pool_samples, conversions)
    except MemoryError:
        what = f"--inputs {args.inputs}" if args.inputs else f"--shape {' '.join(args.shape) or '(model shapes)'}"
        raise UsageError(f"{what}: the input samples do not fit in memory; pass smaller shapes") from None
    pool = samples.verification_pool
    if args.inputs and overrides:
        check_inputs_match_shapes(pool, overrides, info, args.inputs)
    outputs = _check_model_runs(info, pool, args, samples.calibration_feeds)
    _check_judging_fits(info, outputs, tolerance, args.metric)
    for line in conversions:
        target_message = f"{target_message}\n{line}"
    if not samples.calibration_feeds and "precision" in space:
        kept = [value for value in space["precision"].values() if value not in ("int8", "fp8")]
        if kept != list(space["precision"].values()):
            space = space.restrict("precision", kept)
            target_message = f"{target_message}\n{samples.note}"

    check_results_dir_writable(results_dir)
    existing = resumed if resumed is not None else existing_study_model(results_dir, name, args.storage)
    if resumed is None and existing is not None and existing.get("model_sha256") != info.sha256:
        raise UsageError(
            f"--study {name}: this study belongs to a different model ({existing.get('model_path')}); "
            f"pick another --study name"
        )
    if existing is not None:
        _check_same_study(name, existing, target_name=args.target if ":" in args.target else target.name,
                          overrides=overrides, pool=pool, space=space, resume=resumed is not None)  # fmt: skip
    spec = StudySpec(
        name=name,
        results_dir=results_dir,
        model=info,
        # A plugin target is named by "module:Class"; workers import it by that name.
        target_name=args.target if ":" in args.target else target.name,
        target_options=target_options,
        space=space,
        known_good=known_good,
        avoid=avoid,
        tolerance=tolerance,
        input_pool=pool,
        calibration_feeds=samples.calibration_feeds,
        shape_overrides=overrides,
        n_trials=trials,
        budget_s=budget,
        seed=seed,
        stop_rule=StopRule(max_time_s=max_measure_s),
        latency_sla_ms=sla,
        storage=args.storage,
        start_options=start_options(args),
    )
    return spec, target_message


def _samples(
    args: argparse.Namespace, info: Any, overrides: Any, seed: int, pool_samples: int, notes: list[str]
) -> Any:
    """`--inputs` (file or directory, with --preprocess/--preprocess-file for images) or the
    synthetic pool, split into calibration feeds and the held-out verification pool; a dtype
    converted to the model's is said in `notes`."""

    options: dict[str, Any] = {}
    if args.preprocess_file:
        options |= load_preprocess_file(args.preprocess_file)
    options |= parse_preprocess_flags(args.preprocess)
    where = "--preprocess" if args.preprocess else f"--preprocess-file {args.preprocess_file}"
    preprocess = parse_preprocess(options, where) if options else None
    if preprocess is not None and not (args.inputs and args.inputs.is_dir()):
        raise UsageError(f"{where}: applies to an --inputs directory of images")
    if not args.inputs:
        return synthetic_split(info, overrides, seed, pool_samples)
    return split_samples(load_inputs(args.inputs, info, preprocess, notes), info)


def _drop_unavailable_precisions(space: Any, info: Any) -> tuple[Any, str]:
    """The space without the precisions this model cannot be given (an opset the version converter
    cannot raise), and a line saying which and why; said once here, never trial after trial."""

    if "precision" not in space:
        return space, ""
    offered = list(space["precision"].values())
    unavailable = precision_unavailable(onnx.load(str(info.path), load_external_data=False), offered)
    if not unavailable:
        return space, ""
    kept = [value for value in offered if value not in unavailable]
    if not kept:
        raise UsageError(
            f"{info.path.name}: no precision of the space can be applied ({'; '.join(unavailable.values())})"
        )
    note = "; ".join(f"precision {name} removed from the space: {reason}" for name, reason in unavailable.items())
    return space.restrict("precision", kept), note


def _drop_unavailable_quantization(space: Any, model: onnx.ModelProto) -> tuple[Any, str]:
    """The space without `quantization: dynamic` where the model has no MatMul/Gemm with a
    constant weight (a CNN): its recipe and sweep value would fail every time."""
    if "quantization" not in space or "dynamic" not in space["quantization"].values() or dynamic_quantizable(model):
        return space, ""
    kept = [value for value in space["quantization"].values() if value != "dynamic"]
    note = "quantization dynamic removed from the space: the model has no MatMul/Gemm with a constant weight"
    return space.restrict("quantization", kept), note


# `start` options a resumed study inherits unless given again on the command line.
RESUMABLE_OPTIONS = (
    "target",
    "batch",
    "space",
    "accuracy",
    "atol",
    "rtol",
    "max_error",
    "min_cosine",
    "metric",
    "output_role",
    "judge",
    "latency_sla_ms",
    "inputs",
    "preprocess",
    "preprocess_file",
    "shape",
    "seed",
    "build_only",
    "max_measure_s",
    "workers",
    "trial_timeout",
    "ray_address",
)


def _tolerance(args: argparse.Namespace, resumed: dict[str, Any] | None) -> Any:
    """The accuracy gate of `start`: --accuracy, --max-error, --atol/--rtol, --min-cosine, --metric,
    --output-role, --judge."""

    elementwise_flags = args.atol is not None or args.rtol is not None
    mode = args.accuracy
    if mode is None and elementwise_flags:
        mode = "elementwise"
    elif mode is None and resumed is not None:
        # A resumed study keeps the gate it was tuned under: one recorded before the scale gate
        # existed (no "accuracy" among its options) is elementwise, one before "auto" is scale.
        recorded = resumed.get("accuracy_mode")
        legacy = "accuracy" not in resumed.get("start_options", {})
        mode = recorded if recorded in ACCURACY_MODES else ("elementwise" if legacy else "scale")
    mode = mode or "auto"
    if mode not in ACCURACY_MODES:
        raise UsageError(f"--accuracy {mode!r}: expected {', '.join(ACCURACY_MODES[:-1])} or {ACCURACY_MODES[-1]}")
    if mode != "elementwise" and elementwise_flags:
        raise UsageError(f"--atol/--rtol apply to --accuracy elementwise; with --accuracy {mode} use --max-error")
    if args.max_error is not None and elementwise_flags:
        raise UsageError("--max-error sets both tolerances; do not combine it with --atol/--rtol")
    if mode == "elementwise" and args.min_cosine is not None:
        raise UsageError(f"--min-cosine {args.min_cosine!r}: applies to --accuracy scale or auto only")
    roles: dict[str, str] = {}
    for item in getattr(args, "output_role", None) or []:
        try:
            name, role = parse_role(item)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if name in roles:
            raise UsageError(f"--output-role {name}: given twice")
        roles[name] = role
    try:
        limits = parse_limits(getattr(args, "judge", None) or [])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if mode != "auto" and (roles or getattr(args, "judge", None)):
        raise UsageError(f"--output-role/--judge apply to --accuracy auto, not {mode}")
    defaults = Tolerance()
    max_error = positive_float("--max-error", args.max_error) if args.max_error is not None else None
    min_cosine = defaults.min_cosine
    if args.min_cosine is not None:
        min_cosine = positive_float("--min-cosine", args.min_cosine)
        if min_cosine > 1:
            raise UsageError(f"--min-cosine {args.min_cosine!r}: a cosine similarity is at most 1")
    metric = None
    if args.metric is not None:
        metric = BUILTIN_METRICS.get(args.metric, args.metric)
        try:
            load_metric(metric)
        except AutotuneError as exc:
            raise UsageError(f"--metric {args.metric!r}: {str(exc).split(': ', 1)[-1]}") from None
    if mode == "elementwise":
        atol = max_error if max_error is not None else defaults.atol
        rtol = max_error if max_error is not None else defaults.rtol
        return Tolerance(
            atol=positive_float("--atol", args.atol) if args.atol is not None else atol,
            rtol=positive_float("--rtol", args.rtol) if args.rtol is not None else rtol,
            mode=mode,
            metric=metric,
        )
    return Tolerance(
        mode=mode,
        max_error=max_error if max_error is not None else defaults.max_error,
        min_cosine=min_cosine,
        metric=metric,
        limits=limits,
        role_overrides=tuple(sorted(roles.items())),
    )


def start_options(args: argparse.Namespace) -> dict[str, Any]:
    """The resumable options of a `start`, with paths made absolute (stored with the study)."""
    options = {}
    for key in RESUMABLE_OPTIONS:
        value = getattr(args, key, None)
        if isinstance(value, Path):
            value = str(value.resolve())
        options[key] = value
    return options


def _inherit_options(args: argparse.Namespace, stored: dict[str, Any]) -> None:
    """A resumed study's stored options, for every resumable option not given again. What was
    given is `args.given` (`parse_start`, `start_args`); a namespace without it (built by
    another parser) falls back to "differs from the default"."""
    given = getattr(args, "given", None)
    if given is None:
        defaults = start_parser().parse_args([])
        given = frozenset(k for k in RESUMABLE_OPTIONS if getattr(args, k, None) != getattr(defaults, k, None))
    for key, value in stored.items():
        if key in RESUMABLE_OPTIONS and key not in given:
            _refuse_code_or_address(key, value)
            setattr(args, key, Path(value) if key in ("space", "inputs", "preprocess_file") and value else value)


def _refuse_code_or_address(key: str, value: Any) -> None:
    """A stored option that names code to import (`--metric`, a plugin `--target`) or an address
    to connect to (`--ray-address`) is taken from the command line only: a study database is a
    file anyone may hand over, and resuming it must import nothing and connect nowhere it names.
    UsageError saying what to pass to resume."""

    if key not in ("metric", "ray_address", "target") or value in (None, ""):
        return
    if key == "metric" and (value in BUILTIN_METRICS or value in BUILTIN_METRICS.values()):
        return
    if key == "target" and (value == "auto" or value in target_names()):
        return
    flag = "--" + key.replace("_", "-")
    what = "an address to connect to" if key == "ray_address" else "code to import"
    raise UsageError(
        f"{flag} {value!r} is stored in the study database, and {what} is never taken from there on resume: "
        f"pass {flag} {value} again to resume with it"
    )


def _check_same_study(
    name: str,
    stored: dict[str, Any],
    *,
    target_name: str,
    overrides: dict[str, tuple[int, ...]],
    pool: dict[str, Any],
    space: Any,
    resume: bool,
) -> None:
    """A study is its inputs: continuing one with another target, shapes, input data or search
    space would mix measurements of different things under one name. UsageError naming what
    differs (checks only what the study recorded)."""

    differs = []
    if stored.get("target") not in (None, target_name):
        differs.append(f"target {stored['target']} -> {target_name}")
    recorded_shapes = stored.get("shape_overrides")
    if recorded_shapes is not None and recorded_shapes != {k: list(v) for k, v in overrides.items()}:
        differs.append(f"--shape {recorded_shapes or 'none'} -> {dict(overrides) or 'none'}")
    if stored.get("inputs_sha256") not in (None, pool_sha256(pool)):
        differs.append("the input data (--inputs or the synthetic pool's seed/shapes)")
    if stored.get("space_sha256") not in (None, space_sha256(space)):
        differs.append("the search space (--space, --batch or the installed target's capabilities)")
    if differs:
        how = "drop the changed flags to continue it" if resume else f"continue it with `--resume {name}`"
        raise UsageError(
            f"--study {name}: the existing study was tuned with other inputs ({'; '.join(differs)}); "
            f"pick another --study name for a new study, or {how}"
        )


def _restrict_batch(space: Any, text: str, info: Any) -> Any:
    """The space with `batch_size` limited to the `--batch` values (the deployment's choice)."""

    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p.isdigit() or int(p) < 1 for p in parts):
        raise UsageError(f"--batch {text!r}: expected positive batch sizes like 1 or 1,8")
    batches = sorted({int(p) for p in parts})
    if not info.dynamic_batch:
        if batches != [1]:
            raise UsageError(f"--batch {text}: {info.path} has no dynamic batch dimension; only batch 1 runs")
        return space
    if "batch_size" in space:
        return space.restrict("batch_size", batches)
    knob = Knob(name="batch_size", type="categorical", default=batches[0], choices=tuple(batches))
    return replace(space, knobs=(*space.knobs, knob))


def int_flag(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected an integer") from None


def _avoid(path: Path, space: Any) -> list[dict[str, Any]]:
    """The space file's `avoid:` list: combinations known to fail, never proposed. Knobs this
    model or installation does not have are dropped from an entry (an entry left empty, or
    with a value the knob cannot take, is skipped)."""

    data = read_space_data(path) or {}
    entries = data.get("avoid") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e for e in entries):
        raise UsageError(f"--space {path}: 'avoid' must be a list of non-empty knob mappings")
    kept = []
    for entry in entries:
        if not all(k in space.names for k in entry):
            continue  # a knob filtered out here: the combination cannot occur
        if all(space[k].type == "float" or v in space[k].values() for k, v in entry.items()):
            kept.append(dict(entry))
    return kept


def _known_good(path: Path, space: Any) -> list[dict[str, Any]]:

    data = read_space_data(path) or {}
    entries = data.get("known_good") or []
    if not isinstance(entries, list):
        raise UsageError(f"--space {path}: 'known_good' must be a list of knob mappings")
    kept = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise UsageError(f"--space {path}: every 'known_good' entry must be a mapping of knob: value")
        # Knobs this model or installation does not have (batch size of a static model, a
        # filtered precision) are dropped; an entry with a value the space cannot take is skipped.
        entry = {k: v for k, v in entry.items() if k in space.names}
        if all(space[k].type == "float" or v in space[k].values() for k, v in entry.items()):
            kept.append(entry)
    return kept


def write_inputs(spec: Any) -> None:

    path = spec.study_dir / INPUTS_FILE
    if not path.exists():
        np.savez(path, **spec.input_pool)
    calibration = spec.study_dir / CALIBRATION_FILE
    if spec.calibration_feeds and not calibration.exists():
        np.savez(
            calibration,
            **{f"{i}/{name}": a for i, feed in enumerate(spec.calibration_feeds) for name, a in feed.items()},
        )


def ray_wanted(args: argparse.Namespace) -> bool:
    return bool(args.workers or args.ray_address or args.trial_timeout)


def worker_count(args: argparse.Namespace) -> int | None:
    if args.workers is None:
        return None
    workers = positive_int("--workers", args.workers)
    cores = len(os.sched_getaffinity(0))
    if workers > cores and not getattr(args, "ray_address", None):  # a cluster's cores are not counted here
        raise UsageError(
            f"--workers {workers}: more than the {cores} CPU cores this process may use; each worker needs one "
            f"(pass at most {cores})"
        )
    return workers


def trial_timeout_s(args: argparse.Namespace) -> float | None:
    return parse_budget(args.trial_timeout, "--trial-timeout") if args.trial_timeout else None


def add_start_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `autotune start` (the CLI's subcommand and the daemon's own parser)."""
    parser.add_argument("model", nargs="?", help="the ONNX model to tune")
    parser.add_argument("--budget", help="wall-time budget: 90s, 10m, 2h, 1h30m (default: 30m without --trials)")
    parser.add_argument("--trials", help="number of trials to reach")
    parser.add_argument("--target", default="auto", help="auto | onnxruntime | tensorrt | tensorrt-rtx")
    parser.add_argument("--space", type=Path, help="search-space YAML (default: search_spaces/<target>.yaml)")
    parser.add_argument(
        "--accuracy",
        help="auto (default): each output judged by its role (class labels, decoded text, matched detections, "
        "thresholded maps, cosine; other outputs by the scale gate); scale: max abs error per output within "
        "--max-error of its reference range, cosine >= --min-cosine; elementwise: every element within --atol or --rtol",
    )
    parser.add_argument(
        "--output-role",
        action="append",
        metavar="NAME=ROLE",
        help="auto: the role of output NAME instead of the inferred one: classes, labels, sequence, detections "
        "(detections:objectness / detections:no-objectness), dense_map, embedding or generic (repeat per output)",
    )
    parser.add_argument(
        "--judge",
        action="append",
        metavar="KEY=VALUE",
        help="auto: a judge's limit: label_change=0.01 probability_error=0.05 cer=0.01 f1=0.99 box_error=0.1 "
        "score_threshold=0.25 mask_iou=0 pixel_error=0.02 cosine=0.99 blank=0 (repeat per limit)",
    )
    parser.add_argument(
        "--max-error",
        help="scale (and auto's generic outputs): error limit as a fraction of each output's range (default 1e-2); "
        "elementwise: sets both --atol and --rtol",
    )
    parser.add_argument("--atol", help="elementwise absolute tolerance (default 1e-2; implies --accuracy elementwise)")
    parser.add_argument("--rtol", help="elementwise relative tolerance (default 1e-2; implies --accuracy elementwise)")
    parser.add_argument("--min-cosine", help="scale: lowest cosine similarity per output, in (0, 1] (default 0.99)")
    parser.add_argument("--metric", help="a task metric that decides pass/fail instead: module:function, top1 or top5")
    parser.add_argument("--latency-sla-ms", help="constraint: median latency per batch at most this")
    parser.add_argument(
        "--batch", help="the deployment batch size(s) to tune for: 1, or a list like 1,8 (default: the space's)"
    )
    parser.add_argument(
        "--inputs",
        type=Path,
        help=".npz of real inputs (names = model input names), or a directory of .npy/.npz samples or images; "
        "half the samples calibrate int8/fp8, the other half verify every trial",
    )
    parser.add_argument(
        "--preprocess",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="image directories: size=H,W layout=NCHW|NHWC mean=R,G,B std=R,G,B scale=1/255 channel_order=RGB|BGR",
    )
    parser.add_argument("--preprocess-file", type=Path, help="image directories: a YAML mapping of --preprocess keys")
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        help="fix a dynamic input shape: NAME:D0,D1,... (or HxW for the only image input)",
    )
    parser.add_argument("--study", help="study name (default: the model's file name)")
    parser.add_argument("--resume", metavar="STUDY", help="continue an existing study")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS, help="where studies live (default results/)"
    )
    parser.add_argument("--storage", help="Optuna storage URL (default: SQLite in the study directory)")
    parser.add_argument("--seed", default="0", help="sampler seed (default 0)")
    parser.add_argument("--build-only", action="store_true", help="build every candidate, measure none")
    parser.add_argument("--foreground", action="store_true", help="run in this terminal with a progress bar")
    parser.add_argument(
        "--workers",
        help="parallel trials (default: one per GPU on GPU targets; one on CPU targets, owning every core; "
        "N splits the cores into N disjoint sets)",
    )
    parser.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--trial-timeout", help="fail a trial that runs longer than this (e.g. 10m)")
    parser.add_argument("--max-measure-s", default="2", help="time cap of one latency measurement (default 2 s)")
    parser.add_argument("--no-ray", action="store_true", help=argparse.SUPPRESS)


def start_parser() -> argparse.ArgumentParser:
    """A parser of `start`'s options alone (the daemon re-parses its command line with it)."""
    parser = CommandParser(prog="autotune start")
    add_start_arguments(parser)
    return parser


class _NotGiven(list):  # a list, so that an append action (--shape) can copy and extend it
    pass


def given_options(argv: list[str]) -> frozenset[str]:
    """The options (argparse dests) that `argv`, a `start` command line, gives explicitly,
    whatever their values (an explicit default included)."""
    parser = start_parser()
    markers = {a.dest: _NotGiven() for a in parser._actions if a.dest != "help"}
    parser.set_defaults(**markers)
    parsed = parser.parse_args(argv)
    return frozenset(dest for dest, value in vars(parsed).items() if value is not markers.get(dest))


def parse_start(argv: list[str]) -> argparse.Namespace:
    """`start`'s options from a command line (without the `start` word), with `argv` and
    `given` recorded on the namespace."""
    args = start_parser().parse_args(argv)
    args.argv = list(argv)
    args.given = given_options(argv)
    return args


def start_args(model: str | Path | None = None, **options: Any) -> argparse.Namespace:
    """`start`'s options for a library caller: the defaults, with `options` (argparse dests,
    values as the command line would give them: strings, Paths, lists for --shape/--preprocess)
    given. Unknown option names raise TypeError."""
    args = start_parser().parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"start_args: unknown options {', '.join(unknown)}")
    if model is not None:
        options["model"] = str(model)
    for key, value in options.items():
        setattr(args, key, value)
    args.argv = []
    args.given = frozenset(options)
    return args


def make_executor(spec: Any, args: Any, *, ray: bool = False) -> Executor:
    """Ray workers for the daemon (and for foreground runs that ask for workers, a cluster or
    a trial timeout); otherwise trials run in this process, one after another.

    Args:
        spec (StudySpec): the validated study.
        args (argparse.Namespace): `start`'s options (`autotune.spec.parse_start`/`start_args`).
        ray (bool): Ray workers whatever the options ask (the daemon). Default: False.
    """
    if getattr(args, "no_ray", False) or not (ray or ray_wanted(args)):
        return InProcessExecutor()
    return RayExecutor.for_spec(
        spec, workers=worker_count(args), address=args.ray_address, trial_timeout_s=trial_timeout_s(args)
    )
