"""A Ray cluster of two nodes on 127.0.0.1, one CPU each: what the distributed tests share.

Imported as ``from _loopback import two_nodes`` (tests/conftest.py puts this
directory on sys.path).
"""

from __future__ import annotations

import contextlib

from evokernel.evaluators._cluster import LOOPBACK, loopback_only, shutdown_local_ray

#: Seconds the nodes get to start a build worker each before a test begins.
WARM_UP = 120


@contextlib.contextmanager
def two_nodes(head_resources: dict, node_resources: dict | None = None, node_env: dict | None = None):
    """Yields the cluster, its driver connected, a build worker already started on
    every node. Without that warm-up, Ray hands every queued build to the worker it
    has already leased on the first node while the second node's worker still
    starts (seen under load): the test would check Ray's start-up race, not us."""
    import ray
    from ray.cluster_utils import Cluster

    shutdown_local_ray()
    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK,
                                                                "resources": head_resources})
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK, resources=node_resources or {},
                         env_vars=node_env or {})
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        _start_build_workers()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _start_build_workers() -> None:
    """One one-CPU task per node that imports what a build needs; its worker stays
    in the node's pool and takes the builds that follow."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def start():
        import evokernel.codegen  # noqa: F401  (Halide and LLVM loaded once, here)

        return ray.get_runtime_context().get_node_id()

    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    started = ray.get([start.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
                       for node in nodes], timeout=WARM_UP)
    assert sorted(started) == sorted(nodes), (started, nodes)
