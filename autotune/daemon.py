"""The daemon: a detached process that owns one study, its lock, its log and its workers.

`autotune start` validates, then re-executes itself as `python -m autotune.daemon ...` in a
new process session with the log as stdout/stderr, and returns once the child holds the
study lock. The lock is an `fcntl.flock` on `daemon.pid`, held for the daemon's life, so a
crashed daemon leaves no stale lock: the kernel drops it with the process.

Signals: SIGTERM asks for a graceful stop (no new trials, in-flight ones finish within the
grace period, then finalize); a second SIGTERM, or SIGUSR1 (`stop --now`), stops at once,
failing in-flight trials with a reason so the storage stays consistent.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, UsageError

PID_FILE = "daemon.pid"
LOG_FILE = "autotune.log"
STATE_FILE = "daemon.json"
GRACE_S = 60.0


@dataclass
class StudyLock:
    """An exclusive flock on `<study>/daemon.pid` naming the holder's pid."""

    path: Path
    handle: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise UsageError(
                f"study {self.path.parent.name}: a daemon (pid {holder}) is already running it; "
                f"`autotune stop {self.path.parent.name}` first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def lock_holder(study_dir: Path) -> int | None:
    """The pid of the live daemon holding the study lock, or None (no daemon, or a stale file)."""
    path = study_dir / PID_FILE
    if not path.exists():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def daemon_state(study_dir: Path) -> str:
    """running (pid N) | finished | stopped | crashed | not started."""
    pid = lock_holder(study_dir)
    if pid is not None:
        return f"running (pid {pid})"
    state_path = study_dir / STATE_FILE
    if state_path.exists():
        try:
            state = str(json.loads(state_path.read_text()).get("state", "unknown"))
        except (OSError, json.JSONDecodeError):
            return "unknown"
        # "running" without a lock holder: the daemon died without saying so.
        return "crashed (resume with `autotune start --resume`)" if state == "running" else state
    return "finished" if (study_dir / "report.md").exists() else "not started"


def write_state(study_dir: Path, state: str, **extra: Any) -> None:
    tmp = study_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"state": state, "pid": os.getpid(), "time": time.time(), **extra}))
    tmp.replace(study_dir / STATE_FILE)


def detach(spec: Any, args: argparse.Namespace, console: Any) -> int:
    """Starts the daemon for a validated `spec` and returns once it holds the study lock."""
    holder = lock_holder(spec.study_dir)
    if holder is not None:
        raise UsageError(f"study {spec.name}: a daemon (pid {holder}) is already running it")
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    log_path = spec.study_dir / LOG_FILE
    argv = [a for a in args.argv if a != "--foreground"]
    command = [sys.executable, "-m", "autotune.daemon", *argv]
    if not args.resume:
        command += ["--study", spec.name]
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.getcwd(),
            env=os.environ.copy(),
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lock_holder(spec.study_dir) == child.pid:
            break
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise AutotuneError(f"the daemon exited at start (code {child.returncode}): {tail[0]}")
        time.sleep(0.1)
    else:
        raise AutotuneError(f"the daemon did not take the study lock within 60 s; see {log_path}")
    results = f" --results-dir {spec.results_dir}" if spec.results_dir != Path("results") else ""
    console.print(f"study {spec.name} started (daemon pid {child.pid})", markup=False)
    console.print(f"  log:       {log_path}", markup=False)
    console.print(f"  status:    autotune status {spec.name}{results}", markup=False)
    console.print(f"  dashboard: autotune dashboard {spec.name}{results}", markup=False)
    console.print(f"  stop:      autotune stop {spec.name}{results}", markup=False)
    return 0


class StopFlags:
    """Set by signal handlers, polled by the study loop."""

    def __init__(self) -> None:
        self.graceful = False
        self.now = False
        self.graceful_since = 0.0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_now)

    def _on_term(self, *_: Any) -> None:
        if self.graceful:
            self.now = True
        self.graceful = True
        self.graceful_since = self.graceful_since or time.monotonic()

    def _on_now(self, *_: Any) -> None:
        self.graceful = True
        self.now = True


def stop_daemon(study_dir: Path, *, now: bool = False, wait_s: float = 0.0) -> str:
    """Asks the study's daemon to stop (SIGTERM, or SIGUSR1 with `now`); returns a message."""
    pid = lock_holder(study_dir)
    if pid is None or pid <= 0:
        raise UsageError(f"study {study_dir.name}: no daemon is running it ({daemon_state(study_dir)})")
    os.kill(pid, signal.SIGUSR1 if now else signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while wait_s and time.monotonic() < deadline and lock_holder(study_dir) == pid:
        time.sleep(0.1)
    if now:
        return f"study {study_dir.name}: daemon {pid} told to stop now"
    return (
        f"study {study_dir.name}: daemon {pid} stops asking; in-flight trials finish (grace {GRACE_S:.0f} s), "
        f"then it finalizes. `autotune stop --now {study_dir.name}` ends at once"
    )


def run_daemon(argv: list[str]) -> int:
    """The daemon's body: validate again, take the lock, run the study, finalize."""
    from autotune.cli import build_parser, make_executor, prepare_start, write_inputs
    from autotune.finalize import finalize
    from autotune.study import compute_references, existing_study_model, run_study, weak_reference_warnings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    log = logging.getLogger("autotune.daemon")
    args = build_parser().parse_args(["start", *argv])
    args.argv = argv
    spec, target_message = prepare_start(args)
    lock = StudyLock(spec.study_dir / PID_FILE)
    lock.acquire()
    flags = StopFlags()
    write_state(spec.study_dir, "running")
    log.info("daemon pid %d for study %s; %s", os.getpid(), spec.name, target_message)
    try:
        before = existing_study_model(spec.results_dir, spec.name, spec.storage) or {}
        elapsed_before = float(before.get("elapsed_s", 0.0))
        references = compute_references(spec)
        for warning in weak_reference_warnings(references, spec.tolerance):
            log.warning("%s", warning)
        write_inputs(spec)
        executor = make_executor(spec, args, ray=True)
        flags.install()  # after ray.init, which installs its own SIGTERM handler

        def on_result(result: Any, study: Any) -> None:
            extra = f" ({result.reason})" if result.reason else ""
            log.info("trial %d %s: %.4g samples/s%s", result.number, result.state, result.throughput, extra)

        def should_stop() -> bool:
            if flags.now:
                executor.cancel_all("stopped by `autotune stop --now`")
            elif flags.graceful and time.monotonic() - flags.graceful_since > GRACE_S:
                executor.cancel_all(f"stopped: in-flight past the {GRACE_S:.0f} s grace period")
            return flags.graceful

        try:
            study = run_study(
                spec,
                executor,
                on_result=on_result,
                should_stop=should_stop,
                references=references,
                elapsed_before_s=elapsed_before,
            )
        finally:
            executor.close()
        if flags.now:
            write_state(spec.study_dir, "stopped")
            log.info("stopped at once; not finalized (run `autotune report %s`)", spec.name)
            return 0
        log.info("finalizing")
        final = finalize(study)
        log.info(
            "best trial %s; speedup %s; report %s",
            final.best_number,
            f"{final.speedup.median:.2f}x" if final.speedup else "-",
            final.report,
        )
        write_state(spec.study_dir, "stopped" if flags.graceful else "finished")
        return 0
    except Exception:
        log.exception("daemon failed")
        write_state(spec.study_dir, "crashed")
        return 1
    finally:
        lock.release()


def run_dashboard(study_dir: Path, storage: str | None, port: int) -> int:
    """Serves optuna-dashboard on 127.0.0.1:`port` against the study's storage (blocks)."""
    from optuna_dashboard import run_server

    from autotune.study import storage_url

    url = storage_url(study_dir, storage)
    artifacts = study_dir / "artifacts"
    kwargs: dict[str, Any] = {}
    if artifacts.is_dir():
        from optuna.artifacts import FileSystemArtifactStore

        kwargs["artifact_store"] = FileSystemArtifactStore(str(artifacts))
    print(f"optuna-dashboard for {study_dir.name} on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    run_server(url, host="127.0.0.1", port=port, **kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(run_daemon(sys.argv[1:]))
