"""The Ray evaluator with real Ray: the local instance, a two-node cluster on
loopback, and a fault suite (crashing, aborting, hanging, wrong and slow-to-compile
kernels, and a build worker killed with SIGKILL mid-batch)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import halide as hl
import numpy as np
import psutil
import pytest
from _families import assert_close, fresh_inputs
from _loopback import two_nodes

import evokernel as ek
from evokernel import codegen
from evokernel.codegen import Artifact, build, default_threads
from evokernel.evaluators import (Context, Evaluator, InlineEvaluator, Outcome, RayBuilder, RayEvaluator, RayRunner,
                                  Result, Settings, ensure_ray, runner_resources)
from evokernel.evaluators._ray import _build_task
from evokernel.genome import ScheduleSpace, random_genome, templates, unscheduled

pytestmark = pytest.mark.ray

N = 64


def context(op) -> Context:
    target = ek.Target.parse("host")
    space = ScheduleSpace.from_algorithm(op.algorithm(), target.natural_vector_size(op.dtype), default_threads())
    return Context(op, target, space, default_threads(), codegen.cache_dir())


def genomes_for(space, count, seed=0):
    import random

    rng, out = random.Random(seed), list(templates(space))
    while len(out) < count:
        out.append(random_genome(space, rng))
    return out[:count]


# -- the local instance ------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = ensure_ray()
    # This module's functions run in Ray workers, which cannot import a test file.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray


def test_tune_on_the_local_instance_gives_a_correct_kernel(local_ray):
    op = ek.operators.conv2d(1, 4, 11, 13, 8, 3, pad=1, bias=True, activation="relu6")
    kernel = ek.tune(op, budget=8, seed=0, evaluator="ray", retune=True)
    inputs = fresh_inputs(op, 11)
    assert_close(op, kernel(*inputs), op.reference(*inputs))
    assert local_ray.cluster_resources()[next(iter(runner_resources("host")))] == 1


@pytest.mark.parametrize("op", [ek.operators.matmul(37, 53, 29),
                                pytest.param(ek.operators.conv2d(2, 4, 9, 7, 4, 3, groups=2), marks=pytest.mark.slow)],
                         ids=["matmul", "conv2d"])
def test_inline_and_ray_agree_on_correctness(local_ray, op):
    """Template genomes only: the inline evaluator runs kernels in this very process,
    where one of the rare crashing random genomes would end the test run."""
    genomes = templates(context(op).space)
    verdicts = []
    for evaluator in (InlineEvaluator(), RayEvaluator()):
        evaluator.prepare(context(op))
        verdicts.append([(r.outcome, r.ok) for r in evaluator.evaluate(genomes)])
        evaluator.close()
    assert verdicts[0] == verdicts[1]
    assert all(ok for _, ok in verdicts[0])


def test_a_target_no_node_can_run_is_refused(local_ray):
    op = ek.operators.relu(8)
    ctx = context(op)
    ctx.target = ek.Target.parse("arm-64-linux")
    with pytest.raises(ek.TargetError, match="no runner can execute .* Ray cluster.*evokernel-runner:arm-64-linux"):
        RayEvaluator().prepare(ctx)


# -- the fault suite ---------------------------------------------------------------------

def _op(name, algorithm, reference=lambda x: np.maximum(x, 0)):
    return ek.operators.custom(name, [("x", (N,))], (N,), algorithm, reference)


def _segfault(params):
    (x,) = params
    i, out = hl.Var("i"), hl.Func("out")
    out[i] = x[hl.unsafe_promise_clamped(i * (1 << 24) + (1 << 30), 0, N - 1)]  # far outside x
    return out


def _abort(params):
    i, extern, out = hl.Var("i"), hl.Func("calls_abort"), hl.Func("out")
    extern.define_extern("abort", [], hl.Float(32), 1)
    out[i] = extern[i]
    return out


def _hang(params):
    (x,) = params
    i, r, out = hl.Var("i"), hl.RDom([(0, 1 << 30)], "r"), hl.Func("out")
    out[i] = hl.f32(0)
    out[i] += x[(i + r.x) % N]
    return out


def _wrong(params):
    (x,) = params
    i, out = hl.Var("i"), hl.Func("out")
    out[i] = x[i] * 2
    return out


def _slow_compile(params):
    (x,) = params
    i, r, out = hl.Var("i"), hl.RDom([(0, 30000)], "r"), hl.Func("out")
    out[i] = hl.f32(0)
    out[i] += x[(i * r.x) % N]
    out.update().unroll(r.x)  # 30000 unrolled bodies: LLVM takes minutes
    return out


FAULTS = {"segfault": _segfault, "abort": _abort, "hang": _hang, "wrong": _wrong}
EXPECTED = {"segfault": "SIGSEGV", "abort": "SIGABRT", "hang": Outcome.RUN_TIMEOUT.value,
            "wrong": Outcome.WRONG_RESULT.value, "slow_compile": Outcome.COMPILE_TIMEOUT.value}


class FaultInjectingBuilder(RayBuilder):
    """A test hook: the RayBuilder, except that chosen genomes get a faulty
    kernel (same signature as the real one) or a build that never ends (submitted
    in their place, so the builder's own compile timeout stops it), and the
    first batch has one of its build workers killed with SIGKILL."""

    def __init__(self, faults: dict[str, str], **kwargs):
        super().__init__(**kwargs)
        self.faults = faults  # genome key -> fault name
        self.killed: list[int] = []
        self._fault_artifacts: dict[str, Artifact] = {}
        self._closed = threading.Event()
        self._hunter: threading.Thread | None = None

    def prepare(self, ctx):
        super().prepare(ctx)
        self._closed.clear()
        for name, algorithm in FAULTS.items():
            op = _op(name, algorithm)
            space = ScheduleSpace.from_algorithm(op.algorithm(), 16, default_threads())
            self._fault_artifacts[name] = build(op, space, unscheduled(space), ctx.target)
        slow = _op("slow_compile", _slow_compile)
        slow_space = ScheduleSpace.from_algorithm(slow.algorithm(), 16, default_threads())
        self._slow_parts = self._ray.put((slow, slow_space, ctx.target))
        self._slow_genome = unscheduled(slow_space)
        self._slow_build = self._ray.remote(num_cpus=1, max_retries=0)(_build_task)

    def _submit(self, genome):
        if self.faults.get(genome.key) == "slow_compile":
            return self._slow_build.remote(self._slow_parts, self._slow_genome)
        return super()._submit(genome)

    def build(self, genomes):
        if self._hunter is None:
            self._hunter = threading.Thread(target=self._kill_a_build_worker, daemon=True)
            self._hunter.start()
        real = super().build(genomes)
        out = []
        for genome, built in zip(genomes, real):
            fault = self.faults.get(genome.key)
            out.append(self._fault_artifacts.get(fault, built))
        return out

    def close(self):
        self._closed.set()
        super().close()

    def _kill_a_build_worker(self):
        """SIGKILL the first build worker seen at work, unless the run ends first."""
        while not self.killed and not self._closed.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                if any("_build_task" in part for part in proc.info["cmdline"] or []):
                    os.kill(proc.pid, signal.SIGKILL)
                    self.killed.append(proc.pid)
                    return
            time.sleep(0.002)


def test_faults_are_recorded_by_kind_and_the_run_ends_with_a_correct_winner(local_ray, cache):
    op = ek.operators.relu((N,))
    space = context(op).space
    genomes = genomes_for(space, 40, seed=5)
    faulty = {genomes[i].key: name for i, name in zip((3, 5, 7, 9, 11),
                                                    ("segfault", "abort", "hang", "wrong", "slow_compile"))}
    builder = FaultInjectingBuilder(faulty, compile_timeout=4.0)
    evaluator = Evaluator(builder, RayRunner(), Settings(min_run_timeout=1.0))
    kernel = ek.tune(op, budget=30, seed=5, evaluator=evaluator, cache_dir=cache)

    rows = ek.records(op, cache_dir=cache)
    assert len(rows) == 30, "an evaluation was lost"
    assert len({r["genome_key"] for r in rows}) == 30
    by_key = {r["genome_key"]: r for r in rows}
    assert set(faulty) <= set(by_key), "the first population holds every faulty genome"
    for key, fault in faulty.items():
        row = by_key[key]
        assert EXPECTED[fault] in (row["outcome"], row["message"].split()[-1]), (fault, row)
    assert builder.killed, "no build worker was killed"
    x = np.linspace(-2, 2, N, dtype=np.float32)
    assert np.array_equal(kernel(x), np.maximum(x, 0))


def _build_or_stall(parts, genome, stalled_key):
    """A build task whose one chosen genome never finishes building."""
    if genome.key == stalled_key:
        time.sleep(600)
    return _build_task(parts, genome)


def test_a_stalled_build_times_out_from_its_own_start_and_holds_up_no_other(local_ray):
    """One task per CPU in flight: a build that never ends is cancelled
    ``compile_timeout`` after it was submitted, while the other CPU builds the
    rest of the batch: a build ends and the next is submitted in its place before
    the stalled one is cancelled (a batch that waited for its slowest build would
    submit nothing until then)."""
    op = ek.operators.relu((N,))
    genomes = genomes_for(context(op).space, 8, seed=2)
    stall = local_ray.remote(num_cpus=1, max_retries=0)(_build_or_stall)
    index = {g.key: i for i, g in enumerate(genomes)}
    events = []  # ("submit" | "built", genome index) and ("cancel", None), in order

    class Recording:
        """The ray module, except that cancel() is recorded."""

        def __getattr__(self, name):
            return getattr(local_ray, name)

        def cancel(self, ref, **options):
            events.append(("cancel", None))
            return local_ray.cancel(ref, **options)

    class Stalling(RayBuilder):
        def prepare(self, ctx):
            super().prepare(ctx)
            self._ray = Recording()

        def _submit(self, genome):
            events.append(("submit", index[genome.key]))
            return stall.remote(self._parts, genome, genomes[0].key)

        def _built(self, genome, ref):
            events.append(("built", index[genome.key]))
            return super()._built(genome, ref)

    builder = Stalling(compile_timeout=5.0)
    builder.prepare(context(op))
    if builder.parallelism < 2:
        builder.close()
        pytest.skip("this machine has a single CPU: no build can run beside the stalled one")
    built = builder.build(genomes)
    builder.close()
    assert isinstance(built[0], Result) and built[0].outcome is Outcome.COMPILE_TIMEOUT
    assert all(isinstance(b, Artifact) for b in built[1:])
    assert len(index) == len(genomes) and events.count(("cancel", None)) == 1, events
    stalled = [kind for kind, _ in events[events.index(("submit", 0)) + 1:events.index(("cancel", None))]]
    assert "built" in stalled and "submit" in stalled[stalled.index("built"):], \
        f"no build ended and made way for the next while the stalled one ran: {events}"


# -- two nodes on loopback -----------------------------------------------------------------

@pytest.fixture
def two_node_cluster(local_ray):
    """A head node that offers the host's runner resource, and a second node that
    only builds; both on 127.0.0.1, one CPU each."""
    with two_nodes(runner_resources("host")) as cluster:
        yield cluster


def test_builds_spread_over_both_nodes_and_timings_stay_on_the_runner_node(two_node_cluster):
    import ray

    runner_node = next(n["NodeID"] for n in ray.nodes() if next(iter(runner_resources("host"))) in n["Resources"])
    op = ek.operators.matmul(48, 64, 32)
    ctx = context(op)
    evaluator = RayEvaluator(address=two_node_cluster.address)
    evaluator.prepare(ctx)
    results = evaluator.evaluate(genomes_for(ctx.space, 12, seed=1))
    evaluator.close()
    assert len(results) == 12 and any(r.ok for r in results)
    assert len(set(evaluator.build_nodes)) == 2, "builds should land on both nodes"
    assert set(evaluator.timing_nodes) == {runner_node}, "timings only where the runner resource is"


def test_a_node_runner_serves_every_target_its_cpu_runs():
    from evokernel.evaluators._cluster import runner_resource_for

    host = ek.Target.parse("host")
    host_res, avx2_res = next(iter(runner_resources(host))), next(iter(runner_resources("x86-64-linux-avx2")))
    offered = {"CPU": 2.0, host_res: 1.0}
    assert runner_resource_for(ek.Target.parse("x86-64-linux-avx2"), offered) == host_res
    assert runner_resource_for(ek.Target.parse("x86-64-linux-avx2"), {**offered, avx2_res: 1.0}) == avx2_res
    assert runner_resource_for(ek.Target.parse("arm-64-linux"), offered) is None
    assert runner_resource_for(host, {"CPU": 2.0}) is None


def test_an_unreachable_cluster_address_fails_at_once_naming_it(monkeypatch):
    """ray.init would retry a dead address for minutes; evokernel says so at once,
    without handing the address to ray.init."""
    import ray

    def init(*args, **kwargs):
        raise AssertionError("ray.init was given an address no Ray head answers at")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ek.EvokernelError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        ek.tune(ek.operators.relu(8), budget=2, retune=True, evaluator=RayEvaluator(address="127.0.0.1:1"))
    with pytest.raises(ek.EvokernelError, match="HOST:PORT"):
        ek.tune(ek.operators.relu(8), budget=2, retune=True, evaluator=RayEvaluator(address="nowhere"))
