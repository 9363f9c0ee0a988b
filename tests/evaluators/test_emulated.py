"""Kernels of another platform checked for real under an emulator: the
``EmulatedRunner`` (AArch64 kernels under qemu-aarch64, here) and the faults it tells
apart, and the ARM runner node of a Ray cluster: an x86 node on loopback that offers
``evokernel-runner:arm-64-linux`` and runs the kernels under qemu (timings
meaningless, correctness real) while builds land on every node; tune() there returns
the AArch64 winner, kept in the cache, exported elsewhere, never called here."""

from __future__ import annotations

import halide as hl
import numpy as np
import pytest
from _arm import ARM, needs_arm
from _loopback import two_nodes

import evokernel as ek
from evokernel.codegen import FUNCTION, build, cache_dir, default_threads
from evokernel.evaluators import (Context, EmulatedProcess, EmulatedRunner, Outcome, Protocol, RayEvaluator, RayRunner,
                                  emulator_for, runner_resources)
from evokernel.genome import ScheduleSpace, unscheduled

N = 64
TARGET = ek.Target.parse(ARM)


def _op(name, algorithm):
    return ek.operators.custom(name, [("x", (N,))], (N,), algorithm, lambda x: np.maximum(x, 0))


def _relu(params):
    (x,), i, out = params, hl.Var("i"), hl.Func("out")
    out[i] = hl.max(x[i], 0)
    return out


def _wrong(params):
    (x,), i, out = params, hl.Var("i"), hl.Func("out")
    out[i] = x[i] * 2
    return out


def _segfault(params):
    (x,), i, out = params, hl.Var("i"), hl.Func("out")
    out[i] = x[hl.unsafe_promise_clamped(i * (1 << 24) + (1 << 30), 0, N - 1)]  # far outside x
    return out


def _beyond(params):
    (x,), i, out = params, hl.Var("i"), hl.Func("out")
    out[i] = x[i + N]  # reads past the input it is given: Halide returns an error code
    return out


def _hang(params):
    (x,), i, r, out = params, hl.Var("i"), hl.RDom([(0, 1 << 30)], "r"), hl.Func("out")
    out[i] = hl.f32(0)
    out[i] += x[(i + r.x) % N]
    return out


def artifact(algorithm, target=TARGET):
    """The object of ``algorithm`` (same signature as the relu task) for ``target``."""
    op = _op(algorithm.__name__.strip("_"), algorithm)
    space = ScheduleSpace.from_algorithm(op.algorithm(), 4, default_threads())
    return build(op, space, unscheduled(space), target)


def relu_context(target=TARGET) -> Context:
    op = _op("relu", _relu)
    space = ScheduleSpace.of(op, target, default_threads())
    return Context(op, target, space, default_threads(), cache_dir())


@needs_arm
def test_the_emulated_runner_tells_every_fault_apart_under_qemu():
    runner = EmulatedRunner()
    runner.check_target(TARGET)
    runner.prepare(relu_context())
    try:
        measured = {name: runner.measure(artifact(fn), None, 2.0, Protocol(min_calls=2, min_time=0.0))
                    for name, fn in (("relu", _relu), ("wrong", _wrong), ("segfault", _segfault), ("hang", _hang),
                                     ("beyond", _beyond))}
    finally:
        runner.close()
    assert measured["relu"].outcome is Outcome.OK and measured["relu"].max_error == 0.0
    assert len(measured["relu"].times) >= 2 and all(t > 0 for t in measured["relu"].times)
    assert measured["wrong"].outcome is Outcome.WRONG_RESULT and measured["wrong"].max_error > 0
    assert measured["segfault"].outcome is Outcome.RUN_CRASH
    assert measured["segfault"].message == "killed by signal SIGSEGV"
    assert measured["hang"].outcome is Outcome.RUN_TIMEOUT
    assert measured["beyond"].outcome is Outcome.RUN_CRASH
    beyond = measured["beyond"].message
    assert beyond.startswith("kernel returned error -") and "Input buffer x is accessed at" in beyond


def test_the_harness_runs_this_platform_s_kernels_without_an_emulator():
    """The harness protocol itself, on this machine's own code (no emulator): the
    check and the timed calls go over the pipe, an error code comes back with
    Halide's message, and a library that does not load is the harness's exit."""
    host = ek.Target.parse("host")
    context = relu_context(host)
    process = EmulatedProcess(context.task(), host, (), context.native_dir)
    try:
        ok = process.measure(context.link(artifact(_relu, host)), FUNCTION, Protocol(min_calls=3, min_time=0.0),
                             None, 10.0)
        beyond = process.measure(context.link(artifact(_beyond, host)), FUNCTION, Protocol(), None, 10.0)
        missing = process.measure(context.native_dir / "no-such-kernel.so", FUNCTION, Protocol(), None, 10.0)
    finally:
        process.close()
    assert ok.outcome is Outcome.OK and ok.max_error == 0.0 and len(ok.times) >= 3
    assert beyond.outcome is Outcome.RUN_CRASH and "Input buffer x is accessed at" in beyond.message
    assert missing.outcome is Outcome.RUN_CRASH
    assert missing.message.startswith("harness exited with status 3: harness: cannot load the kernel")


def test_what_cannot_be_emulated_is_refused_naming_the_way_out(monkeypatch):
    with pytest.raises(ek.TargetError, match="GPU target cannot be emulated"):
        EmulatedRunner().check_target(ek.Target.parse("x86-64-linux-cuda"))
    with pytest.raises(ek.TargetError, match="no emulator for x86-64-osx.*EVOKERNEL_EMULATOR_X86_64_OSX"):
        EmulatedRunner().check_target(ek.Target.parse("x86-64-osx"))
    with pytest.raises(ek.TargetError, match="'no-such-emulator' is not installed"):
        EmulatedRunner("no-such-emulator -L /").check_target(TARGET)
    with pytest.raises(ek.TargetError, match="command line"):
        EmulatedRunner([])
    monkeypatch.setenv("EVOKERNEL_EMULATOR_ARM_64_LINUX", "/nonexistent/qemu-aarch64 -cpu max")
    with pytest.raises(ek.TargetError, match="EVOKERNEL_EMULATOR_ARM_64_LINUX names '/nonexistent/qemu-aarch64'"):
        emulator_for(ARM)
    monkeypatch.setenv("EVOKERNEL_EMULATOR_ARM_64_LINUX", "sh -c")
    assert emulator_for(ARM) == ("sh", "-c")


# -- the ARM runner node of a Ray cluster, on loopback --------------------------------

BROKEN = f"{ARM}-arm_dot_prod"  # the target of a node whose emulator is misconfigured


@pytest.fixture(scope="module")
def arm_node_cluster():
    """Two x86 nodes on loopback, both building: the head offers the ARM runner
    resource and runs kernels under qemu; the other offers another ARM target's
    runner resource, but its emulator is configured wrong."""
    with two_nodes(runner_resources(ARM), runner_resources(BROKEN),
                   {"EVOKERNEL_EMULATOR_ARM_64_LINUX": "/nonexistent/qemu-aarch64"}) as cluster:
        yield cluster


@needs_arm
@pytest.mark.ray
def test_an_arm_runner_node_checks_kernels_under_qemu_while_every_node_builds(arm_node_cluster):
    import ray

    resource = next(iter(runner_resources(ARM)))
    arm_node = next(n["NodeID"] for n in ray.nodes() if resource in n["Resources"])
    op = ek.operators.conv2d(1, 4, 9, 9, 8, k=3, pad=1, bias=True, activation="relu")
    evaluator = RayEvaluator(address=arm_node_cluster.address)
    kernel = ek.tune(op, ARM, budget=3, seed=0, evaluator=evaluator, records="memory", retune=True)
    assert kernel.target == TARGET and kernel.stats.outcomes.get("ok", 0) >= 2
    assert set(evaluator.timing_nodes) == {arm_node}, "timings only where the ARM runner resource is"
    assert len(set(evaluator.build_nodes)) == 2, "builds should land on both nodes"
    # the winner is kept (its AArch64 object), found again, and never called here
    assert kernel.object_bytes[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    assert ek.load(op, ARM).genome == kernel.genome
    with pytest.raises(ek.KernelCallError, match="tuned for arm-64-linux, which cannot run on this machine"):
        kernel(*op.random_inputs(np.random.default_rng(0)))

    runner = RayRunner(address=arm_node_cluster.address)  # correctness is real on that node
    runner.prepare(relu_context())
    try:
        wrong = runner.measure(artifact(_wrong), None, 30.0, Protocol())
        right = runner.measure(artifact(_relu), None, 30.0, Protocol())
    finally:
        runner.close()
    assert wrong.outcome is Outcome.WRONG_RESULT and right.outcome is Outcome.OK
    assert set(runner.nodes) == {arm_node}


@needs_arm
@pytest.mark.ray
def test_a_runner_node_that_cannot_run_its_target_says_why(arm_node_cluster):
    """The node offers an ARM runner resource, but its emulator is misconfigured:
    the runner refuses at once, naming the node's problem (not a run of crashes)."""
    runner = RayRunner(address=arm_node_cluster.address)
    with pytest.raises(ek.TargetError, match=f"offers a runner resource for {BROKEN} but cannot run it.*"
                                             "/nonexistent/qemu-aarch64"):
        runner.prepare(relu_context(ek.Target.parse(BROKEN)))
