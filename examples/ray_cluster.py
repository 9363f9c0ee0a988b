"""Tune on a Ray cluster: builds run as Ray tasks on every node, timing on a node
that offers the target's runner resource.

    python examples/ray_cluster.py                         # a 2-node cluster on this machine
    RAY_ADDRESS=head:6379 python examples/ray_cluster.py   # join your cluster instead

On a real cluster, start each timing node with the runner resource that
``ek.evaluators.runner_resources("host")`` names:

    ray start --address=HEAD:6379 --resources='{"evokernel-runner:<target>": 1}'

The budget is a duration ("30s", "2m") or a plain number of evaluations ("50").
"""

import os

# A local test cluster listens on 127.0.0.1 only (on Linux, Ray binds to the
# machine's network address unless this is set before Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import evokernel as ek  # noqa: E402

budget = os.environ.get("EVOKERNEL_EXAMPLE_BUDGET", "30s")
budget = int(budget) if budget.isdigit() else budget


def tune_on(address: str) -> None:
    op = ek.operators.matmul(m=256, n=256, k=256)
    evaluator = ek.evaluators.RayEvaluator(address=address)
    kernel = ek.tune(op, budget=budget, seed=0, evaluator=evaluator, retune=True)
    a, b = op.random_inputs(np.random.default_rng(0))
    assert np.allclose(kernel(a, b), a @ b, rtol=1e-4, atol=1e-3)
    print(kernel.report())
    print(f"\ntuned on the cluster at {address}; the kernel runs here, {kernel.time_ms:.3f} ms per call")


def main() -> None:
    address = os.environ.get("RAY_ADDRESS")
    if address:
        tune_on(address)
        return
    # Head: builds and the runner (timing). Second node: builds only.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "resources": ek.evaluators.runner_resources("host")})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    print(f"started a 2-node Ray cluster at {cluster.address}")
    try:
        tune_on(cluster.address)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
