"""The Ray worker lifecycle (issue 13): one warm worker serves many trials, each in a forked
child; a child that crashes fails only its trial and leaves the worker serving the next."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SPACE = """
target: misbehaving
knobs:
  graph_optimization_level:
    type: categorical
    choices: [disable, extended, all]
    default: all
  intra_op_spinning:
    type: bool
    default: true
"""


def test_one_warm_worker_serves_every_trial_and_outlives_a_crashing_child(tmp_path):
    from autotune.cli import build_parser, prepare_start
    from autotune.study import compute_references, run_study
    from autotune.workers import RayExecutor

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    argv = ["start", str(REPO / "examples" / "example.onnx"), "--trials", "5", "--space", str(space)]
    argv += ["--target", "tests.crashing_target:MisbehavingTarget", "--results-dir", str(tmp_path / "r")]
    argv += ["--max-measure-s", "0.05"]
    spec = prepare_start(build_parser().parse_args(argv))[0]
    results = []
    executor = RayExecutor(1, prefetch=True)  # (a local CPU target's default is off)
    queued_at_submit = []  # per submit: (trials in flight, of them queued behind the running one)
    submit = executor.submit

    def recording_submit(request):
        submit(request)
        flights = executor._flights.values()
        queued_at_submit.append((len(flights), sum(f.started is None for f in flights)))

    executor.submit = recording_submit
    try:
        import ray

        warm_pids = ray.get(executor._warm)
        run_study(spec, executor, references=compute_references(spec), on_result=lambda r, s: results.append(r))
    finally:
        executor.close()
    # Prefetch: one worker, two trials in flight, the second queued (its timeout clock not started).
    assert executor.capacity == 2 and max(queued_at_submit) == (2, 1), queued_at_submit
    assert all(queued <= 1 for _, queued in queued_at_submit)
    crashed = [r for r in results if r.config.get("graph_optimization_level") == "disable"]
    assert crashed and all(r.state == "failed" and "signal 6" in r.reason for r in crashed)
    assert sum(r.state == "complete" for r in results) >= 3
    workers = {r.build["worker_pid"] for r in results}
    children = {r.build["pid"] for r in results if "pid" in r.build}
    assert len(workers) == 1, workers  # the same warm worker, also after the crash
    assert workers == set(warm_pids)  # the one that imported everything at start-up
    assert len(children) == sum(r.state == "complete" for r in results)  # a fresh child per trial
    assert workers.isdisjoint(children)
    # The task's own wall time holds the trial's and the fork + collection around it.
    assert all(r.timings_s["worker_s"] >= r.timings_s.get("total_s", 0.0) for r in results)


def test_prefetch_only_where_the_gpus_cap_the_trials_running_at_once():
    """A worker's next trial is queued behind its running one only where Ray cannot start it
    elsewhere at once: as many GPUs as workers. With one worker on a two-GPU machine, a queued
    trial would take the second GPU: two trials at once where --workers 1 was asked."""
    import ray

    from autotune.workers import RayExecutor, local_only_ray

    local_only_ray()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        one = RayExecutor(1, gpu=True, warm_up=False)
        two = RayExecutor(2, gpu=True, warm_up=False)
        assert (one.prefetch, one.capacity) == (False, 1)
        assert (two.prefetch, two.capacity) == (True, 4)
        assert RayExecutor(2, gpu=True, prefetch=False, warm_up=False).capacity == 2
    finally:
        ray.shutdown()
