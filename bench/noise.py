"""A/A noise of the paired comparison: a default ONNX Runtime CPU session against itself.

Two identical sessions (the defaults) are compared with the paired procedure; any speedup
other than 1.0 and any spread is measurement noise. The old procedure (autotune before issue
18, kept here as `old_paired_speedup`) and the current `autotune.measure.paired_speedup` run
interleaved in the same process, on the same models, so they see the same machine load.
With `--alternatives`, the candidates the new procedure was chosen from run too.

    .venv/bin/python bench/noise.py                  # writes bench/NOISE.md
    .venv/bin/python bench/noise.py --alternatives --repeats 1 --out /tmp/noise.md

Models: examples/example.onnx and two trained models autotune was not developed against,
the PP-OCR text recognizer and direction classifier of the `rapidocr-onnxruntime` wheel
(`pip install --no-deps rapidocr-onnxruntime`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTOTUNE_ORT_PROVIDER", "cpu")

from autotune.measure import PairedSpeedup, paired_speedup, timed_block, warm_block  # noqa: E402

GOAL = "A/A median within 0.98-1.02 and p25-p75 narrower than 0.04"
NOTES = "## Notes"


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    shape: tuple[int, ...]


def models() -> list[Model]:
    sys.path.insert(0, str(ROOT / "bench"))
    from models import ppocr_cls, ppocr_v4_rec

    return [
        Model("example.onnx", ROOT / "examples" / "example.onnx", (1, 3, 96, 96)),
        Model("ppocr_v4_rec (trained)", ppocr_v4_rec(), (1, 3, 48, 320)),
        Model("ppocr_cls (trained)", ppocr_cls(), (1, 3, 48, 192)),
    ]


def old_paired_speedup(
    time_a: Callable[[], float],
    time_b: Callable[[], float],
    *,
    batch_a: int = 1,
    batch_b: int = 1,
    rounds: int = 15,
    iters_per_round: int = 0,
    warmup_iters: int = 3,
    round_s: float = 0.05,
) -> PairedSpeedup:
    """autotune's paired procedure before issue 18, verbatim: one warm-up, ~3-run blocks."""
    warm_a = [time_a() for _ in range(max(warmup_iters, 1))]
    warm_b = [time_b() for _ in range(max(warmup_iters, 1))]
    if iters_per_round <= 0:
        slower = max(float(np.median(warm_a)), float(np.median(warm_b)), 1e-6)
        iters_per_round = int(min(max(round_s / slower, 3), 200))
    ratios, per_a, per_b = [], [], []
    for r in range(rounds):
        order = ((0, time_a), (1, time_b)) if r % 2 == 0 else ((1, time_b), (0, time_a))
        medians = [0.0, 0.0]
        for side, fn in order:
            medians[side] = float(np.median([fn() for _ in range(iters_per_round)]))
        a = medians[0] / batch_a
        b = medians[1] / batch_b
        per_a.append(a)
        per_b.append(b)
        ratios.append(a / b)
    ratios_arr = np.asarray(ratios)
    return PairedSpeedup(
        speedup_median=float(np.median(ratios_arr)),
        speedup_p25=float(np.percentile(ratios_arr, 25)),
        speedup_p75=float(np.percentile(ratios_arr, 75)),
        rounds=rounds,
        a_ms_per_sample_median=float(np.median(per_a)) * 1e3,
        b_ms_per_sample_median=float(np.median(per_b)) * 1e3,
    )


def _session(model: Model, extra: dict[str, str]):
    """A default CPU session as the onnxruntime target opens it, plus `extra` config entries."""
    import onnxruntime as ort

    from autotune.targets.onnxruntime import OnnxRuntimeSession, _cpu_count, session_options

    options = session_options({}, _cpu_count())
    for key, value in extra.items():
        options.add_session_config_entry(key, value)
    session = OnnxRuntimeSession(ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"]))
    name = session.session.get_inputs()[0].name
    feeds = {name: np.random.default_rng(0).random(model.shape, dtype=np.float32)}
    return session, feeds


def in_process(procedure: Callable[..., PairedSpeedup], extra: dict[str, str], **kwargs) -> Callable:
    def measure(model: Model, rounds: int) -> PairedSpeedup:
        a, feeds = _session(model, extra)
        b, _ = _session(model, extra)
        try:
            return procedure(a.timer(feeds), b.timer(feeds), rounds=rounds, **kwargs)
        finally:
            a.close()
            b.close()

    return measure


def _block_server(model: Model, conn) -> None:
    session, feeds = _session(model, {})
    time_once = session.timer(feeds)
    conn.send("ready")
    while (message := conn.recv()) is not None:
        previous, round_s = message
        warm_block(time_once, 3, 0.05, previous)
        samples = timed_block(time_once, round_s, 5)
        conn.send((float(np.median(samples)), float(np.quantile(samples, 0.1))))


def separate_processes(model: Model, rounds: int, round_s: float = 0.2) -> PairedSpeedup:
    """Alternative (c): each session in its own process, blocked on a pipe while the other runs."""
    context = multiprocessing.get_context("spawn")
    conns, children = [], []
    for _ in range(2):
        parent, child = context.Pipe()
        process = context.Process(target=_block_server, args=(model, child), daemon=True)
        process.start()
        conns.append(parent)
        children.append(process)
    try:
        for conn in conns:
            conn.recv()
        previous: list[float | None] = [None, None]
        lows = [0.0, 0.0]
        ratios, medians_a = [], []
        for r in range(rounds):
            for side in (0, 1) if r % 2 == 0 else (1, 0):
                conns[side].send((previous[side], round_s))
                previous[side], lows[side] = conns[side].recv()
            ratios.append(lows[0] / lows[1])
            medians_a.append(previous[0])
        return PairedSpeedup(
            float(np.median(ratios)), float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75)), rounds,
            float(np.median(medians_a)) * 1e3, float(previous[1] or 0) * 1e3,
        )  # fmt: skip
    finally:
        for conn in conns:
            conn.send(None)
        for process in children:
            process.join(timeout=10)


NO_IDLE_SPIN = {"session.force_spinning_stop": "1"}
NO_SPIN = {"session.intra_op.allow_spinning": "0"}
PROCEDURES: dict[str, Callable] = {
    "old": in_process(old_paired_speedup, {}),
    "new": in_process(paired_speedup, {}),
}
ALTERNATIVES: dict[str, Callable] = {
    "new, block median (not p10)": in_process(paired_speedup, {}, block_quantile=0.5),
    "(a) new, no adaptive warm-up": in_process(paired_speedup, {}, warmup_settle=0),
    "(a') new, no warm-up": in_process(paired_speedup, {}, warmup_s=0.0, warmup_iters=0),
    "(b) new + force_spinning_stop": in_process(paired_speedup, NO_IDLE_SPIN),
    "(b') new + allow_spinning=0": in_process(paired_speedup, NO_SPIN),
    "(c) new, separate processes": separate_processes,
}


def run(procedures: dict[str, Callable], repeats: int, rounds: int) -> tuple[list[dict], list[float]]:
    rows, loads = [], [os.getloadavg()[0]]
    names = list(procedures)
    for repeat in range(repeats):
        for model in models():
            # Rotate the order so no procedure always runs first (or right after another).
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in order:
                start = time.perf_counter()
                result = procedures[name](model, rounds)
                rows.append(
                    {
                        "model": model.name, "procedure": name, "repeat": repeat, "load": os.getloadavg()[0],
                        "wall_s": time.perf_counter() - start, **result.as_dict(),
                    }
                )  # fmt: skip
                print(
                    f"{model.name:26s} {name:40s} median {result.speedup_median:.3f} "
                    f"IQR {result.speedup_p25:.3f}-{result.speedup_p75:.3f} "
                    f"({rows[-1]['wall_s']:.1f} s, load {rows[-1]['load']:.2f})",
                    flush=True,
                )
        loads.append(os.getloadavg()[0])
    return rows, loads


def table(rows: list[dict]) -> str:
    lines = [
        "| model | procedure | repeat | median | p25 | p75 | p75 − p25 | ms/run | wall | load (1 min) | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        width = row["speedup_p75"] - row["speedup_p25"]
        ok = 0.98 <= row["speedup_median"] <= 1.02 and width < 0.04
        lines.append(
            f"| {row['model']} | {row['procedure']} | {row['repeat']} | {row['speedup_median']:.3f} | "
            f"{row['speedup_p25']:.3f} | {row['speedup_p75']:.3f} | {width:.3f} | "
            f"{row['a_ms_per_sample_median']:.3g} | {row['wall_s']:.1f} s | {row['load']:.2f} | {'met' if ok else '—'} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Per model and procedure: the worst |median - 1| and the widest IQR over the repeats."""
    lines = [
        "| model | procedure | worst abs(median − 1) | widest p75 − p25 | goal met in |",
        "|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((row["model"], row["procedure"]) for row in rows))
    for model, procedure in keys:
        mine = [row for row in rows if row["model"] == model and row["procedure"] == procedure]
        off = max(abs(row["speedup_median"] - 1) for row in mine)
        width = max(row["speedup_p75"] - row["speedup_p25"] for row in mine)
        met = sum(
            0.98 <= row["speedup_median"] <= 1.02 and row["speedup_p75"] - row["speedup_p25"] < 0.04 for row in mine
        )
        lines.append(f"| {model} | {procedure} | {off:.3f} | {width:.3f} | {met} of {len(mine)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=21, help="rounds per paired measurement (finalize's default)")
    parser.add_argument("--alternatives", action="store_true", help="also run the rejected alternatives")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (markdown)")
    args = parser.parse_args()
    procedures = PROCEDURES | (ALTERNATIVES if args.alternatives else {})
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows, loads = run(procedures, args.repeats, args.rounds)
    if args.out:
        # Hand-written notes below the generated part survive a rerun.
        previous = args.out.read_text() if args.out.exists() else ""
        notes = previous[previous.index(NOTES) :] if NOTES in previous else f"{NOTES}\n"
        text = (
            "# A/A noise of the paired comparison\n\n"
            f"Goal (issue 18): {GOAL}. Each row: one paired measurement of two identical default "
            "ONNX Runtime CPU sessions (finalize's 21 rounds); rows of one repeat and model ran back "
            "to back, in a rotating order. *old*: autotune before issue 18 (one warm-up, ~3-run blocks, "
            "block medians). *new*: `autotune.measure.paired_speedup` (per-block warm-up, >= 0.2 s blocks, "
            "ratio of the blocks' 10th percentiles); the lettered rows change one thing of *new*.\n\n"
            f"Generated {started} by `.venv/bin/python bench/noise.py"
            f"{' --alternatives' if args.alternatives else ''} --repeats {args.repeats} --rounds {args.rounds}`; "
            f"{os.cpu_count()} cores; 1-minute load average "
            f"{', '.join(f'{x:.2f}' for x in loads)} (before, after each repeat).\n\n{table(rows)}\n\n"
            f"{summary(rows)}\n\n{notes}"
        )
        args.out.write_text(text)


if __name__ == "__main__":
    main()
