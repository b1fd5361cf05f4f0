"""Checks autotune's CUDA-event timer on a GPU with work that is not TensorRT.

Run on a machine with an NVIDIA GPU and cuda-python:  python bench/cuda_timing_check.py

1. A large device memset: its event time must agree with the wall-clock time of a
   synchronized call (within launch overhead) and imply a plausible memory bandwidth.
2. Many tiny memsets per enqueue: launch-bound, so a CUDA graph must make it faster.
Each is measured with `measure_latency` with and without CUDA-graph capture.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autotune.measure import StopRule, measure_latency
from autotune.targets.cuda_timing import check, cuda_event_timer, cudart


def main() -> int:
    rt = cudart()
    check(rt.cudaSetDevice(0))
    props = check(rt.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    print(f"device: {name} (sm_{props.major}{props.minor})")
    stream = check(rt.cudaStreamCreate())
    big_bytes = 512 << 20
    big = check(rt.cudaMalloc(big_bytes))
    small = check(rt.cudaMalloc(4096))
    rule = StopRule(max_time_s=3.0, rel_ci_width=0.02)

    def big_memset(s):
        check(rt.cudaMemsetAsync(big, 1, big_bytes, s))

    def tiny_memsets(s, n=200):
        for i in range(n):
            check(rt.cudaMemsetAsync(small, i & 0xFF, 4096, s))

    ok = True
    for label, enqueue in (("memset 512 MiB", big_memset), ("200 x memset 4 KiB", tiny_memsets)):
        results = {}
        for graph in (False, True):
            timer = cuda_event_timer(enqueue, stream, use_cuda_graph=graph)
            stats = measure_latency(timer, rule)
            timer.close()
            results[graph] = stats
            print(
                f"{label:22s} cuda_graph={graph!s:5s} p50={stats.latency_ms_p50:.4f} ms "
                f"p90={stats.latency_ms_p90:.4f} ms n={stats.iterations} ({stats.stopped_by})"
            )
        if label.startswith("memset 512"):
            # Wall clock of a synchronized call bounds the event time from above.
            walls = []
            for _ in range(20):
                t0 = time.perf_counter()
                big_memset(stream)
                check(rt.cudaStreamSynchronize(stream))
                walls.append(time.perf_counter() - t0)
            wall_ms = sorted(walls)[len(walls) // 2] * 1e3
            event_ms = results[False].latency_ms_p50
            gbps = big_bytes / (event_ms / 1e3) / 1e9
            print(f"{'':22s} wall-clock p50={wall_ms:.4f} ms; event bandwidth {gbps:.0f} GB/s")
            if not (event_ms <= wall_ms * 1.05 and event_ms >= wall_ms * 0.5):
                print("  MISMATCH: event time and wall-clock time disagree")
                ok = False
        else:
            if results[True].latency_ms_p50 >= results[False].latency_ms_p50:
                print("  UNEXPECTED: CUDA graph did not reduce a launch-bound workload")
                ok = False
    check(rt.cudaFree(big))
    check(rt.cudaFree(small))
    check(rt.cudaStreamDestroy(stream))
    print("OK" if ok else "CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
