"""The daemon: a detached process that owns one study, its lock, its log and its workers.

`autotune start` validates, then re-executes itself as `python -m autotune.daemon ...` in a
new process session with the log as stdout/stderr, and returns once the child holds the
study lock. The lock is an `fcntl.flock` on `daemon.pid`, held for the daemon's life, so a
crashed daemon leaves no stale lock: the kernel drops it with the process.

Signals: SIGTERM asks for a graceful stop (no new trials, in-flight ones finish within the
grace period, then finalize); a second SIGTERM, or SIGUSR1 (`stop --now`), stops at once,
failing in-flight trials with a reason so the storage stays consistent. The handlers hold for
the daemon's whole life: installed before anything else, re-installed after Ray replaced them
(`ray.init`) or dropped them (`ray.shutdown`). During finalize a graceful stop is ignored (it is
what finalize completes) and `stop --now` ends it, leaving the study resumable.

`autotune stop` also writes its request to `stop.json` before signalling, so a stop that
reaches a daemon before its handlers exist, or one whose daemon dies before honouring it, is
not lost: a resumed daemon finds a graceful request and finalizes without tuning further.

State (`daemon.json`): starting -> running (the first trial is dispatched) -> finished |
stopped | failed (with a one-line reason). `start` returns once the state is running.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.answer import wall_s
from autotune.errors import AutotuneError, StorageLost, UsageError, root_cause
from autotune.finalize import finalize, finalize_estimate_s, reuse_workers
from autotune.layout import (  # lock_holder, read_state and daemon_state: also read by the commands below the daemon
    LOG_FILE,
    PID_FILE,
    STATE_FILE,
    STOP_FILE,
    STUDY_DB,
    daemon_state,
    existing_dirs,
    lock_holder,
    read_state,
    remove_failed_start,
    write_atomically,
)
from autotune.lazy import lazy_module
from autotune.spec import make_executor, parse_start, prepare_start, write_inputs
from autotune.study import (
    compute_references,
    existing_study_model,
    judged_tolerance,
    run_study,
    weak_reference_warnings,
)
from autotune.workers import InProcessExecutor, MemoryGuard

if TYPE_CHECKING:
    import ray
else:
    ray = lazy_module("ray")  # loaded on first use: importing Ray costs every CLI command ~0.4 s

GRACE_S = 60.0
START_TIMEOUT_S = 300.0  # from launch to the first trial dispatched (references, Ray start)
STORAGE_ENV = "AUTOTUNE_STORAGE"  # the --storage URL reaches the daemon here, never in its argv


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


def write_state(study_dir: Path, state: str, **extra: Any) -> bool:
    """Writes the daemon state atomically; on failure (a full disk) retries in place, then
    removes a stale file rather than leave it saying "running". Returns whether it was written."""

    text = json.dumps({"state": state, "pid": os.getpid(), "time": time.time(), **extra})
    path = study_dir / STATE_FILE
    if write_atomically(path, text):
        return True
    try:
        with open(path, "r+" if path.exists() else "w") as handle:  # no new inode needed
            handle.seek(0)
            handle.write(text)
            handle.truncate()
        return True
    except OSError:
        pass
    try:
        if read_state(study_dir).get("state") in ("running", "starting", "finalizing"):
            path.unlink()  # no file reads as "not started"/"finished", never as a live daemon
    except OSError:
        pass
    logging.getLogger("autotune.daemon").error("could not record state %r in %s", state, path)
    return False


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, for the state file and the log's last line."""
    if isinstance(exc, AutotuneError):
        return " ".join(str(exc).split())[:500]
    cause = root_cause(exc)
    if cause is not exc and type(exc).__name__ == "StorageInternalError":  # Optuna's one message for every cause
        return f"the study's storage failed: {type(cause).__name__}: {' '.join(str(cause).split())}"[:500]
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]


def read_stop_request(study_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((study_dir / STOP_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else {"now": False}


def clear_stop_request(study_dir: Path) -> None:
    try:
        (study_dir / STOP_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def detach(spec: Any, args: argparse.Namespace, console: Any) -> int:
    """Starts the daemon for a validated `spec` and returns once it holds the study lock."""
    holder = lock_holder(spec.study_dir)
    if holder is not None:
        raise UsageError(f"study {spec.name}: a daemon (pid {holder}) is already running it")
    created = existing_dirs(spec.study_dir)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    log_path = spec.study_dir / LOG_FILE
    argv, storage = _without_storage([a for a in args.argv if a != "--foreground"])
    command = [sys.executable, "-m", "autotune.daemon", *argv]
    if not args.resume:
        command += ["--study", spec.name]
    env = os.environ.copy()
    env.pop(STORAGE_ENV, None)
    if storage is not None:
        env[STORAGE_ENV] = storage  # argv is world-readable (`ps`); a URL may hold a password
    if (read_stop_request(spec.study_dir) or {}).get("now"):
        clear_stop_request(spec.study_dir)  # its daemon ended at once already
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.getcwd(),
            env=env,
        )
    try:
        wait_until_started(spec.study_dir, child, log_path)
    except AutotuneError:
        # A daemon that failed at start is on its way out: once it is gone, what it wrote goes
        # too (its reason is in the line raised). One that is merely slow is left running.
        failed = read_state(spec.study_dir).get("state") == "failed" or child.poll() is not None
        if failed and _exited(child, FAILED_EXIT_WAIT_S):
            remove_failed_start(spec.study_dir, created)
        raise
    results = f" --results-dir {spec.results_dir}" if spec.results_dir != Path("results") else ""
    console.print(f"study {spec.name} started (daemon pid {child.pid})", markup=False)
    console.print(f"  log:       {log_path}", markup=False)
    console.print(f"  status:    autotune status {spec.name}{results}", markup=False)
    console.print(f"  dashboard: autotune dashboard {spec.name}{results}", markup=False)
    console.print(f"  stop:      autotune stop {spec.name}{results}", markup=False)
    return 0


FAILED_EXIT_WAIT_S = 30.0  # a daemon that wrote "failed" shuts its Ray cluster down, then exits


def _exited(child: subprocess.Popen, timeout_s: float) -> bool:
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _without_storage(argv: list[str]) -> tuple[list[str], str | None]:
    """`argv` without `--storage URL` / `--storage=URL`, and the URL."""
    kept: list[str] = []
    storage = None
    items = iter(argv)
    for item in items:
        if item == "--storage":
            storage = next(items, None)
        elif item.startswith("--storage="):
            storage = item.split("=", 1)[1]
        else:
            kept.append(item)
    return kept, storage


def wait_until_started(study_dir: Path, child: subprocess.Popen, log_path: Path) -> None:
    """Returns once the daemon `child` has dispatched its first trial (state "running");
    AutotuneError with the daemon's one-line reason when it failed or exited first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(study_dir)
        if state.get("pid") == child.pid and state.get("state") not in (None, "starting"):
            if state["state"] == "failed":
                raise AutotuneError(f"study {study_dir.name}: the daemon failed at start: {state.get('reason')}")
            return
        if child.poll() is not None:
            state = read_state(study_dir)
            if state.get("pid") == child.pid and state.get("state") == "failed":
                raise AutotuneError(f"study {study_dir.name}: the daemon failed at start: {state.get('reason')}")
            if state.get("pid") == child.pid and state.get("state") in ("stopped", "finished"):
                return
            lines = log_path.read_text(errors="replace").strip().splitlines()
            raise AutotuneError(f"the daemon exited at start (code {child.returncode}): {(lines or ['no output'])[-1]}")
        time.sleep(0.1)
    raise AutotuneError(
        f"study {study_dir.name}: the daemon (pid {child.pid}) has not dispatched its first trial within "
        f"{START_TIMEOUT_S:.0f} s; it goes on (see {log_path}; `autotune stop {study_dir.name}` ends it)"
    )


class StopNow(BaseException):
    """Raised by the `stop --now` handler while finalizing: ends finalize where it stands."""


class StopFlags:
    """Set by signal handlers (and `stop.json`), polled by the study loop."""

    def __init__(self, study_dir: Path | None = None) -> None:
        self.graceful = False
        self.now = False
        self.graceful_since = 0.0
        self.finalizing = False
        self.study_dir = study_dir

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_now)

    def poll(self) -> bool:
        """Reads a stop request persisted by `autotune stop`; True when a stop is asked."""
        request = read_stop_request(self.study_dir) if self.study_dir is not None else None
        if request is not None and not self.graceful:
            self._on_term()
        if request is not None and request.get("now") and not self.now:
            self._on_now()
        return self.graceful

    def _on_term(self, *_: Any) -> None:
        if self.finalizing:
            logging.getLogger("autotune.daemon").info("stop: already finalizing; `stop --now` ends it")
            return
        if self.graceful:
            self.now = True
        self.graceful = True
        self.graceful_since = self.graceful_since or time.monotonic()

    def _on_now(self, *_: Any) -> None:
        self.graceful = True
        self.now = True
        if self.finalizing:
            self.finalizing = False  # raise once
            raise StopNow()


def stop_daemon(study_dir: Path, *, now: bool = False, wait_s: float = 0.0) -> str:
    """Asks the study's daemon to stop (SIGTERM, or SIGUSR1 with `now`); returns a message."""
    pid = lock_holder(study_dir)
    if pid is None or pid <= 0:
        raise UsageError(f"study {study_dir.name}: no daemon is running it ({daemon_state(study_dir)})")
    previous = read_stop_request(study_dir) or {}
    try:
        tmp = study_dir / (STOP_FILE + ".tmp")
        tmp.write_text(json.dumps({"now": bool(now or previous.get("now")), "time": time.time()}))
        tmp.replace(study_dir / STOP_FILE)
    except OSError:
        pass  # the signal alone still stops it
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    log = logging.getLogger("autotune.daemon")
    flags = StopFlags()
    flags.install()  # first of all: a stop that comes during start-up is honoured, not fatal

    MemoryGuard.volunteer(500)  # the study's processes go before anyone else's when memory runs out

    args = parse_start(argv)
    args.began = time.monotonic()  # the budget counts the daemon's validation and start-up too
    if os.environ.get(STORAGE_ENV):
        args.storage = os.environ.pop(STORAGE_ENV)
        args.given = args.given | {"storage"}
    try:
        spec, target_message = prepare_start(args)
    except AutotuneError as exc:
        log.error("%s", one_line(exc))
        return 2 if isinstance(exc, UsageError) else 1
    lock = StudyLock(spec.study_dir / PID_FILE)
    try:
        lock.acquire()
    except UsageError as exc:  # another daemon runs this study: its state is not ours to write
        log.error("%s", one_line(exc))
        return 2
    flags.study_dir = spec.study_dir
    request = read_stop_request(spec.study_dir)
    if request is not None and request.get("now"):
        clear_stop_request(spec.study_dir)  # its daemon ended at once; this one is a new start
    elif request is not None:
        log.info("a stop was asked of an earlier daemon that did not finish it: finalizing without tuning")
    write_state(spec.study_dir, "starting", external_storage=bool(args.storage))
    log.info("daemon pid %d for study %s; %s", os.getpid(), spec.name, target_message)
    try:
        code = _run_and_finalize(spec, args, flags, log, make_executor, write_inputs)
        clear_stop_request(spec.study_dir)
        return code
    except StopNow:
        write_state(spec.study_dir, "stopped", reason="stopped during finalize by `autotune stop --now`")
        log.info("stopped during finalize; not finalized (resume, or run `autotune report %s`)", spec.name)
        clear_stop_request(spec.study_dir)
        return 0
    except MemoryError:
        reason = "out of memory (a smaller --shape, --batch or --workers needs less)"
        log.error("daemon failed: %s", reason)
        write_state(spec.study_dir, "failed", reason=reason)
        return 1
    except Exception as exc:
        log.exception("daemon failed")
        reason = _disk_full_reason(exc, spec.study_dir) or one_line(exc)
        write_state(spec.study_dir, "failed", reason=reason)
        log.error("daemon failed: %s", reason)
        return 1
    finally:
        lock.release()


def _disk_full_reason(exc: BaseException, study_dir: Path) -> str | None:
    """A full disk, said as such, however deep it is wrapped (Optuna's StorageInternalError
    around SQLAlchemy's around sqlite3's "database or disk is full")."""

    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if (isinstance(seen, OSError) and seen.errno == errno.ENOSPC) or "disk is full" in text:
            try:
                free = f"{shutil.disk_usage(study_dir).free / 2**20:.0f} MiB free"
            except OSError:
                free = "free space unknown"
            return f"the disk holding {study_dir} is full ({free}); free space, then --resume"
        seen = seen.__cause__ or seen.__context__
    return None


def _run_and_finalize(spec: Any, args: Any, flags: StopFlags, log: Any, make_executor: Any, write_inputs: Any) -> int:

    began = getattr(args, "began", time.monotonic())  # validation, start-up, trials and finalize count
    before = existing_study_model(spec.results_dir, spec.name, spec.storage) or {}
    elapsed_before = float(before.get("elapsed_s", 0.0))
    deadline = began + max(spec.budget_s - elapsed_before, 0.0) if spec.budget_s is not None else None

    # Stopped before any worker exists: the loop below runs once without Ray (it recovers
    # interrupted trials, asks nothing) and the study is finalized as it stands.
    executor: Any = InProcessExecutor()
    if not flags.poll():
        try:
            executor = make_executor(spec, args, ray=True)
        except SystemExit as exc:  # Ray's own SIGTERM handler, set during ray.init
            if exc.code != signal.SIGTERM:
                raise
            flags._on_term()
            _shutdown_ray()
        flags.install()  # ray.init replaced the handlers

    # The workers import (RayExecutor's warm-up) while the references are computed here.
    try:
        references = compute_references(spec)
        for warning in weak_reference_warnings(references, spec.tolerance):
            log.warning("%s", warning)
        for role in judged_tolerance(spec, references).roles:
            log.info("%s", role.describe())
        write_inputs(spec)
    except BaseException:
        executor.close()
        raise

    def on_started() -> None:
        write_state(spec.study_dir, "running")

    def on_result(result: Any, study: Any) -> None:
        extra = f" ({result.reason})" if result.reason else ""
        log.info("trial %d %s: %.4g samples/s%s", result.number, result.state, result.throughput, extra)

    watch = storage_watch(spec.study_dir if spec.storage is None else None)

    def should_stop() -> bool:
        watch()
        flags.poll()
        if flags.now:
            executor.cancel_all("stopped by `autotune stop --now`")
        elif flags.graceful and time.monotonic() - flags.graceful_since > GRACE_S:
            executor.cancel_all(f"stopped: in-flight past the {GRACE_S:.0f} s grace period")
        return flags.graceful

    def close_workers() -> None:
        flags.install()  # a SIGTERM during the shutdown below is a stop request, not Ray's exit
        executor.close()
        flags.install()  # ray.shutdown() leaves SIGTERM at its default (instant death)

    kept = None  # the workers, kept up for finalize's GPU work (`reuse_workers`)
    try:
        study = run_study(
            spec,
            executor,
            on_result=on_result,
            should_stop=should_stop,
            references=references,
            elapsed_before_s=elapsed_before,
            on_started=on_started,
            started=began,
            reserve=finalize_estimate_s,
        )
        kept = None if flags.now else reuse_workers(study, executor)
    finally:
        if kept is None:
            close_workers()
    try:
        if flags.now:
            write_state(spec.study_dir, "stopped")
            log.info("stopped at once; not finalized (run `autotune report %s`)", spec.name)
            return 0
        watch()  # nothing is written from memory as if a lost study were intact
        log.info("finalizing (`autotune stop` waits for it; `autotune stop --now` ends it)")
        write_state(spec.study_dir, "finalizing")  # status says so, not "running" (issue 11)
        flags.finalizing = True
        if flags.poll() and flags.now:
            raise StopNow()
        final = finalize(study, deadline=deadline, workers=kept)
        flags.finalizing = False
    finally:
        if kept is not None:
            close_workers()
    log.info(
        "best trial %s; speedup %s; wall %.1f s (the study's, as report.md says); report %s",
        final.best_number,
        f"{final.speedup.median:.2f}x" if final.speedup else "-",
        wall_s(study.user_attrs),
        final.report,
    )
    if flags.graceful:
        log.info("stopped early by `autotune stop`: finalized what was measured")
    write_state(spec.study_dir, "finished")  # finalized: its answer is written, whatever stopped the trials
    return 0


def storage_watch(study_dir: Path | None) -> Callable[[], None]:
    """A check that raises StorageLost once `study_dir/study.db` disappears, is replaced by another
    file (inode) or shrinks (SQLite never shrinks it without VACUUM): the daemon then fails the
    study with one line, as for a full disk, instead of finishing "finished" and writing `best/`
    and `report.md` from memory over a study that is gone. A no-op for a database server (None)."""
    if study_dir is None:
        return lambda: None
    db = study_dir / STUDY_DB
    seen: dict[str, int] = {}

    def check() -> None:
        try:
            stat = os.stat(db)
        except FileNotFoundError:
            if not seen:
                return  # not created yet: the study opens it first
            raise StorageLost(f"{db} was deleted while the study ran; its trials are lost unless restored") from None
        identity = {"dev": stat.st_dev, "ino": stat.st_ino}
        if seen and (seen["dev"], seen["ino"]) != (identity["dev"], identity["ino"]):
            raise StorageLost(f"{db} was replaced by another file while the study ran; the daemon stops writing")
        if seen and stat.st_size < seen["size"]:
            raise StorageLost(
                f"{db} shrank from {seen['size']} to {stat.st_size} bytes while the study ran (truncated); "
                "restore it, or move it aside"
            )
        seen.update(identity, size=max(stat.st_size, seen.get("size", 0)))

    return check


def _shutdown_ray() -> None:
    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - a half-started Ray is torn down as far as it goes
        pass


if __name__ == "__main__":
    sys.exit(run_daemon(sys.argv[1:]))
