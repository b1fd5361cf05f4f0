"""`--ray-address`: a study joins an existing Ray cluster and its trials run on every node.

The cluster is real: two raylets on this machine (tests/ray_nodes.py), one CPU each, so two
trials in flight must run on different nodes. Each node also declares one GPU to Ray's
scheduler (there is none): a target that needs a GPU is then routed exactly as on a GPU cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from tests.conftest import make_tiny_model
from tests.gpu_double_target import PAIRED_LOG
from tests.ray_nodes import two_node_cluster
from tests.test_daemon import REPO, SLOW_SPACE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster(gpus_per_node=1) as nodes:
        yield nodes


def test_joining_a_cluster_leaves_ray_node_addresses_as_the_environment_sets_them(monkeypatch, cluster):
    """The loopback-only switch is for the daemon's own cluster: on a multi-machine cluster the
    driver's node address must be the machine's real one, so joining must not set it."""
    from autotune import workers

    calls = []
    monkeypatch.setattr(workers, "local_only_ray", lambda: calls.append("local_only"))
    executor = workers.RayExecutor(1, address=cluster.address)
    try:
        assert calls == [] and not executor.owns_cluster
        # No prefetch and no warm-up on a joined cluster: a queued trial can wait at one node's
        # raylet for its GPU while the other node's GPU is free (or held by a warm-up).
        gpus = workers.RayExecutor(2, gpu=True, address=cluster.address)
        assert (gpus.prefetch, gpus.capacity, gpus._warm) == (False, 2, [])
    finally:
        import ray

        ray.shutdown()


def test_a_joined_gpu_study_runs_trials_on_both_nodes_paired_runs_in_gpu_workers_and_leaves_the_cluster_up(
    tmp_path, cluster
):
    """One study for three behaviours (each cluster study costs CI time): trials go to both
    nodes, finalize's paired measurements and profile of a GPU target run in a Ray task holding
    a GPU (never in the process that finalizes, which must not initialize CUDA), and the joined
    cluster is left as it was."""
    import ray

    model = make_tiny_model(tmp_path / "tiny.onnx")
    space = tmp_path / "space.yaml"
    space.write_text(SLOW_SPACE)
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    argv = ["start", str(model), "--foreground", "--study", "gpu", "--trials", "4", "--ray-address", cluster.address,
            "--target", "tests.gpu_double_target:CpuTargetClaimingGpu", "--space", str(space),
            "--results-dir", str(results), "--max-measure-s", "0.05"]  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-m", "autotune.cli", *argv], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    builds = [line.split("\t") for line in (results / "gpu" / PAIRED_LOG).read_text().splitlines()]
    assert len(builds) >= 2  # at least the A/A control's two builds
    for pid, parent, cuda_visible in builds:
        assert int(pid) != driver.pid  # never in the process that finalizes
        assert parent.startswith("ray::_remote_paired")  # a forked child of the Ray task
        assert cuda_visible != ""  # the task held a GPU (num_gpus=1), as a trial does
    assert (results / "gpu" / "best" / "manifest.json").is_file()
    assert not (results / "gpu" / "paired").exists()

    study = optuna.load_study(study_name="gpu", storage=f"sqlite:///{results / 'gpu' / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    nodes = {t.user_attrs["details"]["build"].get("ray_node_id") for t in complete}
    assert nodes == set(cluster.node_ids), f"trials ran on {nodes}, the cluster's nodes are {cluster.node_ids}"
    # The profile too ran in a worker, on a copy of the study; what it recorded came back.
    worker = study.user_attrs["profile_worker"]
    assert worker["pid"] != driver.pid and worker["ray_node_id"] in cluster.node_ids
    # The double inherits the ONNX Runtime target's profiler (the target's `layer_profile`): the
    # profile made in the worker reached the study directory of the process that finalizes.
    assert "profile_error" not in study.user_attrs, study.user_attrs.get("profile_error")
    assert json.loads((results / "gpu" / "profile.json").read_text())["defaults"]
    # The study only joined: both raylets outlive it (a study never stops a cluster it did not start).
    for pid in cluster.raylet_pids:
        os.kill(pid, 0)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    assert alive == set(cluster.node_ids)
