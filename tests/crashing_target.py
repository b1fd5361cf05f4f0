"""A real ONNX Runtime target that misbehaves on purpose, for fault-tolerance tests.

It is loaded by the daemon's workers as the plugin target "tests.crashing_target:MisbehavingTarget".
Configurations with graph_optimization_level "disable" abort the process (SIGABRT) during the
build; "basic" hangs in the build for ten minutes; every other value builds normally after
a one-second pause, so that a study has trials in flight long enough to be interrupted, and
for as long as the file named by $AUTOTUNE_TEST_HOLD_BUILDS exists (a test's way to hold a trial
in flight until it has acted, on however busy a machine).
"""

from __future__ import annotations

import os
import time

from autotune.errors import BuildError
from autotune.targets.onnxruntime import OnnxRuntimeTarget

HOLD_ENV = "AUTOTUNE_TEST_HOLD_BUILDS"  # while the file it names exists, builds wait (a test's event)


class MisbehavingTarget(OnnxRuntimeTarget):
    name = "misbehaving"

    def build(self, model_path, config, workdir, input_shapes):
        level = config.get("graph_optimization_level")
        if level == "disable":
            os.abort()
        if level == "basic":
            time.sleep(600)
        started = time.time()
        time.sleep(1.0)
        hold = os.environ.get(HOLD_ENV)
        while hold and os.path.exists(hold) and time.time() - started < 600:  # a test holds the build
            time.sleep(0.05)
        built = super().build(model_path, config, workdir, input_shapes)
        built.info["build_interval"] = [started, time.time()]
        built.info["cpu_affinity"] = sorted(os.sched_getaffinity(0))  # what this trial was pinned to
        built.info["pid"] = os.getpid()
        return built


class UnsupportedComboTarget(OnnxRuntimeTarget):
    """Refuses one combination of two knobs, the way a provider refuses CUDA graph + NHWC:
    parallel execution with intra-op spinning off fails to build, every time, with the same
    message; everything else builds normally."""

    name = "unsupported-combo"

    def build(self, model_path, config, workdir, input_shapes):
        if config.get("execution_mode") == "parallel" and config.get("intra_op_spinning") is False:
            raise BuildError(f"this provider cannot run parallel execution without spinning ({workdir.name})")
        return super().build(model_path, config, workdir, input_shapes)


class MemoryBombTarget(OnnxRuntimeTarget):
    """Grows without bound in the build, the way a trial at a shape larger than the machine
    does, 64 MiB at a time up to `CAP_BYTES` (a bound for the test's sake), then hangs. It
    first writes its `oom_score_adj` to `oom_score_adj` in its workdir."""

    name = "memory-bomb"
    CAP_BYTES = 6 * 2**30

    def build(self, model_path, config, workdir, input_shapes):
        import numpy as np

        with open("/proc/self/oom_score_adj", encoding="ascii") as adj:
            (workdir / "oom_score_adj").write_text(adj.read().strip())
        held = []
        while len(held) * 2**26 < self.CAP_BYTES:
            held.append(np.ones(2**26, np.uint8))  # touched: resident, not just reserved
            time.sleep(0.02)
        time.sleep(600)
        return super().build(model_path, config, workdir, input_shapes)


class SlowKnobTarget(OnnxRuntimeTarget):
    """Runs six times as long at `graph_optimization_level: basic` (it really waits: 5x each
    run's own time after the run), the way `cudnn_conv_algo_search=DEFAULT` runs 2.6-3.3x slower
    on a GPU, with room for a busy machine: a trial is known slow only beyond twice the defaults'
    own swing in the study (`StudyRun.noise`), and one slowed past 10x is cut as too slow, which
    counts too. Every other configuration runs as ONNX Runtime does."""

    name = "slow-knob"

    def open(self, built, config):
        session = super().open(built, config)
        if config.get("graph_optimization_level") != "basic":
            return session
        inner = session.timer

        def timer(feeds):
            time_once = inner(feeds)

            def slowed() -> float:
                took = time_once()
                time.sleep(5 * took)
                return 6 * took

            return slowed

        session.timer = timer
        return session


class FragileKnobTarget(OnnxRuntimeTarget):
    """Fails every build with `intra_op_spinning: false`, after three seconds, with a reason that
    names the knob (as ONNX Runtime names `cuda_graph` for a graph it cannot capture), and asks
    for that value to be probed first. Each such build appends its start and end to
    `fragile-builds.txt` in the study's directory."""

    name = "fragile-knob"
    REASON = "this model cannot run with intra-op spinning off"

    def build(self, model_path, config, workdir, input_shapes):
        if config.get("intra_op_spinning") is False:
            started = time.time()
            time.sleep(3.0)
            with open(workdir.parent.parent / "fragile-builds.txt", "a", encoding="ascii") as log:
                log.write(f"{started} {time.time()}\n")
            raise BuildError(f"{self.REASON} ({workdir.name})")
        return super().build(model_path, config, workdir, input_shapes)

    @classmethod
    def knobs_named_by(cls, reason):
        return {"intra_op_spinning": False} if cls.REASON in reason else {}

    @classmethod
    def probe_first(cls):
        return [{"intra_op_spinning": False}]
