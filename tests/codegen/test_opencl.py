"""The GPU path end to end on OpenCL: tuning, kernel calls, the runner and Ray.

Runs where an OpenCL device is present; here that is PoCL, the OpenCL
implementation for CPUs (Debian: pocl-opencl-icd ocl-icd-libopencl1), a faithful
stand-in for a GPU as far as correctness goes: the kernels are Halide's OpenCL C,
launched with blocks and threads, staged in local (shared) memory, through the same
Halide OpenCL runtime a GPU uses. Its timings say nothing about GPUs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _families import assert_close, fresh_inputs

import evokernel as ek
from evokernel.evaluators import RayEvaluator, runner_resources
from evokernel.target import gpu_available

os.environ.setdefault("HL_OCL_DEVICE_TYPE", "cpu")  # Halide's OpenCL runtime: PoCL's CPU device

pytestmark = pytest.mark.skipif(not gpu_available("opencl"),
                                reason="no OpenCL platform with a device (install pocl-opencl-icd)")

TARGET = "host-opencl"


@pytest.mark.parametrize("op", [
    ek.operators.matmul(m=19, n=24, k=13),
    ek.operators.relu((5, 37)),
    ek.operators.conv2d(1, 3, 9, 11, 4, k=3, pad=1, bias=True, activation="relu"),
], ids=["matmul", "relu", "conv2d"])
def test_tune_on_opencl_returns_a_correct_gpu_kernel(op):
    kernel = ek.tune(op, TARGET, budget=4, seed=0, evaluator="local")
    assert kernel.target.gpu_api == "opencl" and kernel.target.runs_here()
    assert "gpu_blocks" in kernel.schedule and "gpu_threads" in kernel.schedule
    assert kernel.stats.outcomes.get("ok", 0) >= 1
    for seed in (1, 2):  # a second call must not see the first call's device data
        inputs = fresh_inputs(op, seed)
        assert_close(op, kernel(*inputs), op.reference(*inputs))


def test_output_is_copied_back_into_out_and_device_memory_released():
    op = ek.operators.add((8, 33))
    kernel = ek.tune(op, TARGET, budget=3, seed=0, evaluator="local")
    a, b = fresh_inputs(op, 3)
    out = np.full(op.output.shape, np.nan, np.float32)
    for _ in range(50):  # a leak or stale device copy would show in repeated calls
        a += 1
        assert kernel(a, b, out=out) is out
        np.testing.assert_allclose(out, a + b, rtol=1e-6)
    assert all(buf.device == 0 for buf in kernel._native._buffers)


def test_inline_evaluator_runs_opencl_kernels_in_process():
    op = ek.operators.max_pool2d(1, 2, 8, 8, k=2, stride=2)
    kernel = ek.tune(op, TARGET, budget=3, seed=0, evaluator="inline")
    (x,) = fresh_inputs(op, 4)
    assert_close(op, kernel(x), op.reference(x))


@pytest.mark.ray
def test_ray_runs_opencl_timings_on_the_node_offering_its_resource():
    """A head node with only the host's CPU runner, and a second node offering the
    OpenCL runner resource: every timing runs on the second one; a CUDA target,
    which no node offers, is refused naming its resource."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    opencl = runner_resources(TARGET)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": runner_resources("host")})
    cluster.add_node(num_cpus=1, resources=opencl)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cluster.wait_for_nodes()
        gpu_node = next(n["NodeID"] for n in ray.nodes() if next(iter(opencl)) in n["Resources"])
        evaluator = RayEvaluator(address=cluster.address)
        op = ek.operators.relu((6, 40))
        kernel = ek.tune(op, TARGET, budget=3, seed=0, evaluator=evaluator)
        (x,) = fresh_inputs(op, 5)
        assert_close(op, kernel(x), op.reference(x))
        assert evaluator.timing_nodes and set(evaluator.timing_nodes) == {gpu_node}
        with pytest.raises(ek.TargetError, match="evokernel-runner:x86-64-linux-cuda"):
            ek.tune(op, "x86-64-linux-cuda", budget=3, evaluator=RayEvaluator(address=cluster.address))
    finally:
        ray.shutdown()
        cluster.shutdown()
