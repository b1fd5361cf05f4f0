"""Where trials run: Ray tasks, each supervising the trial in a child process.

Why a child process inside the Ray task: Ray reports a dead worker as "WorkerCrashedError"
without the signal, and cancelling a task kills the (reused) worker. Running the trial in a
forked child lets the task see the exit signal ("worker died: signal 11 (SIGSEGV) during
build"), enforce `--trial-timeout` by killing only the child, and keep the Ray worker alive.
The worker imports the heavy modules once; each fork inherits them, so a trial starts in
milliseconds. (A fork server would be cleaner, but its children re-import the parent's
`__main__` — Ray's worker script — which cost 0.6 s a trial.) The child touches nothing of
Ray's, so the Ray threads it inherits stay dormant.

CPU targets: each concurrent trial owns a disjoint set of cores (its affinity, and thread
counts capped to it), so parallel measurements never share the hardware they measure. With
the default of one worker, a trial owns every core. GPU targets: one trial per GPU
(`num_gpus=1`); the child sees exactly the GPU Ray assigned.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from autotune.errors import AutotuneError, first_line
from autotune.lazy import lazy_module
from autotune.model import free_memory_bytes
from autotune.ort_logging import route_onnxruntime_logging
from autotune.targets import target_class
from autotune.trial import STAGE_FILE, PairedRequest, TrialRequest, TrialResult, run_paired, run_trial

if TYPE_CHECKING:
    import ray
else:
    ray = lazy_module("ray")  # loaded on first use: importing Ray costs every CLI command ~0.4 s


class Executor:
    """Where trials run. `submit` hands a request over; `wait` returns finished results."""

    capacity: int = 1
    asynchronous: bool = False  # True when submitted trials run while the study loop goes on

    def submit(self, request: TrialRequest) -> None:
        raise NotImplementedError

    def wait(self, timeout_s: float) -> list[TrialResult]:
        raise NotImplementedError

    def in_flight(self) -> int:
        raise NotImplementedError

    def cancel_all(self, reason: str) -> None:
        """Stops every in-flight trial; each comes back from `wait` failed with `reason`."""

    def close(self) -> None:
        """Releases workers."""


class InProcessExecutor(Executor):
    """Runs each trial synchronously in this process (foreground runs and tests)."""

    def __init__(self, run: Callable[[TrialRequest], TrialResult] | None = None) -> None:
        self._run = run or run_trial
        self._done: list[TrialResult] = []

    def submit(self, request: TrialRequest) -> None:
        self._done.append(self._run(request))

    def wait(self, timeout_s: float) -> list[TrialResult]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)


# Every module a trial imports: the worker imports them once, forked children start warm.
_PRELOAD = [
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime.quantization",
    "onnx_graphsurgeon",
    "polygraphy.comparator",
    "autotune.trial",
    "autotune.passes",
    "autotune.verify",
    "autotune.targets.onnxruntime",
    "autotune._warmup",
]


def preload() -> None:
    """Imports every module a trial needs (once per process)."""

    for name in _PRELOAD:
        importlib.import_module(name)

    route_onnxruntime_logging()


MEMORY_RESERVE_SHARE = 0.05  # of the machine's memory, kept free: below it a trial child is stopped
MEMORY_RESERVE_MIN = 512 * 2**20


class MemoryGuard:
    """Stops a trial's child process before the machine runs out of memory, so that a runaway
    trial (a shape or batch larger than the machine holds) fails alone, with a reason, and the
    kernel's OOM killer never picks a process that is not the study's. Two layers: the child
    volunteers as the OOM killer's first choice (`oom_score_adj` 1000, `volunteer`), and the
    parent polls the machine's available memory (`exhausted`) while it waits for the child."""

    def __init__(self) -> None:

        total = _meminfo_bytes("MemTotal:")
        self.reserve = max(int(MEMORY_RESERVE_SHARE * total), MEMORY_RESERVE_MIN) if total else 0
        self._free = free_memory_bytes

    @staticmethod
    def volunteer(score: int = 1000) -> None:
        """Be among the first processes the kernel's OOM killer ends: a trial child at 1000 (the
        first), the daemon at 500 (before any process that is not the study's, at 0)."""
        try:
            with open("/proc/self/oom_score_adj", "w", encoding="ascii") as adj:
                adj.write(str(score))
        except OSError:
            pass

    def exhausted(self, pid: int | None) -> str | None:
        """The reason to stop the child `pid` when less than the reserve is left, else None."""
        free = self._free() if self.reserve else None
        if free is None or free >= self.reserve:
            return None
        resident = _resident_bytes(pid)
        return (
            f"stopped at {resident / 2**30:.1f} GiB resident: less than {self.reserve / 2**30:.1f} GiB of the machine's "
            "memory was left (a shape or batch larger than this machine holds: pass a smaller --shape or --batch)"
        )


def _meminfo_bytes(field: str) -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            return next((int(line.split()[1]) * 1024 for line in meminfo if line.startswith(field)), 0)
    except (OSError, ValueError, IndexError):
        return 0


def _resident_bytes(pid: int | None) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, TypeError):
        return 0


def _child_main(request: TrialRequest, cores: list[int] | None, env: dict[str, str], conn: Any) -> None:
    """Runs in the forked child: pin, die with the parent, run the trial, send the result."""
    _die_with_parent()
    MemoryGuard.volunteer()
    os.environ.update(env)
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    conn.send(run_trial(request))
    conn.close()
    _exit_child()


def _exit_child() -> None:
    """Ends a forked child whose result is sent, skipping the teardown (finalizers, the sessions'
    allocators)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _reap_later(child: Any) -> None:
    """Kills a child whose result is in and reaps it off the study's critical path: what it
    still does is teardown (a CUDA context takes the kernel a noticeable time to free)."""
    child.kill()
    threading.Thread(target=child.join, args=(10,), daemon=True).start()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a cancelled (killed) worker takes its trial child with it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _stage(request: TrialRequest) -> str:
    try:
        return (request.workdir / STAGE_FILE).read_text().strip() or "setup"
    except OSError:
        return "setup"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def run_isolated(
    request: TrialRequest,
    cores: list[int] | None = None,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
) -> TrialResult:
    """Runs `run_trial(request)` in a child process; a crash or a timeout fails only the trial.

    Args:
        request (TrialRequest): the trial.
        cores (list[int] | None): CPU cores the child is pinned to. Default: None (inherit).
        timeout_s (float | None): kill the child after this long. Default: None (no limit).
        env (dict | None): environment the child sets first (CUDA_VISIBLE_DEVICES). Default: {}.
    """

    preload()
    context = mp.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    started = time.monotonic()
    child = context.Process(target=_child_main, args=(request, cores, env or {}, send), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12: fork with threads
        child.start()
    send.close()
    result: TrialResult | None = None
    deadline = None if timeout_s is None else started + timeout_s
    guard = MemoryGuard()
    while True:
        wait = 0.25 if deadline is None else max(min(0.25, deadline - time.monotonic()), 0)
        if receive.poll(wait):
            try:
                result = receive.recv()
            except EOFError:
                result = None
            break
        if not child.is_alive():
            break
        exhausted = guard.exhausted(child.pid)
        if exhausted:
            stage = _stage(request)
            child.kill()
            child.join(5)
            return _failed(request, f"{exhausted} during {stage}", started)
        if deadline is not None and time.monotonic() >= deadline:
            stage = _stage(request)
            child.kill()
            child.join(5)
            return _failed(request, f"timed out after {timeout_s:.0f} s (--trial-timeout) during {stage}", started)
    if result is not None:
        _reap_later(child)
        return result
    child.join(10)
    code = child.exitcode
    stage = _stage(request)
    if code is not None and code < 0:
        reason = f"worker died: signal {-code} ({_signal_name(-code)}) during {stage}"
    else:
        reason = f"worker died: exit code {code} during {stage}"
    return _failed(request, reason, started)


def _failed(request: TrialRequest, reason: str, started: float) -> TrialResult:
    return TrialResult(
        number=request.number,
        config=dict(request.config),
        state="failed",
        reason=reason,
        workdir=str(request.workdir),
        timings_s={"total_s": time.monotonic() - started},
    )


def _remote_warm() -> int:
    """A worker's first task, sent when the executor starts: the imports a cold first trial would
    pay, done while the driver still prepares the study (references, storage)."""
    preload()
    return os.getpid()


def _remote_trial(
    request: TrialRequest, input_pool: Any, references: Any, cores: list[int] | None, timeout_s: float | None
) -> TrialResult:
    """Body of the Ray task. The study-wide arrays arrive as object-store values, put once."""
    started = time.monotonic()
    request = replace(request, input_pool=input_pool, reference_outputs=references)
    env = {}
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(g)) for g in gpu_ids)
    result = run_isolated(request, cores, timeout_s, env)
    result.build["worker_pid"] = os.getpid()  # one warm worker serves many trials (issue 13)
    result.build["ray_node_id"] = ray.get_runtime_context().get_node_id()  # which machine ran it
    # The task's own wall time: minus the trial's total_s, what forking and collecting a child costs.
    result.timings_s["worker_s"] = time.monotonic() - started
    return result


def _call_child(function: Any, argument: Any, env: dict[str, str], conn: Any) -> None:
    """Runs in the forked child: `function(argument)`, its result or its error sent back."""
    _die_with_parent()
    MemoryGuard.volunteer()
    os.environ.update(env)
    try:
        conn.send(("ok", function(argument)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"))
    conn.close()
    _exit_child()


def run_paired_isolated(request: PairedRequest, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs `run_paired(request)` in a forked child, as `run_isolated` runs a trial: whatever
    the measurement initializes (a CUDA context) lives and dies in the child.

    Raises:
        AutotuneError: the measurement failed (its one-line reason) or the child died (its signal).
    """
    return _run_in_child(run_paired, request, env, "paired measurement")


def _run_in_child(function: Any, argument: Any, env: dict[str, str] | None, what: str) -> Any:

    preload()
    context = mp.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_call_child, args=(function, argument, env or {}, send), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12: fork with threads
        child.start()
    send.close()
    guard = MemoryGuard()
    try:
        while not receive.poll(0.25):
            exhausted = guard.exhausted(child.pid)
            if exhausted and child.is_alive():
                child.kill()
                child.join(5)
                raise AutotuneError(f"{what}: {exhausted}")
        status, value = receive.recv()
    except EOFError:
        child.join(10)
        code = child.exitcode
        why = f"signal {-code} ({_signal_name(-code)})" if code is not None and code < 0 else f"exit code {code}"
        raise AutotuneError(f"{what}: its worker died: {why}") from None
    _reap_later(child)
    if status != "ok":
        raise AutotuneError(f"{what} failed: {value}")
    return value


def _remote_profile(
    copy: tuple[Any, str], files: dict[str, Any], profile: Callable[[tuple[Any, str]], dict[str, Any]]
) -> dict[str, Any]:
    """Body of finalize's profile task: `profile(copy)` in a forked child, on the task's GPU
    (`files` as `_materialize` takes them: the study's input samples)."""
    _materialize(files)
    env = {}
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(g)) for g in gpu_ids)
    result = _run_in_child(profile, copy, env, "profile")
    result["worker_pid"] = os.getpid()
    result["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return result


def _materialize(files: dict[str, Any]) -> None:
    """Writes each file (path -> its bytes in the object store) this node lacks (another machine)."""
    for path, ref in files.items():
        if not Path(path).exists():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(ray.get(ref))


def _remote_paired(request: PairedRequest, models: dict[str, Any]) -> dict[str, Any]:
    """Body of finalize's paired-measurement task. `models` maps each model path to its bytes
    in the object store, fetched only on a node that lacks the file (another machine)."""
    _materialize(models)
    env = {}
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(g)) for g in gpu_ids)
    try:
        result = run_paired_isolated(request, env)
    finally:
        shutil.rmtree(request.workdir, ignore_errors=True)
    result["worker_pid"] = os.getpid()
    result["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return result


RAY_DIR_PREFIX = "autotune-ray-"
RAY_OWNER_FILE = "owner.pid"


def reap_stale_ray_dirs(tmp: str | None = None) -> list[str]:
    """Ends what a killed daemon's local Ray cluster left behind, and returns the directories
    removed: Ray's agents (the dashboard's and the runtime-env agent, ~160 MB, one listening on
    loopback) outlive a daemon killed with -9 for about a minute, and its `autotune-ray-*`
    directory stays. A directory whose owner (`owner.pid`) is no longer alive is stale: every
    process whose command line names it is killed, then it is removed. Directories of live
    daemons, and those of other users, are left alone."""

    root = Path(tmp or tempfile.gettempdir())
    removed = []
    for directory in root.glob(f"{RAY_DIR_PREFIX}*"):
        try:
            owner = int((directory / RAY_OWNER_FILE).read_text())
            if directory.stat().st_uid != os.getuid():
                continue
        except (OSError, ValueError):
            continue  # not ours to judge (an older autotune's, or another user's)
        if psutil.pid_exists(owner):
            continue
        for process in psutil.process_iter(["cmdline"]):
            try:
                if any(str(directory) in part for part in process.info["cmdline"] or ()):
                    process.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(str(directory))
    return removed


RAY_START_ATTEMPTS = 2  # a start-up that timed out once is tried once more


class RayStartError(AutotuneError):
    """The local Ray cluster did not start: a runtime failure (exit 1), said with what to try."""


def _is_start_timeout(exc: BaseException) -> bool:
    """Ray's own start-up time-outs: "The current node timed out during startup" (its raylet did
    not register with the GCS within Ray's fixed 30 s), and a GCS or node it gave up waiting for."""
    text = str(exc).lower()
    return isinstance(exc, TimeoutError) or "timed out" in text or "timeout" in text


def start_local_ray(init: Callable[..., Any], shutdown: Callable[[], None], **options: Any) -> None:
    """`init(**options)` (`ray.init` of a local cluster), tried again once when Ray's start-up
    timed out; RayStartError saying what to try when it times out again. Any other failure is
    raised as it is.

    Under load (a 2-core machine running another test suite beside a study) Ray's raylet can take
    longer than the 30 s Ray waits for it, and `start` failed with "The current node timed out
    during startup" though a second start works (issue 29). `shutdown` (`ray.shutdown`) ends what
    the failed start left running before the next try.

    Args:
        init (Callable): `ray.init`.
        shutdown (Callable): `ray.shutdown`.
        **options: `ray.init`'s keyword arguments.
    """
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            init(**options)
            return
        except Exception as exc:  # Ray raises a bare Exception; only its start-up time-out is tried again
            if not _is_start_timeout(exc):
                raise
            shutdown()
            if attempt == RAY_START_ATTEMPTS:
                raise RayStartError(
                    f"the local Ray cluster timed out starting, {RAY_START_ATTEMPTS} times ({first_line(exc, 120)}); "
                    "the machine is likely too loaded: try fewer --workers, a machine with less load, "
                    "or a running cluster with --ray-address"
                ) from None
            # INFO: the daemon's log keeps it; a terminal gets only the one line of a second time-out
            logging.getLogger("autotune.workers").info(
                "the local Ray cluster timed out starting (%s); trying once more", first_line(exc, 120)
            )


@dataclass
class _InFlight:
    number: int
    request: TrialRequest
    slot: int
    submitted: float
    started: float | None  # None while queued behind another trial of its worker (prefetch)


# The Ray task itself gets this long past --trial-timeout: the child's own timeout normally
# fires first and the task returns within seconds; a task still out after this is a worker
# that cannot answer (stopped, wedged in a system call), and is killed from the driver.
WORKER_TIMEOUT_SLACK_S = 30.0  # also covers a cold worker's imports (seconds on 2 cores)


class RayExecutor(Executor):
    """Runs trials as Ray tasks on a local cluster it owns, or on an existing one.

    Args:
        workers (int | None): parallel trials; None: one per GPU Ray sees (GPU targets), else one.
        gpu (bool): reserve one GPU per trial (GPU targets).
        address (str | None): join this Ray cluster; None starts a local one. Default: None.
        trial_timeout_s (float | None): fail trials that run longer. Default: None.
        prefetch (bool | None): queue each worker's next trial behind its running one, on a
            local cluster whose resources cap the trials running at once at `workers`; None:
            on GPU targets (on a CPU target the driver's ask and tell would share the measured
            cores). Default: None.
        warm_up (bool | None): have every worker import what a trial needs at once; None: on
            a cluster the executor starts itself. On a joined cluster a warm-up task holds a
            node's GPU while it imports, and the first trials, queued at the other node's
            raylet, waited there for its GPU (a CI run saw every trial of a two-node study on
            one node). Default: None.
    """

    def __init__(
        self,
        workers: int | None,
        *,
        gpu: bool = False,
        address: str | None = None,
        trial_timeout_s: float | None = None,
        prefetch: bool | None = None,
        warm_up: bool | None = None,
    ) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is None:
            local_only_ray()
        self.gpu = gpu
        self.trial_timeout_s = trial_timeout_s
        self.owns_cluster = address is None and not ray.is_initialized()
        self._ray_dir: str | None = None
        if address is not None and not ray.is_initialized():  # (finalize joins again after the study)
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        elif not ray.is_initialized():
            # Ray makes its temp dir world-writable (0777): it lives inside a private 0700 one.
            reap_stale_ray_dirs()
            self._ray_dir = tempfile.mkdtemp(prefix=RAY_DIR_PREFIX)
            Path(self._ray_dir, RAY_OWNER_FILE).write_text(str(os.getpid()))
            try:
                start_local_ray(
                    ray.init,
                    ray.shutdown,
                    num_cpus=max(os.cpu_count() or 1, workers or 1),
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                    configure_logging=True,
                    _temp_dir=os.path.join(self._ray_dir, "ray"),
                )
            except BaseException:
                shutil.rmtree(self._ray_dir, ignore_errors=True)  # a failed start leaves nothing behind
                raise
        if workers is None:
            # Counted once Ray runs: the GPUs of the whole cluster when joined to one.
            workers = max(_visible_gpus(), 1) if gpu else 1
        self.workers = workers
        self.asynchronous = True
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if gpu or address is not None or not cores:
            self.core_sets: list[list[int] | None] = [None] * workers
        else:
            per = max(len(cores) // workers, 1)
            self.core_sets = [cores[i * per : (i + 1) * per] or [cores[i % len(cores)]] for i in range(workers)]
        # Prefetch: each worker has its next trial queued behind the running one, so it starts
        # as soon as Ray sees the worker free, not after the driver's tell and ask (issue 13).
        # Only where the task's resources cap the trials running at once at `workers` (as many
        # GPUs as workers; one local CPU worker owning every core): elsewhere Ray would start
        # the queued trial on a free GPU or core at once. Not by default on a local CPU target:
        # the driver's ask would run on the measured cores.
        # Not on a joined cluster: Ray queues a waiting task at one node's raylet, where it may
        # wait for that node's GPU while another node's is free (seen: every trial on one node).
        capped = _visible_gpus() <= workers if gpu else workers == 1
        joined = address is not None
        self.prefetch = (gpu if prefetch is None else prefetch) and capped and not joined
        if self.prefetch:
            self.core_sets = self.core_sets * 2
        self.capacity = len(self.core_sets)
        options: dict[str, Any] = {"max_retries": 0}
        if gpu:
            options["num_gpus"] = 1
            options["num_cpus"] = 1
            # Ray gives a task with num_gpus > 0 max_calls=1 by default (a fresh worker per
            # task, to free GPU memory the task's process held), which re-imports everything
            # for every trial. Here the worker never touches CUDA: the trial runs in a forked
            # child that exits, so the warm worker can serve every trial.
            options["max_calls"] = 0
        else:
            options["num_cpus"] = 1 if address is not None else max(len(self.core_sets[0] or [1]), 1)
        self._task = ray.remote(**options)(_remote_trial)
        # Every worker imports while the driver prepares; the trials then reuse warm workers.
        warm = not joined if warm_up is None else warm_up
        self._warm = [ray.remote(**options)(_remote_warm).remote() for _ in range(workers if warm else 0)]
        self._paired_task = ray.remote(**options)(_remote_paired)  # where a trial would run
        self._profile_task = ray.remote(**options)(_remote_profile)
        self._model_refs: dict[str, Any] = {}
        self._flights: dict[Any, _InFlight] = {}
        self._shared: tuple[Any, Any, Any, Any] | None = None  # (pool, refs, pool ref, refs ref)
        self._free_slots = list(range(self.capacity))
        self._finished: list[TrialResult] = []

    @classmethod
    def for_spec(
        cls, spec: Any, *, workers: int | None, address: str | None, trial_timeout_s: float | None
    ) -> RayExecutor:
        """Sizes the executor for a study: one worker per GPU on GPU targets (every GPU of the
        cluster joined with `address`), else one."""

        gpu = target_class(spec.target_name).needs_gpu(spec.target_options)
        return cls(workers, gpu=gpu, address=address, trial_timeout_s=trial_timeout_s)

    def submit(self, request: TrialRequest) -> None:
        slot = self._free_slots.pop(0)
        cores = self.core_sets[slot]
        # The input pool and the references are the same for every trial of a study: put them
        # in the object store once instead of pickling megabytes into every task.
        shared = self._shared
        if shared is None or shared[0] is not request.input_pool or shared[1] is not request.reference_outputs:
            shared = (
                request.input_pool,
                request.reference_outputs,
                ray.put(request.input_pool),
                ray.put(request.reference_outputs),
            )
            self._shared = shared
        light = replace(request, input_pool={}, reference_outputs={})
        ref = self._task.remote(light, shared[2], shared[3], cores, self.trial_timeout_s)
        now = time.monotonic()
        running = sum(1 for flight in self._flights.values() if flight.started is not None)
        self._flights[ref] = _InFlight(request.number, request, slot, now, now if running < self.workers else None)

    def run_paired(self, request: PairedRequest) -> dict[str, Any]:
        """Runs one of finalize's paired measurements as a task shaped like a trial's (one GPU
        on GPU targets), in a forked child of the worker; returns `run_paired`'s dict plus
        `worker_pid` and `ray_node_id`. Waits in short steps, so the caller's signal handlers
        (`stop --now`) run meanwhile.

        Raises:
            AutotuneError: the measurement failed or its worker died.
        """
        models = {}
        # the trials' own engines too: the paired run measures the files export ships
        artifacts = [p for p in (request.artifact_a, request.artifact_b) if p is not None and Path(p).is_file()]
        for path in (request.model_a, request.model_b, *artifacts):
            key = str(Path(path).resolve())
            if key not in self._model_refs:
                self._model_refs[key] = ray.put(Path(path).read_bytes())
            models[str(path)] = self._model_refs[key]
        return self._await(self._paired_task.remote(request, models), "paired measurement")

    def profile(
        self,
        study_copy: tuple[Any, str],
        profile: Callable[[tuple[Any, str]], dict[str, Any]],
        files: tuple[Path, ...] = (),
    ) -> dict[str, Any]:
        """Runs finalize's profile (`profile`: `autotune.finalize.profile_study_copy`) on a copy of
        the study (an in-memory Optuna storage and the study name: workers never touch the real
        storage) as a task shaped like a trial's, in a forked child; returns what `profile`
        returns (`{"data": the profile or None, "set_user_attrs": what it recorded}`) with
        "worker_pid" and "ray_node_id".
        `files` (the study's input samples) are shipped to a node that lacks them.

        Raises:
            AutotuneError: its worker died.
        """
        shipped = {str(path): ray.put(Path(path).read_bytes()) for path in files if Path(path).is_file()}
        return self._await(self._profile_task.remote(study_copy, shipped, profile), "profile")

    def _await(self, ref: Any, what: str) -> Any:
        while not ray.wait([ref], timeout=0.5)[0]:
            pass
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), AutotuneError) else None
            if cause is not None:
                raise cause from None
            raise AutotuneError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
        except ray.exceptions.RayError as exc:  # the worker itself died
            raise AutotuneError(f"{what}: its Ray worker died ({type(exc).__name__})") from None

    def in_flight(self) -> int:
        return len(self._flights)

    def wait(self, timeout_s: float) -> list[TrialResult]:
        self._cancel_overdue()
        results, self._finished = self._finished, []
        if not self._flights:
            return results
        ready, _ = ray.wait(list(self._flights), num_returns=1, timeout=timeout_s)
        if ready:
            more, _ = ray.wait(list(self._flights), num_returns=len(self._flights), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        for ref in ready:
            flight = self._flights.pop(ref)
            self._free_slots.append(flight.slot)
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - the Ray worker itself died (OOM kill of the supervisor)
                stage = _stage(flight.request)
                results.append(
                    _failed(flight.request, f"worker died: {type(exc).__name__} during {stage}", flight.submitted)
                )
        self._start_queued()
        return results

    def _start_queued(self) -> None:
        """Starts the --trial-timeout clock of queued trials as workers free up (Ray runs a
        scheduling class's tasks in submission order)."""
        running = sum(1 for flight in self._flights.values() if flight.started is not None)
        queued = sorted((f for f in self._flights.values() if f.started is None), key=lambda f: f.submitted)
        for flight in queued[: max(self.workers - running, 0)]:
            flight.started = time.monotonic()

    def _cancel_overdue(self) -> None:
        """Kills the tasks running past --trial-timeout plus the slack (see above)."""
        if self.trial_timeout_s is None:
            return
        limit = self.trial_timeout_s + WORKER_TIMEOUT_SLACK_S
        for ref, flight in list(self._flights.items()):
            if flight.started is None or time.monotonic() - flight.started < limit:
                continue
            ray.cancel(ref, force=True)
            self._flights.pop(ref)
            self._free_slots.append(flight.slot)
            reason = (
                f"timed out after {self.trial_timeout_s:.0f} s (--trial-timeout) during {_stage(flight.request)}; "
                f"its Ray worker did not answer for {limit:.0f} s and was killed"
            )
            self._finished.append(_failed(flight.request, reason, flight.submitted))

    def cancel_all(self, reason: str) -> None:
        for ref, flight in list(self._flights.items()):
            ray.cancel(ref, force=True)
            self._flights.pop(ref)
            self._free_slots.append(flight.slot)
            self._finished.append(
                _failed(flight.request, f"{reason} (during {_stage(flight.request)})", flight.submitted)
            )

    def close(self) -> None:
        if self.owns_cluster and ray.is_initialized():
            ray.shutdown()
        if self._ray_dir is not None:
            shutil.rmtree(self._ray_dir, ignore_errors=True)
            self._ray_dir = None


def local_only_ray() -> None:
    """Makes a Ray cluster started by this process listen on 127.0.0.1 only.

    Ray resolves a node IP of 127.0.0.1 to the host's external address, and its gRPC servers
    (GCS, raylet, core workers) then listen on every interface, unauthenticated. With
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 its node IP is the loopback address and every server binds
    there (checked with psutil in tests/test_dashboard.py). Ray reads the variable when it is
    first imported, so an already imported Ray gets the constant set too; the flag has no other
    effect on Linux than this (and `ray start`). A cluster joined with --ray-address is left as is.
    """

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 - a module attribute Ray's stubs lack


def _visible_gpus() -> int:
    try:
        return int(ray.cluster_resources().get("GPU", 0))
    except Exception:  # noqa: BLE001 - any error of the library here is reported as this one line
        return 0
