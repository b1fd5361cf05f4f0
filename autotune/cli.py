"""Command-line interface: thin over `autotune.study`, `autotune.finalize` and `autotune.report`.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (one line naming the problem, nothing written).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, UsageError

DEFAULT_RESULTS = Path("results")
_BUDGET = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


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
    return seconds


def _positive_int(flag: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a positive integer") from None
    if number <= 0:
        raise UsageError(f"{flag} {value!r}: must be at least 1")
    return number


def _positive_float(flag: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a number") from None
    if not number > 0:
        raise UsageError(f"{flag} {value!r}: must be greater than zero")
    return number


def _study_name(text: str) -> str:
    from autotune.study import check_study_name

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    if not name:
        raise UsageError(f"--study {text!r}: a study name needs letters or digits")
    return check_study_name(name, "--study")


def _synthetic_samples(info: Any, overrides: Any, space: Any) -> int:
    """How many samples each synthetic pool holds (`synthetic_samples_that_fit`); UsageError
    naming --shape when even the largest batch tuned does not fit in free memory: one line,
    before anything is allocated."""
    import os

    from autotune.model import POOL_BATCH, synthetic_samples_that_fit

    largest = max((int(b) for b in space["batch_size"].values()), default=1) if "batch_size" in space else 1
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
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


def _check_ray_address(address: str) -> None:
    """UsageError unless something answers at `--ray-address` within a few seconds (Ray
    itself retries an unreachable address for minutes, long after `start` said "started")."""
    import socket

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


def _speaks_http2(host: str, port: int, timeout_s: float = 5.0) -> bool:
    import socket

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        command = self.prog.removeprefix("autotune").strip()  # main() prefixes "autotune: error:"
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    from importlib import metadata

    parser = _Parser(prog="autotune", description="Find the fastest accurate way to deploy an ONNX model.")
    try:
        version = metadata.version("autotune")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"autotune {version}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    start = sub.add_parser("start", help="validate, then tune a model (a detached daemon unless --foreground)")
    start.add_argument("model", nargs="?", help="the ONNX model to tune")
    start.add_argument("--budget", help="wall-time budget: 90s, 10m, 2h, 1h30m (default: 30m without --trials)")
    start.add_argument("--trials", help="number of trials to reach")
    start.add_argument("--target", default="auto", help="auto | onnxruntime | tensorrt | tensorrt-rtx")
    start.add_argument("--space", type=Path, help="search-space YAML (default: search_spaces/<target>.yaml)")
    start.add_argument(
        "--accuracy",
        help="scale: max abs error per output within --max-error of its reference range, cosine >= --min-cosine "
        "(default); elementwise: every element within --atol or --rtol",
    )
    start.add_argument(
        "--max-error",
        help="scale: error limit as a fraction of each output's range (default 1e-2); "
        "elementwise: sets both --atol and --rtol",
    )
    start.add_argument("--atol", help="elementwise absolute tolerance (default 1e-2; implies --accuracy elementwise)")
    start.add_argument("--rtol", help="elementwise relative tolerance (default 1e-2; implies --accuracy elementwise)")
    start.add_argument("--min-cosine", help="scale: lowest cosine similarity per output, in (0, 1] (default 0.99)")
    start.add_argument("--metric", help="a task metric that decides pass/fail instead: module:function, top1 or top5")
    start.add_argument("--latency-sla-ms", help="constraint: median latency per batch at most this")
    start.add_argument(
        "--batch", help="the deployment batch size(s) to tune for: 1, or a list like 1,8 (default: the space's)"
    )
    start.add_argument(
        "--inputs",
        type=Path,
        help=".npz of real inputs (names = model input names), or a directory of .npy/.npz samples or images; "
        "half the samples calibrate int8/fp8, the other half verify every trial",
    )
    start.add_argument(
        "--preprocess",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="image directories: size=H,W layout=NCHW|NHWC mean=R,G,B std=R,G,B scale=1/255 channel_order=RGB|BGR",
    )
    start.add_argument("--preprocess-file", type=Path, help="image directories: a YAML mapping of --preprocess keys")
    start.add_argument(
        "--shape",
        action="append",
        default=[],
        help="fix a dynamic input shape: NAME:D0,D1,... (or HxW for the only image input)",
    )
    start.add_argument("--study", help="study name (default: the model's file name)")
    start.add_argument("--resume", metavar="STUDY", help="continue an existing study")
    start.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS, help="where studies live (default results/)"
    )
    start.add_argument("--storage", help="Optuna storage URL (default: SQLite in the study directory)")
    start.add_argument("--seed", default="0", help="sampler seed (default 0)")
    start.add_argument("--build-only", action="store_true", help="build every candidate, measure none")
    start.add_argument("--foreground", action="store_true", help="run in this terminal with a progress bar")
    start.add_argument(
        "--workers",
        help="parallel trials (default: one per GPU on GPU targets; one on CPU targets, owning every core; "
        "N splits the cores into N disjoint sets)",
    )
    start.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    start.add_argument("--trial-timeout", help="fail a trial that runs longer than this (e.g. 10m)")
    start.add_argument("--max-measure-s", default="2", help="time cap of one latency measurement (default 2 s)")
    start.add_argument("--no-ray", action="store_true", help=argparse.SUPPRESS)

    for name, help_text in (("status", "progress, best so far and Pareto front"), ("report", "rewrite report.md")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("study", nargs="?")
        p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
        p.add_argument("--storage")

    lst = sub.add_parser("list", help="studies under the results directory")
    lst.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)

    export = sub.add_parser("export", help="copy the best (or a given) trial's deployable files")
    export.add_argument("study")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument("--trial", help="trial number (default: the study's answer)")
    export.add_argument("--batch", help="export the answer for this deployment batch size")
    export.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    export.add_argument("--storage")

    prof = sub.add_parser("profile", help="per-layer profile of the defaults and the answer, with diagnoses")
    prof.add_argument("study", nargs="?")
    prof.add_argument("--trial", help="profile this trial against the defaults (default: the study's answer)")
    prof.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    prof.add_argument("--storage")

    stop = sub.add_parser("stop", help="stop a running study (finalizes; --now ends at once)")
    stop.add_argument("study", nargs="?")
    stop.add_argument("--now", action="store_true")
    stop.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)

    dash = sub.add_parser("dashboard", help="optuna-dashboard on 127.0.0.1 against the study's storage")
    dash.add_argument("study", nargs="?")
    dash.add_argument("--port", default="8080")
    dash.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    dash.add_argument("--storage")
    _describe(sub)
    return parser


# What `autotune COMMAND --help` says above the options (the one-line `help` is for `autotune -h`).
COMMAND_DESCRIPTIONS = {
    "start": "Validate the model, search space, target and results directory, then tune: a detached daemon "
    "(prints the study name, log and the status/dashboard/stop commands) unless --foreground. Bad input is one "
    "line and exit code 2, with nothing written.",
    "status": "A study's state (starting, running, finalizing, finished, stopped, failed, crashed), budget, trial "
    "counts and failure reasons, the answer (or the provisional best while running) and the Pareto front.",
    "report": "Re-render results/<study>/report.md and the Pareto plot from the stored answer (never re-chooses).",
    "list": "The studies under the results directory, with state, model, target, trial counts and the answer.",
    "export": "Copy the deployable files of the study's answer (or --trial N, or the answer at --batch N) to an "
    "empty directory: the model after passes, the engine and timing cache (TensorRT), manifest.json and "
    "rebuild/run scripts. A build-only study exports its first built engine when no --trial is given.",
    "profile": "Re-profile the defaults and the answer (or --trial N) per layer; rewrites profile.json and the "
    "'Where the time goes' section of report.md.",
    "stop": "Ask a study's daemon to stop: no new trials, in-flight trials finish, then the study is finalized. "
    "--now (or a second stop) ends at once.",
    "dashboard": "Serve optuna-dashboard on 127.0.0.1 only against the study's storage, with infeasible trials "
    "marked and kept off its Pareto front. A taken --port is one line and exit code 2.",
}
_OPTION_HELP = {
    "study": "study name (default: the most recently changed study under --results-dir)",
    "results_dir": "where studies live (default results/)",
    "storage": "Optuna storage URL, when the study is not in its directory's SQLite file",
    "output": "an empty or new directory to write the files to",
    "now": "end at once: in-flight trials are failed with a reason, the study is not finalized",
    "port": "TCP port on 127.0.0.1 (default 8080)",
}


def _describe(sub: Any) -> None:
    """Gives every subcommand a description and every option a help line."""
    for name, parser in sub.choices.items():
        parser.description = COMMAND_DESCRIPTIONS.get(name, parser.description)
        for action in parser._actions:
            if action.help is None and action.dest in _OPTION_HELP:
                required_study = action.dest == "study" and action.nargs != "?"
                action.help = "study name" if required_study else _OPTION_HELP[action.dest]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `autotune` console script."""

    def err(message: str) -> None:
        print(" ".join(message.split()), file=sys.stderr, flush=True)

    try:
        full = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(full)
        args.argv = full[full.index(args.command) + 1 :] if args.command in full else []
        handler = globals()[f"cmd_{args.command}"]
        return int(handler(args) or 0)
    except UsageError as exc:
        err(f"autotune: error: {exc}")
        return 2
    except AutotuneError as exc:
        err(f"autotune: {exc}")
        return 1
    except KeyboardInterrupt:
        err("autotune: interrupted")
        return 130


# ---------------------------------------------------------------- start


def prepare_start(args: argparse.Namespace) -> Any:
    """Validates every input of `start` and returns a StudySpec; writes nothing."""
    from autotune.measure import StopRule
    from autotune.model import (
        POOL_BATCH,
        check_inputs_match_shapes,
        expand_short_shapes,
        load_model_info,
        parse_shape_overrides,
        require_resolved_dims,
    )
    from autotune.space import load_space
    from autotune.study import StudySpec, check_results_dir_writable, existing_study_model
    from autotune.targets import resolve_target
    from autotune.targets.base import TargetOptions

    results_dir: Path = args.results_dir
    resumed = None
    if args.resume:
        from autotune.study import check_study_name

        name = check_study_name(args.resume, "--resume")
        resumed = existing_study_model(results_dir, name, args.storage)
        if resumed is None:
            raise UsageError(f"--resume {args.resume}: no such study under {results_dir}")
        _inherit_options(args, resumed.get("start_options", {}))
        model_path = Path(args.model) if args.model else Path(resumed["model_path"])
    else:
        if not args.model:
            raise UsageError("start: give the ONNX model to tune (or --resume STUDY)")
        model_path = Path(args.model)
        name = _study_name(args.study or model_path.stem)

    trials = _positive_int("--trials", args.trials) if args.trials is not None else None
    budget = parse_budget(args.budget) if args.budget is not None else None
    if trials is None and budget is None:
        budget = parse_budget("30m")
    if resumed is not None and args.trials is None and args.budget is None:
        trials, budget = resumed.get("n_trials"), resumed.get("budget_s")
    seed = _int_flag("--seed", args.seed)
    max_measure_s = _positive_float("--max-measure-s", args.max_measure_s)
    tolerance = _tolerance(args, resumed)
    sla = _positive_float("--latency-sla-ms", args.latency_sla_ms) if args.latency_sla_ms is not None else None
    _workers(args)
    _timeout(args)
    if args.ray_address:
        _check_ray_address(args.ray_address)

    info = load_model_info(model_path)
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
    known_good = _known_good(space_path, space)
    avoid = _avoid(space_path, space)
    if not args.inputs:
        require_resolved_dims(info, overrides)
    pool_samples = POOL_BATCH if args.inputs else _synthetic_samples(info, overrides, space)
    try:
        samples = _samples(args, info, overrides, seed, pool_samples)
    except MemoryError:
        what = f"--inputs {args.inputs}" if args.inputs else f"--shape {' '.join(args.shape) or '(model shapes)'}"
        raise UsageError(f"{what}: the input samples do not fit in memory; pass smaller shapes") from None
    pool = samples.verification_pool
    if args.inputs and overrides:
        check_inputs_match_shapes(pool, overrides, info, args.inputs)
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


def _samples(args: argparse.Namespace, info: Any, overrides: Any, seed: int, pool_samples: int) -> Any:
    """`--inputs` (file or directory, with --preprocess/--preprocess-file for images) or the
    synthetic pool, split into calibration feeds and the held-out verification pool."""
    from autotune.calibration import (
        load_inputs,
        load_preprocess_file,
        parse_preprocess,
        parse_preprocess_flags,
        split_samples,
        synthetic_split,
    )

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
    return split_samples(load_inputs(args.inputs, info, preprocess), info)


def _drop_unavailable_precisions(space: Any, info: Any) -> tuple[Any, str]:
    """The space without the precisions this model cannot be given (an opset the version converter
    cannot raise), and a line saying which and why; said once here, never trial after trial."""
    import onnx

    from autotune.passes.precision import precision_unavailable

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
    """The accuracy gate of `start`: --accuracy, --max-error, --atol/--rtol, --min-cosine, --metric."""
    from autotune.verify import ACCURACY_MODES, BUILTIN_METRICS, Tolerance, load_metric

    elementwise_flags = args.atol is not None or args.rtol is not None
    mode = args.accuracy
    if mode is None:
        # --atol/--rtol only mean something elementwise; a study recorded before the scale gate
        # existed (no "accuracy" among its options) keeps the elementwise gate it was tuned under.
        legacy = resumed is not None and "accuracy" not in resumed.get("start_options", {})
        mode = "elementwise" if elementwise_flags or legacy else "scale"
    if mode not in ACCURACY_MODES:
        raise UsageError(f"--accuracy {mode!r}: expected {' or '.join(ACCURACY_MODES)}")
    if mode == "scale" and elementwise_flags:
        raise UsageError("--atol/--rtol apply to --accuracy elementwise; with --accuracy scale use --max-error")
    if args.max_error is not None and elementwise_flags:
        raise UsageError("--max-error sets both tolerances; do not combine it with --atol/--rtol")
    if mode == "elementwise" and args.min_cosine is not None:
        raise UsageError(f"--min-cosine {args.min_cosine!r}: applies to --accuracy scale only")
    defaults = Tolerance()
    max_error = _positive_float("--max-error", args.max_error) if args.max_error is not None else None
    min_cosine = defaults.min_cosine
    if args.min_cosine is not None:
        min_cosine = _positive_float("--min-cosine", args.min_cosine)
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
            atol=_positive_float("--atol", args.atol) if args.atol is not None else atol,
            rtol=_positive_float("--rtol", args.rtol) if args.rtol is not None else rtol,
            mode=mode,
            metric=metric,
        )
    return Tolerance(
        mode=mode,
        max_error=max_error if max_error is not None else defaults.max_error,
        min_cosine=min_cosine,
        metric=metric,
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
    defaults = build_parser().parse_args(["start"])
    for key, value in stored.items():
        if key in RESUMABLE_OPTIONS and getattr(args, key, None) == getattr(defaults, key, None):
            setattr(args, key, Path(value) if key in ("space", "inputs", "preprocess_file") and value else value)


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
    from autotune.model import pool_sha256
    from autotune.space import space_sha256

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
    from autotune.space import Knob

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


def _int_flag(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected an integer") from None


def _avoid(path: Path, space: Any) -> list[dict[str, Any]]:
    """The space file's `avoid:` list: combinations known to fail, never proposed. Knobs this
    model or installation does not have are dropped from an entry (an entry left empty, or
    with a value the knob cannot take, is skipped)."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
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
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
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


def cmd_start(args: argparse.Namespace) -> int:
    from rich.console import Console

    spec, target_message = prepare_start(args)
    console = Console(highlight=False, soft_wrap=True)
    console.print(target_message, markup=False)
    if not args.foreground:
        from autotune.daemon import detach

        return detach(spec, args, console)
    return run_foreground(spec, args, console)


def write_inputs(spec: Any) -> None:
    import numpy as np

    from autotune.report import CALIBRATION_FILE, INPUTS_FILE

    path = spec.study_dir / INPUTS_FILE
    if not path.exists():
        np.savez(path, **spec.input_pool)
    calibration = spec.study_dir / CALIBRATION_FILE
    if spec.calibration_feeds and not calibration.exists():
        np.savez(
            calibration,
            **{f"{i}/{name}": a for i, feed in enumerate(spec.calibration_feeds) for name, a in feed.items()},
        )


def run_foreground(spec: Any, args: argparse.Namespace, console: Any) -> int:
    """The study in this terminal, holding the same lock and writing the same state file as a
    daemon: a daemon cannot run it meanwhile, and `status` never reads an earlier daemon's end."""
    from autotune.daemon import PID_FILE, StudyLock, one_line, write_state

    lock = StudyLock(spec.study_dir / PID_FILE)
    lock.acquire()
    try:
        write_state(spec.study_dir, "running")
        code = _foreground_study(spec, args, console)
        write_state(spec.study_dir, "stopped" if code == 130 else "finished")
        return code
    except BaseException as exc:
        write_state(spec.study_dir, "failed", reason=one_line(exc))
        raise
    finally:
        lock.release()


def _foreground_study(spec: Any, args: argparse.Namespace, console: Any) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autotune.finalize import finalize
    from autotune.study import (
        compute_references,
        existing_study_model,
        finished_count,
        open_study,
        run_study,
        weak_reference_warnings,
    )

    executor = make_executor(spec, args)  # Ray workers (if any) import while the references are computed
    try:
        references = compute_references(spec)
    except BaseException:
        executor.close()
        raise
    for warning in weak_reference_warnings(references, spec.tolerance):
        console.print(f"warning: {warning}", markup=False)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    write_inputs(spec)
    before = existing_study_model(spec.results_dir, spec.name, spec.storage) or {}
    elapsed_before = float(before.get("elapsed_s", 0.0))
    best = {"throughput": 0.0}
    started = time.monotonic()
    total = spec.n_trials if spec.n_trials is not None else None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"tuning {spec.name}", total=total, best="")

        def on_result(result: Any, study: Any) -> None:
            if result.feasible and result.throughput > best["throughput"]:
                best["throughput"] = result.throughput
            if result.state == "complete":
                best["built"] = best.get("built", 0) + 1
            done = finished_count(study)
            summary = (
                f"built {best.get('built', 0)}"
                if spec.target_options.build_only
                else f"best {best['throughput']:.4g}/s"
            )
            progress.update(task, completed=done, best=f"{summary}  last #{result.number} {result.state}")

        interrupted = False
        try:
            study = run_study(
                spec, executor, on_result=on_result, references=references, elapsed_before_s=elapsed_before
            )
        except KeyboardInterrupt:
            interrupted = True
            study = open_study(spec, create=False)
        finally:
            executor.close()
    if interrupted:
        console.print(f"interrupted: finalizing what was measured (resume with `autotune start --resume {spec.name}`)")
    console.print(f"tuning took {time.monotonic() - started:.1f} s; finalizing (paired re-measurement)...")
    final = finalize(study)
    print_summary(study, final, console)
    return 130 if interrupted else 0


def make_executor(spec: Any, args: argparse.Namespace, *, ray: bool = False) -> Any:
    """Ray workers for the daemon (and for foreground runs that ask for workers, a cluster or
    a trial timeout); otherwise trials run in this process, one after another."""
    from autotune.study import InProcessExecutor

    if getattr(args, "no_ray", False) or not (ray or _ray_wanted(args)):
        return InProcessExecutor()
    from autotune.workers import RayExecutor

    return RayExecutor.for_spec(spec, workers=_workers(args), address=args.ray_address, trial_timeout_s=_timeout(args))


def _ray_wanted(args: argparse.Namespace) -> bool:
    return bool(args.workers or args.ray_address or args.trial_timeout)


def _workers(args: argparse.Namespace) -> int | None:
    return _positive_int("--workers", args.workers) if args.workers is not None else None


def _timeout(args: argparse.Namespace) -> float | None:
    return parse_budget(args.trial_timeout, "--trial-timeout") if args.trial_timeout else None


def print_summary(study: Any, final: Any, console: Any) -> None:
    from autotune.report import aa_line, headline, pareto_front

    front = pareto_front(study)
    if front:
        console.print(pareto_table(study, front))
    if final.best_number is not None and not study.user_attrs.get("build_only"):
        console.print(f"the answer: trial {final.best_number}", markup=False)
        for line in headline(study):
            console.print(f"  {line.replace('**', '')}", markup=False)
        floor = aa_line(study)
        if floor:
            console.print(f"  {floor}", markup=False)
    elif final.best_number is None and not study.user_attrs.get("build_only"):
        console.print("no feasible configuration was found (see report.md for failure reasons)")
    if final.best_dir is not None:
        console.print(f"best: {final.best_dir}")
    console.print(f"report: {final.report}")


def pareto_table(study: Any, front: list[Any]) -> Any:
    from rich.table import Table

    from autotune.report import chosen_trial, default_trial, fmt, trial_row

    zero = default_trial(study)
    defaults = zero.params if zero is not None else {}
    chosen = chosen_trial(study)
    table = Table(title=f"Pareto front of {study.study_name} (throughput up, error down; * = the answer)")
    for column in ("trial", "samples/s", "p50 ms", "batch", "error", "config vs trial 0"):
        table.add_column(column, justify="left" if column.startswith("config") else "right")
    # The answer is chosen by paired re-measurement, so it may sit off the front of the trials'
    # own (noisier) numbers: it is listed last then, still marked, so the table always names it.
    if chosen is not None and all(t.number != chosen.number for t in front):
        front = [*front, chosen]
    for trial in front:
        row = trial_row(trial, defaults)
        mark = "*" if chosen is not None and trial.number == chosen.number else ""
        table.add_row(
            f"{mark}{row['trial']}",
            fmt(row["throughput"]),
            fmt(row["latency_ms_p50"]),
            str(row["batch_size"]),
            fmt(row["error"], 3),
            row["config"],
        )
    return table


# ---------------------------------------------------------------- other commands


def _load(args: argparse.Namespace, name: str | None) -> Any:
    """The study `name` (default: the latest) as found in --results-dir (see `load_study_dir`)."""
    from autotune.study import load_study_dir

    return load_study_dir(args.results_dir, name or _latest_study(args.results_dir), getattr(args, "storage", None))


def _latest_study(results_dir: Path) -> str:
    from autotune.study import STUDY_DB

    dbs = sorted(results_dir.glob(f"*/{STUDY_DB}"), key=lambda p: p.stat().st_mtime)
    if not dbs:
        raise UsageError(f"no study under {results_dir} (start one with `autotune start MODEL`)")
    return dbs[-1].parent.name


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from autotune.daemon import daemon_state
    from autotune.study import STUDY_DB, count_trials

    console = Console(highlight=False, soft_wrap=True)
    dbs = sorted(args.results_dir.glob(f"*/{STUDY_DB}"))
    if not dbs:
        console.print(f"no studies under {args.results_dir}")
        return 0
    table = Table(title=f"studies in {args.results_dir}")
    for column in ("study", "state", "model", "target", "complete", "failed", "the answer"):
        table.add_column(column)
    unreadable: list[str] = []
    for db in dbs:
        args_one = argparse.Namespace(results_dir=args.results_dir, storage=None)
        try:
            study = _load(args_one, db.parent.name)
        except UsageError as exc:  # one unreadable study does not hide the others
            table.add_row(db.parent.name, "unreadable", "-", "-", "-", "-", "-")
            unreadable.append(str(exc))
            continue
        counts = count_trials(study)
        from autotune.report import answer_for_trial, chosen_trial

        best = chosen_trial(study)
        paired = answer_for_trial(study, best.number if best is not None else None)
        if best is not None and paired is not None:
            answer = f"trial {best.number} ({paired.samples_per_s:.4g} samples/s at batch {paired.batch_size}, paired)"
        else:
            answer = f"trial {best.number}" if best is not None else "- (not finalized)"
        table.add_row(
            study.study_name,
            daemon_state(db.parent),
            Path(study.user_attrs.get("model_path", "?")).name,
            str(study.user_attrs.get("target")),
            str(counts["complete"]),
            str(counts["failed"]),
            answer,
        )
    console.print(table)
    for line in unreadable:
        console.print(f"unreadable: {line}", markup=False)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from autotune.daemon import daemon_state
    from autotune.report import (
        aa_line,
        best_trial,
        chosen_trial,
        default_trial,
        failure_reasons,
        fmt,
        headline,
        pareto_front,
        rejected_trials,
    )
    from autotune.study import count_trials, finished_count

    console = Console(highlight=False, soft_wrap=True)
    study = _load(args, args.study)
    study_dir = Path(study.user_attrs.get("study_dir", args.results_dir / study.study_name))
    counts = count_trials(study)
    attrs = study.user_attrs
    table = Table(title=f"study {study.study_name}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("state", daemon_state(study_dir))
    table.add_row("model", str(attrs.get("model_path")))
    table.add_row("target", f"{attrs.get('target')}{' (build only)' if attrs.get('build_only') else ''}")
    if "verification_samples" in attrs:
        table.add_row(
            "samples",
            f"{attrs.get('calibration_samples', 0)} calibrate int8/fp8, {attrs['verification_samples']} held out "
            "to verify every trial",
        )
    elapsed = float(attrs.get("elapsed_s", 0.0))
    budget = attrs.get("budget_s")
    table.add_row(
        "elapsed",
        f"{elapsed:.0f} s" + (f" of {budget:.0f} s budget ({max(budget - elapsed, 0):.0f} s left)" if budget else ""),
    )
    goal = attrs.get("n_trials")
    table.add_row(
        "trials",
        f"{counts['complete']} complete, {counts['running']} running, {counts['failed']} failed, "
        f"{counts['pruned']} pruned; {finished_count(study)} counted" + (f" (goal {goal})" if goal else ""),
    )
    chosen = chosen_trial(study)
    if chosen is not None:
        table.add_row("the answer", f"trial {chosen.number} (chosen by paired re-measurement at finalize)")
        for line in headline(study):
            table.add_row("", line.replace("**", ""))
        floor = aa_line(study)
        if floor:
            table.add_row("noise floor", floor)
    else:
        best = best_trial(study)
        zero = default_trial(study)
        if best is not None:
            ratio = f" ({best.values[0] / zero.values[0]:.2f}x trial 0)" if zero is not None and zero.values else ""
            table.add_row(
                "best so far",
                f"trial {best.number}: {fmt(best.values[0])} samples/s at batch "
                f"{best.user_attrs.get('batch_size', 1)}{ratio}; provisional, unpaired (the answer is chosen at "
                "finalize)",
            )
    for warning in attrs.get("warnings", []):
        table.add_row("warning", warning)
    for rule in [r for r in attrs.get("rules", []) if r.get("enforced")]:
        knobs = ", ".join(f"{k}={v}" for k, v in rule["knobs"].items())
        table.add_row("rule", f"never again: {knobs} ({rule['reason']}; trials {rule['trials']})")
    for knob, why in (attrs.get("dropped_knobs") or {}).items():
        table.add_row("dropped", f"{knob}: {why}")
    for rejected in rejected_trials(study)[:5]:
        table.add_row("rejected", f"trial {rejected['trial']}: {rejected['rejected_by']}")
    for reason, count in sorted(failure_reasons(study).items(), key=lambda kv: -kv[1])[:5]:
        table.add_row("failed/pruned", f"{count} x {reason}")
    console.print(table)
    front = pareto_front(study)
    if front:
        console.print(pareto_table(study, front))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autotune.finalize import rerender

    study = _load(args, args.study)
    print(rerender(study))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from autotune.report import BEST_DIR, chosen_trial, stored_answers, trial_by_number, write_deploy_dir

    study = _load(args, args.study)
    study_dir = Path(study.user_attrs.get("study_dir", args.results_dir / study.study_name))
    output: Path = args.output
    if output.exists() and any(output.iterdir()) if output.is_dir() else output.exists():
        raise UsageError(f"-o {output}: exists and is not an empty directory")
    if args.trial is not None and args.batch is not None:
        raise UsageError("export: give --trial or --batch, not both")
    if args.batch is not None:
        batch = _positive_int("--batch", args.batch)
        answers = stored_answers(study)
        if batch not in answers:
            measured = ", ".join(map(str, sorted(answers))) or "none (not finalized)"
            raise UsageError(f"--batch {args.batch}: study {study.study_name} has no answer at that batch "
                             f"(answers at batch {measured})")  # fmt: skip
        args.trial = str(answers[batch].trial)
    if args.trial is None:
        best = chosen_trial(study)
        if best is None and study.user_attrs.get("build_only"):
            # Build-only measures nothing, so no answer is ever chosen; finalize exports the first
            # engine built (the defaults), and so does export before finalize has run.
            built = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
            best = min(built, key=lambda t: t.number) if built else None
        if best is None:
            raise UsageError(
                f"study {study.study_name}: no answer to export yet (finalize runs when the study ends; try --trial N)"
            )
        if (study_dir / BEST_DIR).is_dir() and study.user_attrs.get("best_trial") == best.number:
            shutil.copytree(study_dir / BEST_DIR, output, dirs_exist_ok=True)
        else:
            write_deploy_dir(study, best, output)
        number = best.number
    else:
        number = _int_flag("--trial", args.trial)
        trial = trial_by_number(study, number)
        if trial is None or trial.state.name != "COMPLETE":
            raise UsageError(f"--trial {args.trial}: no complete trial with that number in {study.study_name}")
        write_deploy_dir(study, trial, output)
    print(f"exported trial {number} of {study.study_name} to {output}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from autotune.finalize import rerender
    from autotune.profile import PROFILE_FILE, ProfileError, profile_study
    from autotune.report import default_trial, trial_by_number

    study = _load(args, args.study)
    number = None
    if args.trial is not None:
        number = _int_flag("--trial", args.trial)
        trial = trial_by_number(study, number)
        if trial is None or trial.state.name != "COMPLETE":
            raise UsageError(f"--trial {args.trial}: no complete trial with that number in {study.study_name}")
    if default_trial(study) is None:
        raise UsageError(f"study {study.study_name}: no measured baseline (trial 0) to profile yet")
    try:
        data = profile_study(study, number)
    except AutotuneError:
        raise
    except Exception as exc:  # a profile that cannot run is a runtime failure: one line, exit 1
        raise ProfileError(f"profile of {study.study_name} failed: {type(exc).__name__}: {exc}") from None
    report = rerender(study)
    study_dir = Path(study.user_attrs.get("study_dir", args.results_dir / study.study_name))
    shares = [data[k].get("gemm_share") for k in ("defaults", "best") if data.get(k)]
    line = " -> ".join(f"{s:.1%}" if s is not None else "untimed" for s in shares)
    print(f"GEMM-class share {line}; {len(data['diagnoses'])} diagnoses")
    print(study_dir / PROFILE_FILE)
    print(report)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from autotune.daemon import stop_daemon
    from autotune.study import check_study_name

    name = check_study_name(args.study) if args.study else _latest_study(args.results_dir)
    print(stop_daemon(args.results_dir / name, now=args.now))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from autotune.dashboard import serve_dashboard

    port = _positive_int("--port", args.port)
    if port > 65535:
        raise UsageError(f"--port {args.port!r}: a TCP port is 1 to 65535")
    study = _load(args, args.study)
    study_dir = Path(study.user_attrs.get("study_dir", args.results_dir / study.study_name))
    return serve_dashboard(study_dir, args.storage, port)


if __name__ == "__main__":
    sys.exit(main())
