"""Does the paired procedure measure a configuration as it runs alone? (issue 26 item 5, CPU)

The defaults of yolov8n (batch 1, a real photograph) on the ONNX Runtime CPU target, timed in
blocks of 15 runs after 3 warm-ups: (1) one session, nothing else open; (2) the same session with
a second one open and idle beside it, as finalize's paired run holds them; (3) the paired A/A
procedure itself (`autotune.measure.paired_speedup`, 9 rounds of 0.5 s); (4) the first session
again. Writes bench/PAIRED_ENV_CPU.md. Run it on a machine doing nothing else.

    .venv/bin/python bench/paired_env_cpu.py
"""

from __future__ import annotations

import datetime
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from accuracy import Speed  # noqa: E402

from autotune.measure import paired_speedup  # noqa: E402

OUT = ROOT / "bench" / "PAIRED_ENV_CPU.md"


def blocks(timer, count: int = 3, runs: int = 15) -> list[float]:
    """Median ms of `runs` runs after 3 warm-ups, `count` times."""
    out = []
    for _ in range(count):
        for _ in range(3):
            timer()
        out.append(statistics.median(timer() for _ in range(runs)) * 1e3)
    return out


def main() -> None:
    model = ROOT / "bench" / "models" / "yolov8n.onnx"
    if not model.exists():
        import accuracy

        accuracy.gpu_models()
    feeds = {"images": np.load(ROOT / "bench" / "models" / "yolov8n_inputs.npz")["images"][:1]}
    with tempfile.TemporaryDirectory() as tmp:
        speed = Speed(feeds, Path(tmp), 9)
        a = speed.timer(model)
        alone = blocks(a)
        b = speed.timer(model)
        beside = blocks(a)
        paired = paired_speedup(a, b, rounds=9, round_s=0.5)
        after = blocks(a)
        speed.close()
    fmt = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
    lines = [
        "# The paired procedure against a session alone (CPU, issue 26 item 5)",
        "",
        f"`.venv/bin/python bench/paired_env_cpu.py`, {datetime.date.today().isoformat()}: yolov8n, the onnxruntime "
        "space's defaults, batch 1, one photograph, 2-core host. Block medians in ms per sample (15 runs each).",
        "",
        "| what | ms per sample |",
        "| --- | --- |",
        f"| one session, nothing else open | {fmt(alone)} |",
        f"| the same session, a second one open and idle beside it | {fmt(beside)} |",
        f"| paired A/A, 9 rounds (per-side medians) | {paired.a_ms_per_sample_median:.2f}, "
        f"{paired.b_ms_per_sample_median:.2f} (speedup {paired.speedup_median:.3f}, "
        f"IQR {paired.speedup_p25:.3f}-{paired.speedup_p75:.3f}) |",
        f"| the first session again | {fmt(after)} |",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
