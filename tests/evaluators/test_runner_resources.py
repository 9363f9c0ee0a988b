"""Which Ray node times a target's kernels: the runner resources of GPU targets."""

from __future__ import annotations

import evokernel as ek
from evokernel.evaluators import runner_resources
from evokernel.evaluators._cluster import local_runner_resources, runner_resource_for
from evokernel.target import gpu_available


def name(target) -> str:
    return next(iter(runner_resources(target)))


def test_gpu_targets_need_a_node_offering_their_gpu_api():
    host = ek.Target.parse("host")
    offered = {"CPU": 4.0, name(host): 1.0}
    opencl = ek.Target.parse("x86-64-linux-avx2-opencl")
    assert runner_resource_for(opencl, offered) is None
    gpu_node = f"{host.string}-opencl"
    assert runner_resource_for(opencl, {**offered, name(gpu_node): 1.0}) == name(gpu_node)
    assert runner_resource_for(ek.Target.parse("x86-64-linux-avx2"), {**offered, name(gpu_node): 1.0}) == name(host)
    assert runner_resource_for(ek.Target.parse("x86-64-linux-cuda"), {**offered, name(gpu_node): 1.0}) is None


def test_this_machine_offers_the_gpu_runners_it_has():
    offered = local_runner_resources()
    assert name("host") in offered
    assert (name("host-opencl") in offered) == gpu_available("opencl")
    assert all(k.startswith("evokernel-runner:") for k in offered)
