"""Command-line interface: thin over `autotune.study`, `autotune.finalize` and `autotune.report`.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (one line naming the problem, nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autotune.answer import (
    answer_for_trial,
    best_trial,
    chosen_trial,
    default_trial,
    defaults_at_batch,
    shown_front,
    stored_answers,
    wall_s,
)
from autotune.daemon import PID_FILE, StudyLock, daemon_state, detach, one_line, stop_daemon, write_state
from autotune.dashboard import serve_dashboard
from autotune.errors import AutotuneError, UsageError
from autotune.export import write_deploy_dir
from autotune.finalize import finalize, finalize_estimate_s, rerender, reuse_workers
from autotune.layout import BEST_DIR, STATE_FILE, STUDY_DB, existing_dirs, remove_failed_start, study_began
from autotune.profile import PROFILE_FILE, ProfileError, profile_study
from autotune.report import (
    aa_line,
    failure_reasons,
    fmt,
    headline,
    rejected_trials,
    rule_reason,
    trial_by_number,
    trial_row,
)
from autotune.spec import (
    DEFAULT_RESULTS,
    CommandParser,
    add_start_arguments,
    given_options,
    int_flag,
    make_executor,
    positive_int,
    prepare_start,
    write_inputs,
)
from autotune.study import (
    check_study_name,
    compute_references,
    count_trials,
    existing_study_model,
    finished_count,
    judged_tolerance,
    load_study_dir,
    open_study,
    run_study,
    weak_reference_warnings,
)
from autotune.study._records import inputs_line
from autotune.study._storage import redact_url, study_names


def build_parser() -> argparse.ArgumentParser:

    parser = CommandParser(prog="autotune", description="Find the fastest accurate way to deploy an ONNX model.")
    try:
        version = metadata.version("autotune")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"autotune {version}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    start = sub.add_parser("start", help="validate, then tune a model (a detached daemon unless --foreground)")
    add_start_arguments(start)

    for name, help_text in (("status", "progress, best so far and Pareto front"), ("report", "rewrite report.md")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("study", nargs="?")
        p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
        p.add_argument("--storage")

    lst = sub.add_parser("list", help="studies under the results directory (and in --storage)")
    lst.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    lst.add_argument("--storage", help="also list every study of this Optuna storage URL (a database server)")

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

    began = time.monotonic()  # a foreground study's budget counts its validation too
    try:
        full = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(full)
        args.began = began
        args.argv = full[full.index(args.command) + 1 :] if args.command in full else []
        if args.command == "start":
            args.given = given_options(args.argv)  # what a resume must not inherit
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


def cmd_start(args: argparse.Namespace) -> int:

    spec, target_message = prepare_start(args)
    console = Console(highlight=False, soft_wrap=True)
    console.print(target_message, markup=False)
    if not args.foreground:
        return detach(spec, args, console)
    return run_foreground(spec, args, console)


def run_foreground(spec: Any, args: argparse.Namespace, console: Any) -> int:
    """The study in this terminal, holding the same lock and writing the same state file as a
    daemon: a daemon cannot run it meanwhile, and `status` never reads an earlier daemon's end.
    A run that fails before its study began takes back the directories it made."""

    created = existing_dirs(spec.study_dir)
    lock = StudyLock(spec.study_dir / PID_FILE)
    lock.acquire()
    failed = False
    try:
        write_state(spec.study_dir, "running")
        code = _foreground_study(spec, args, console)
        write_state(spec.study_dir, "stopped" if code == 130 else "finished")
        return code
    except BaseException as exc:
        failed = True
        write_state(spec.study_dir, "failed", reason=one_line(exc))
        raise
    finally:
        lock.release()
        if failed:
            remove_failed_start(spec.study_dir, created)


def _foreground_study(spec: Any, args: argparse.Namespace, console: Any) -> int:

    started = getattr(args, "began", time.monotonic())  # validation, start-up, trials and finalize count
    executor = make_executor(spec, args)  # Ray workers (if any) import while the references are computed
    try:
        references = compute_references(spec)
    except BaseException:
        executor.close()
        raise
    for warning in weak_reference_warnings(references, spec.tolerance):
        console.print(f"warning: {warning}", markup=False)
    for role in judged_tolerance(spec, references).roles:
        console.print(role.describe(), markup=False)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    write_inputs(spec)
    before = existing_study_model(spec.results_dir, spec.name, spec.storage) or {}
    elapsed_before = float(before.get("elapsed_s", 0.0))
    best = {"throughput": 0.0}
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

        interrupted, kept = False, None  # kept: the workers stay up for finalize's GPU work (`reuse_workers`)
        try:
            study = run_study(
                spec,
                executor,
                on_result=on_result,
                references=references,
                elapsed_before_s=elapsed_before,
                started=started,
                reserve=finalize_estimate_s,
            )
            kept = reuse_workers(study, executor)
        except KeyboardInterrupt:
            interrupted = True
            study = open_study(spec, create=False)
        finally:
            if kept is None:
                executor.close()
    try:
        if interrupted:
            console.print(
                f"interrupted: finalizing what was measured (resume with `autotune start --resume {spec.name}`)"
            )
        console.print(f"tuning took {time.monotonic() - started:.1f} s; finalizing (paired re-measurement)...")
        deadline = started + max(spec.budget_s - elapsed_before, 0.0) if spec.budget_s is not None else None
        with finalize_lines_to(console):  # a line per pairing with its verdict, as the daemon's log has
            final = finalize(study, deadline=deadline, workers=kept)
    finally:
        if kept is not None:
            kept.close()
    print_summary(study, final, console)
    return 130 if interrupted else 0


@contextlib.contextmanager
def finalize_lines_to(console: Any) -> Iterator[None]:
    """While finalize runs in the foreground, autotune's INFO lines (a line per pairing with its
    verdict, the profile left out) go to the terminal: a foreground run writes no log file."""

    class ToConsole(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(f"  {record.getMessage()}", markup=False)

    logger = logging.getLogger("autotune")
    handler, level, propagate = ToConsole(logging.INFO), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Not also through the root logger: a library's module-level logging.warning (ONNX Runtime's
    # quantizer) gives the root a stderr handler, which printed each line a second time.
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def print_summary(study: Any, final: Any, console: Any) -> None:

    if shown_front(study):
        console.print(pareto_table(study))
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


def pareto_table(study: Any) -> Any:
    """The one front (`autotune.answer.shown_front`) as a table; * marks the answer."""

    zero = default_trial(study)
    defaults = zero.params if zero is not None else {}
    table = Table(title=f"Pareto front of {study.study_name} (throughput up, error down; * = the answer)")
    for column in ("trial", "samples/s", "p50 ms", "batch", "error", "answer", "config vs trial 0"):
        table.add_column(column, justify="left" if column.startswith(("config", "answer")) else "right")
    for entry in shown_front(study):
        row = trial_row(entry.trial, defaults)
        mark = "*" if entry.mark == "the answer" else ""
        table.add_row(
            f"{mark}{row['trial']}",
            fmt(row["throughput"]),
            fmt(row["latency_ms_p50"]),
            str(row["batch_size"]),
            fmt(row["error"], 3),
            entry.mark + ("" if entry.on_front else " (off the front)"),
            row["config"],
        )
    return table


# ---------------------------------------------------------------- other commands


def _load(args: argparse.Namespace, name: str | None) -> Any:
    """The study `name` (default: the latest) as found in --results-dir (see `load_study_dir`)."""

    return load_study_dir(args.results_dir, name or _latest_study(args.results_dir), getattr(args, "storage", None))


def _latest_study(results_dir: Path) -> str:

    dbs = sorted(results_dir.glob(f"*/{STUDY_DB}"), key=lambda p: p.stat().st_mtime)
    if not dbs:
        raise UsageError(f"no study under {results_dir} (start one with `autotune start MODEL`)")
    return dbs[-1].parent.name


def cmd_list(args: argparse.Namespace) -> int:

    console = Console(highlight=False, soft_wrap=True, markup=False)  # text holds [b, T, V] shapes
    # (study name, storage): the SQLite studies under the results directory, and with --storage
    # every study of that database server (a study across machines, see the README).
    found: list[tuple[str, str | None]] = [
        (db.parent.name, None) for db in sorted(args.results_dir.glob(f"*/{STUDY_DB}"))
    ]
    if args.storage:
        found += [(name, args.storage) for name in study_names(args.storage)]
    # A directory whose daemon failed or died before the study's storage existed: listed with its
    # state, as `status` reads it, so that every study directory there is shows (issue 29).
    listed = {name for name, _ in found}
    never_began = [
        state.parent.name
        for state in sorted(args.results_dir.glob(f"*/{STATE_FILE}"))
        if state.parent.name not in listed and not study_began(state.parent)
    ]
    if not found and not never_began:
        console.print(f"no studies under {args.results_dir}" + (" or in --storage" if args.storage else ""))
        return 0
    table = Table(title=f"studies in {args.results_dir}" + (f" and {redact_url(args.storage)}" if args.storage else ""))
    for column in ("study", "state", "model", "target", "complete", "failed", "the answer"):
        table.add_column(column)
    unreadable: list[str] = []
    for name, storage in found:
        args_one = argparse.Namespace(results_dir=args.results_dir, storage=storage)
        try:
            study = _load(args_one, name)
        except UsageError as exc:  # one unreadable study does not hide the others
            table.add_row(name, "unreadable", "-", "-", "-", "-", "-")
            unreadable.append(str(exc))
            continue
        counts = count_trials(study)

        best = chosen_trial(study)
        paired = answer_for_trial(study, best.number if best is not None else None)
        if best is not None and paired is not None:
            answer = f"trial {best.number} ({paired.samples_per_s:.4g} samples/s at batch {paired.batch_size}, paired)"
        else:
            answer = f"trial {best.number}" if best is not None else "- (not finalized)"
        table.add_row(
            study.study_name,
            daemon_state(args.results_dir / name),
            Path(study.user_attrs.get("model_path", "?")).name,
            str(study.user_attrs.get("target")),
            str(counts["complete"]),
            str(counts["failed"]),
            answer,
        )
    for name in never_began:
        table.add_row(name, daemon_state(args.results_dir / name), "-", "-", "0", "0", "- (never began)")
    console.print(table)
    for line in unreadable:
        console.print(f"unreadable: {line}", markup=False)
    return 0


def cmd_status(args: argparse.Namespace) -> int:

    console = Console(highlight=False, soft_wrap=True, markup=False)  # text holds [b, T, V] shapes
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
    tuned = inputs_line(attrs)
    if tuned:
        table.add_row("inputs", tuned)
    if "verification_samples" in attrs:
        table.add_row(
            "samples",
            f"{attrs.get('calibration_samples', 0)} calibrate int8/fp8, {attrs['verification_samples']} held out "
            "to verify every trial",
        )
    elapsed = wall_s(attrs)
    budget = attrs.get("budget_s")
    table.add_row(
        "elapsed",
        f"{elapsed:.0f} s"
        + (f" of {budget:.0f} s budget ({max(budget - elapsed, 0):.0f} s left)" if budget else "")
        + (f"; {attrs['finalize_reserve_s']:.0f} s of it kept for finalize" if attrs.get("finalize_reserve_s") else ""),
    )
    progress = attrs.get("finalize_progress") or {}
    if daemon_state(study_dir).startswith("finalizing") and progress:
        remaining = progress.get("remaining_s")
        table.add_row(
            "finalize",
            f"{progress['phase']}: pairing {progress['done']} of {progress['of']} done, "
            f"{progress['elapsed_s']:.0f} s elapsed"
            + (f", about {remaining:.0f} s left" if remaining is not None else ""),
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
            batch = int(best.user_attrs.get("batch_size", 1))
            same = defaults_at_batch(study, zero, batch)  # compared at equal batch, never with batch 1's
            if same is not None and same.values and same.number != best.number:
                ratio = f" ({best.values[0] / same.values[0]:.2f}x the defaults at batch {batch}, trial {same.number})"
            elif same is None:
                ratio = f" (the defaults have not run at batch {batch} yet)"
            else:
                ratio = " (the defaults)"
            table.add_row(
                "best so far",
                f"trial {best.number}: {fmt(best.values[0])} samples/s at batch {batch}{ratio}; provisional, "
                "unpaired (the answer is chosen at finalize)",
            )
    for warning in attrs.get("warnings", []):
        table.add_row("warning", warning)
    for role in attrs.get("output_roles", []):
        table.add_row(
            "output role", f"{role['output']}: {role['role']} ({role['evidence']}); judged by {role['judge']}"
        )
    for rule in [r for r in attrs.get("rules", []) if r.get("enforced")]:
        knobs = ", ".join(f"{k}={v}" for k, v in rule["knobs"].items())
        table.add_row("rule", f"never again: {knobs} ({rule_reason(rule)}; trials {rule['trials']})")
    for knob, why in (attrs.get("dropped_knobs") or {}).items():
        table.add_row("dropped", f"{knob}: {why}")
    for rejected in rejected_trials(study)[:5]:
        table.add_row("rejected", f"trial {rejected['trial']}: {rejected['rejected_by']}")
    for reason, count in sorted(failure_reasons(study).items(), key=lambda kv: -kv[1])[:5]:
        table.add_row("failed/pruned", f"{count} x {reason}")
    console.print(table)
    if shown_front(study):
        console.print(pareto_table(study))
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    study = _load(args, args.study)
    print(rerender(study))
    return 0


def cmd_export(args: argparse.Namespace) -> int:

    study = _load(args, args.study)
    study_dir = Path(study.user_attrs.get("study_dir", args.results_dir / study.study_name))
    output: Path = args.output
    if output.exists() and any(output.iterdir()) if output.is_dir() else output.exists():
        raise UsageError(f"-o {output}: exists and is not an empty directory")
    if args.trial is not None and args.batch is not None:
        raise UsageError("export: give --trial or --batch, not both")
    if args.batch is not None:
        batch = positive_int("--batch", args.batch)
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
        number = int_flag("--trial", args.trial)
        trial = trial_by_number(study, number)
        if trial is None or trial.state.name != "COMPLETE":
            raise UsageError(f"--trial {args.trial}: no complete trial with that number in {study.study_name}")
        write_deploy_dir(study, trial, output)
    print(f"exported trial {number} of {study.study_name} to {output}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:

    study = _load(args, args.study)
    number = None
    if args.trial is not None:
        number = int_flag("--trial", args.trial)
        trial = trial_by_number(study, number)
        if trial is None or trial.state.name != "COMPLETE":
            raise UsageError(f"--trial {args.trial}: no complete trial with that number in {study.study_name}")
    if default_trial(study) is None:
        raise UsageError(f"study {study.study_name}: no measured baseline (trial 0) to profile yet")
    try:
        data = profile_study(study, number)
    except AutotuneError:
        raise
    except Exception as exc:  # noqa: BLE001 - a profile that cannot run is a runtime failure: one line, exit 1
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

    name = check_study_name(args.study) if args.study else _latest_study(args.results_dir)
    print(stop_daemon(args.results_dir / name, now=args.now))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:

    port = positive_int("--port", args.port)
    if port > 65535:
        raise UsageError(f"--port {args.port!r}: a TCP port is 1 to 65535")
    study = _load(args, args.study)
    study_dir = Path(study.user_attrs.get("study_dir", args.results_dir / study.study_name))
    return serve_dashboard(study_dir, args.storage, port)


if __name__ == "__main__":
    sys.exit(main())
