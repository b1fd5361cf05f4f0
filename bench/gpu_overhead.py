"""GPU studies at full speed (issue 13): overhead with one warm worker per GPU, scaling from one
GPU to two, placement, and the interference of a neighbour GPU. Runs on the lent GPU machine.

    python bench/gpu_overhead.py study MODEL [--shape S] [--inputs F] --trials N --workers 1 2 --json OUT
    python bench/gpu_overhead.py interfere MODEL [--shape S] [--inputs F] --json OUT   (needs 2 GPUs)
    python bench/gpu_overhead.py render JSON... > bench/OVERHEAD-GPU.md

`study` runs the same study (same model, seed and trial count) once per `--workers` value through
`autotune.study.run_study` and the daemon's own executor (`RayExecutor.for_spec`: one GPU per
trial, warm workers that fork a child per trial). Overhead = (study wall − Σ trials' own
`total_s`) / study wall, wall from the first ask to the last tell; start-up (Ray, the FP32
references) is reported apart. `--modes pipelined serial` runs each study twice, back to back:
as autotune runs it now (workers warmed while the references are computed, each worker's next
trial queued behind its running one) and as before (neither).
While it runs, `nvidia-smi --query-compute-apps` is sampled every 0.2 s: every process holding a
CUDA context, with its parent, so the record shows which GPU each trial child used, whether two
trial children ever shared a GPU, how many distinct Ray workers forked them (warm workers: one
per GPU), and whether the driver (the daemon's role) ever held a CUDA context.

`interfere` measures one configuration (the defaults) on GPU 0 in blocks, alternating "alone"
with "while GPU 1 runs the same model flat out" (a neighbour process that a flag file starts and
pauses), and gives the paired ratio of the two (median of per-round ratios, IQR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("AUTOTUNE_TREE"):
    sys.path.insert(0, str(REPO))


def _spec(model: str, shapes: list[str], inputs: str | None, trials: int, name: str, root: Path) -> Any:
    from autotune.spec import prepare_start, start_args

    options = {"trials": str(trials), "study": name, "results_dir": root, "seed": "0", "max_measure_s": "1"}
    if shapes:
        options["shape"] = list(shapes)
    if inputs:
        options["inputs"] = Path(inputs)
    spec, _ = prepare_start(start_args(model, **options))
    return spec


class GpuSampler:
    """Samples the processes that hold a CUDA context, with their parents, every `period_s`."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _run(self) -> None:
        import psutil

        uuids = {}
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout
        for line in out.strip().splitlines():
            index, uuid = (part.strip() for part in line.split(","))
            uuids[uuid] = int(index)
        while not self._stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
                capture_output=True,
                text=True,
            ).stdout
            procs = []
            for line in out.strip().splitlines():
                if "," not in line:
                    continue
                pid, uuid = (part.strip() for part in line.split(","))
                try:
                    parent = psutil.Process(int(pid)).ppid()
                except (psutil.Error, ValueError):
                    parent = None
                procs.append({"pid": int(pid), "ppid": parent, "gpu": uuids.get(uuid, uuid)})
            self.samples.append({"t": time.monotonic(), "procs": procs})
            self._stop.wait(self.period_s)


def placement(samples: list[dict[str, Any]], driver_pid: int) -> dict[str, Any]:
    """What the samples say: trial children per GPU, GPUs ever shared, workers that forked them,
    and whether the driver held a CUDA context."""
    children: dict[int, set[int]] = {}
    parents: set[int] = set()
    shared = 0
    driver_on_gpu = False
    for sample in samples:
        per_gpu: dict[Any, set[int]] = {}
        for proc in sample["procs"]:
            if proc["pid"] == driver_pid:
                driver_on_gpu = True
                continue
            per_gpu.setdefault(proc["gpu"], set()).add(proc["pid"])
            children.setdefault(proc["gpu"], set()).add(proc["pid"])
            if proc["ppid"] is not None:
                parents.add(proc["ppid"])
        shared += any(len(pids) > 1 for pids in per_gpu.values())
    return {
        "samples": len(samples),
        "trial_processes_per_gpu": {str(gpu): len(pids) for gpu, pids in sorted(children.items(), key=str)},
        "samples_with_a_shared_gpu": shared,
        "forking_workers": len(parents),
        "driver_held_cuda": driver_on_gpu,
    }


class Recording:
    """The executor, recording every result it hands back: trials and the study's drift controls
    (re-measurements of the defaults, numbered below 0, which `on_result` never sees)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.results: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def wait(self, timeout_s: float) -> list[Any]:
        results = self.inner.wait(timeout_s)
        self.results += results
        return results


def run_study_once(args: argparse.Namespace, workers: int, root: Path, mode: str = "pipelined") -> dict[str, Any]:
    """One study as the daemon runs it. `pipelined` (autotune now): the executor starts first, its
    workers import while the references are computed, each worker's next trial is queued behind
    its running one. `serial` (autotune before): references, then the executor, no warm-up, the
    next trial asked only once a result is in."""
    from autotune.study import compute_references, run_study
    from autotune.targets import target_class
    from autotune.workers import RayExecutor

    spec = _spec(args.model, args.shape or [], args.inputs, args.trials, f"w{workers}-{mode}", root)
    if args.sampler == "random":
        # The same configurations whatever the number of workers (TPE asks depend on the order
        # results arrive in), so trials per minute compare like with like across worker counts.
        spec = replace(spec, sampler="random", known_good=[])
    pipelined = mode == "pipelined"
    started = time.monotonic()
    if not pipelined:
        references = compute_references(spec)
    gpu = target_class(spec.target_name).needs_gpu(spec.target_options)
    inner = RayExecutor(
        workers, gpu=gpu, trial_timeout_s=180.0, prefetch=None if pipelined else False, warm_up=pipelined
    )
    executor = Recording(inner)
    if pipelined:
        references = compute_references(spec)
    startup_s = time.monotonic() - started
    inside: list[float] = []
    arrived: list[float] = []
    in_worker: list[float] = []

    def on_result(result: Any, study: Any) -> None:
        inside.append(float(result.timings_s.get("total_s", 0.0)))
        in_worker.append(float(result.timings_s.get("worker_s", 0.0)))
        arrived.append(time.monotonic())

    with GpuSampler() as sampler:
        start = time.monotonic()
        try:
            study = run_study(spec, executor, references=references, on_result=on_result)
        finally:
            end = time.monotonic()
            wall_s = end - start
            executor.close()
    controls = [r for r in executor.results if r.number < 0]
    worker_pids = sorted({r.build.get("worker_pid") for r in executor.results if r.build.get("worker_pid")})
    states: dict[str, int] = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return {
        "workers": workers,
        "mode": mode,
        "sampler": args.sampler,
        "gpu": executor.gpu,
        "controls": len(controls),
        "controls_worker_s": sum(float(r.timings_s.get("worker_s", 0.0)) for r in controls),
        "worker_pids": worker_pids,
        "trials": len(study.trials),
        "results": len(inside),
        "states": states,
        "wall_s": wall_s,
        "inside_trials_s": sum(inside),
        # Σ Ray task wall: (Σ worker − Σ trial) is the child's fork and collection, the rest the
        # driver's ask/tell and Ray's dispatch.
        "inside_workers_s": sum(in_worker),
        "overhead": (wall_s - sum(inside) / workers) / wall_s,
        # The drift controls are measurement (issue 18), not orchestration: their worker time counts as work.
        "overhead_without_controls": (
            wall_s - (sum(inside) + sum(float(r.timings_s.get("worker_s", 0.0)) for r in controls)) / workers
        )
        / wall_s,
        "trials_per_min": len(inside) / wall_s * 60,
        # Once every worker is warm (after the first `workers` results: their cold imports).
        "overhead_warm": _warm_overhead(inside, arrived, end, workers),
        "startup_s": startup_s,
        "trial_total_s_median": sorted(inside)[len(inside) // 2] if inside else None,
        "placement": placement(sampler.samples, os.getpid()) if sampler.available else None,
    }


def _warm_overhead(inside: list[float], arrived: list[float], end: float, workers: int) -> float | None:
    if len(arrived) <= workers:
        return None
    wall = end - arrived[workers - 1]
    return (wall - sum(inside[workers:]) / workers) / wall if wall > 0 else None


def cmd_study(args: argparse.Namespace) -> int:
    rows = []
    for workers in args.workers:
        for mode in args.modes:
            root = Path(tempfile.mkdtemp(prefix="autotune-gpu-overhead-"))
            try:
                rows.append(run_study_once(args, workers, root, mode))
                print(json.dumps(rows[-1]), flush=True)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    record = {"kind": "study", "model": Path(args.model).name, "shape": args.shape, "rows": rows, "env": _env()}
    Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


NEIGHBOUR = """
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["AUTOTUNE_TREE_PATH"], "bench"))
from gpu_overhead import _session
flag, args = sys.argv[1], sys.argv[2:]
timer = _session(args)
while os.path.exists(flag + ".alive"):
    if os.path.exists(flag):
        timer()
    else:
        time.sleep(0.005)
"""


def _session(argv: list[str]) -> Any:
    """A timer on the defaults at batch 1 on the visible GPU (the child's CUDA_VISIBLE_DEVICES)."""
    from autotune.model import feeds_at_batch
    from autotune.targets import target_class

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--shape", action="append")
    parser.add_argument("--inputs")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="autotune-interfere-"))
    spec = _spec(args.model, args.shape or [], args.inputs, 1, "interfere", root)
    config = spec.space.default_config()
    feeds = feeds_at_batch(spec.input_pool, 1, spec.model.dynamic_batch)
    target = target_class(spec.target_name)(spec.target_options)
    built = target.build(spec.model.path, config, root / "build", {k: list(v.shape) for k, v in feeds.items()})
    session = target.open(built, config)
    timer = session.timer(feeds)
    for _ in range(20):
        timer()
    return timer


def cmd_interfere(args: argparse.Namespace) -> int:
    import numpy as np

    model_args = [args.model] + [f"--shape={s}" for s in args.shape or []]
    if args.inputs:
        model_args.append(f"--inputs={args.inputs}")
    flag = Path(tempfile.mkdtemp(prefix="autotune-neighbour-")) / "busy"
    Path(str(flag) + ".alive").touch()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1", "AUTOTUNE_TREE_PATH": str(REPO)}
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(flag), *model_args], env=env)
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    timer = _session(model_args)
    time.sleep(15)  # the neighbour builds its session meanwhile
    ratios, alone_ms, busy_ms = [], [], []
    try:
        for r in range(args.rounds):
            blocks = {}
            for busy in (False, True) if r % 2 == 0 else (True, False):
                if busy:
                    flag.touch()
                else:
                    flag.unlink(missing_ok=True)
                time.sleep(0.1)
                for _ in range(5):
                    timer()
                times = [timer() for _ in range(args.runs)]
                blocks[busy] = float(np.percentile(times, 10))
            flag.unlink(missing_ok=True)
            ratios.append(blocks[True] / blocks[False])
            alone_ms.append(blocks[False] * 1e3)
            busy_ms.append(blocks[True] * 1e3)
    finally:
        Path(str(flag) + ".alive").unlink(missing_ok=True)
        neighbour.wait(timeout=60)
    record = {
        "kind": "interfere",
        "model": Path(args.model).name,
        "config": "the defaults at batch 1",
        "rounds": args.rounds,
        "ratio_busy_over_alone": {
            "median": float(np.median(ratios)),
            "p25": float(np.percentile(ratios, 25)),
            "p75": float(np.percentile(ratios, 75)),
        },
        "alone_ms_median": float(np.median(alone_ms)),
        "busy_ms_median": float(np.median(busy_ms)),
        "env": _env(),
    }
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record))
    return 0


def _env() -> dict[str, Any]:
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    if shutil.which("nvidia-smi"):
        out["gpus"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    commit = Path(REPO, ".commit")
    out["autotune"] = commit.read_text().strip() if commit.exists() else "working tree"
    return out


def cmd_render(args: argparse.Namespace) -> int:
    lines = []
    for path in args.json:
        record = json.loads(Path(path).read_text())
        if record["kind"] == "study":
            lines += [
                f"### {record['model']} {' '.join(record['shape'] or [])}: {_gpus(record)}; "
                f"autotune {record['env'].get('autotune')}; sampler {record['rows'][0].get('sampler', 'tpe')}",
                "",
                "| workers | mode | trials told | states | study wall s | Σ trial time s | Σ worker task s | overhead "
                "| overhead, warm workers | drift controls (worker s) | overhead, controls counted as work "
                "| trials/min "
                "| median trial s | start-up s (Ray, references) | start-up + wall s | trial processes per GPU | samples with a shared GPU "
                "| workers that ran trials | driver held CUDA |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in record["rows"]:
                p = row["placement"] or {}
                lines.append(
                    f"| {row['workers']} | {row.get('mode', 'serial')} | {row['results']} | {row['states']} | {row['wall_s']:.1f} "
                    f"| {row['inside_trials_s']:.1f} | {row.get('inside_workers_s', 0):.1f} | {100 * row['overhead']:.1f}% "
                    f"| {_pct(row.get('overhead_warm'))} | {row.get('controls', '-')} ({row.get('controls_worker_s', 0):.1f}) "
                    f"| {_pct(row.get('overhead_without_controls'))} | {row['trials_per_min']:.1f} "
                    f"| {row['trial_total_s_median'] or 0:.2f} | {row['startup_s']:.1f} "
                    f"| {row['startup_s'] + row['wall_s']:.1f} "
                    f"| {p.get('trial_processes_per_gpu', '-')} | {p.get('samples_with_a_shared_gpu', '-')} "
                    f"/ {p.get('samples', '-')} | {len(row.get('worker_pids') or []) or p.get('forking_workers', '-')} "
                    f"| {p.get('driver_held_cuda', '-')} |"
                )
            by = {
                row["workers"]: row
                for row in record["rows"]
                if row.get("mode", "serial") == record["rows"][0].get("mode", "serial")
            }
            if 1 in by and 2 in by:
                lines += [
                    "",
                    f"Scaling: {by[2]['trials_per_min'] / by[1]['trials_per_min']:.2f}x the trials per minute.",
                ]
            lines.append("")
        else:
            r = record["ratio_busy_over_alone"]
            lines += [
                f"### Interference, {record['model']}: {_gpus(record)}; autotune {record['env'].get('autotune')}",
                "",
                f"{record['config']} on GPU 0, {record['rounds']} rounds alternating alone / with GPU 1 busy: "
                f"busy ÷ alone = {r['median']:.3f} (IQR {r['p25']:.3f}-{r['p75']:.3f}); "
                f"{record['alone_ms_median']:.3f} ms alone, {record['busy_ms_median']:.3f} ms busy (10th percentile per block).",
                "",
            ]
    print("\n".join(lines))
    return 0


def _gpus(record: dict[str, Any]) -> str:
    names = record["env"].get("gpus", "?").splitlines()
    return f"{len(names)}x {names[0].split(',')[0]}" if names else "?"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("study", "interfere"):
        p = sub.add_parser(name)
        p.add_argument("model")
        p.add_argument("--shape", action="append")
        p.add_argument("--inputs")
        p.add_argument("--json", required=True)
        if name == "study":
            p.add_argument("--trials", type=int, default=24)
            p.add_argument("--workers", type=int, nargs="+", default=[1])
            p.add_argument("--modes", nargs="+", choices=["pipelined", "serial"], default=["pipelined"])
            p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
        else:
            p.add_argument("--rounds", type=int, default=21)
            p.add_argument("--runs", type=int, default=50)
    r = sub.add_parser("render")
    r.add_argument("json", nargs="+")
    args = parser.parse_args()
    return {"study": cmd_study, "interfere": cmd_interfere, "render": cmd_render}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
