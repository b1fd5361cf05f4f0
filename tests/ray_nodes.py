"""A real two-node Ray cluster on this machine, for the tests that join one with --ray-address.

Each node is its own raylet (its own processes, object store and workers), started with
`ray.cluster_utils.Cluster`, which keeps the process handles and kills exactly those on
shutdown: never `ray stop`, which would kill every Ray process on the machine (other studies,
other tests). Both nodes listen on 127.0.0.1 only, in a private temporary directory, and the
cluster is never recorded as the machine's "current" one (a plain `ray.init()` elsewhere must
not join it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class TwoNodes:
    address: str  # GCS address, HOST:PORT, for --ray-address
    node_ids: tuple[str, str]  # (head, second)
    raylet_pids: tuple[int, int]


@contextlib.contextmanager
def two_node_cluster(cpus_per_node: int = 1, gpus_per_node: int = 0) -> Iterator[TwoNodes]:
    """Starts a head node and a second node, `cpus_per_node` CPUs each; removes both after,
    failure or not. `gpus_per_node` declares GPUs Ray schedules by (none need exist: a test
    double target that claims a GPU runs on the CPU)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from autotune.workers import local_only_ray

    local_only_ray()  # the test cluster binds loopback, as a local daemon's does
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="autotune-cluster-")
    saved = ray._private.utils.write_ray_address, ray._common.utils.reset_ray_address
    ray._private.utils.write_ray_address = lambda *a, **k: None  # not the machine's current cluster
    ray._common.utils.reset_ray_address = lambda *a, **k: None
    cluster = Cluster(shutdown_at_exit=True)
    try:
        common = {
            "node_ip_address": "127.0.0.1",
            "num_cpus": cpus_per_node,
            "num_gpus": gpus_per_node,
            "temp_dir": os.path.join(temp, "r"),
        }
        head = cluster.add_node(**common, include_dashboard=False, resources={"head_node": 1})
        second = cluster.add_node(**common, resources={"second_node": 1})
        yield TwoNodes(
            address=cluster.address,
            node_ids=(head.node_id, second.node_id),
            raylet_pids=(_raylet_pid(head), _raylet_pid(second)),
        )
    finally:
        try:
            cluster.shutdown()
        finally:
            ray._private.utils.write_ray_address, ray._common.utils.reset_ray_address = saved
            shutil.rmtree(temp, ignore_errors=True)


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    handles = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])
    return handles[0].process.pid if handles else -1
