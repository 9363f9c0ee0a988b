"""Evaluation on Ray: builds as parallel tasks, timing on one runner actor per target.

- ``RayBuilder``: builds are Ray tasks of one CPU each, so a batch spreads over every
  core of every node. A build that outlives the compile timeout is cancelled (its
  worker killed): ``compile_timeout``. A build worker that dies under it (a crash in
  Halide, a kill from outside) is retried once by Ray, then recorded as
  ``compile_error``.
- ``RayRunner``: timing happens on a runner actor that needs the target's runner
  resource (``runner_resources(target)``): only nodes that offer it time candidates.
  The actor checks and times kernels in its own killable worker process; on a node
  whose CPU is of another platform than the target's (an x86 node offering
  ``evokernel-runner:arm-64-linux``), in the kernel harness under an emulator
  (``EmulatedProcess``: correctness real, timings the emulator's). Build nodes of
  another platform than the target's compile objects only; the runner node links.
- ``RayEvaluator`` combines them: builds and timings alternate batch by batch (a
  batch is four builds per CPU), so nothing is built while a kernel is timed.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

from ..codegen import (FUNCTION, Artifact, build, cache_dir, host_platform, install_library, link_kernel,
                       native_runtime, platform, toolchain)
from ..errors import ClusterError, EvokernelError, TargetError
from ..genome import Genome
from ..target import Target
from ._builder import Builder
from ._cluster import alive, check, ensure_ray, epoch, get, node_id, runner_resource_for, using_ray, wait
from ._context import Context, Settings
from ._emulated import EmulatedProcess, required_emulator
from ._evaluator import Evaluator
from ._process import FIRST_START, MIN_RESTART, RESTART_FACTOR, TRANSFER_RATE, WorkerProcess
from ._protocol import Measurement, Protocol, Task
from ._result import Outcome, Result
from ._runner import Runner, no_runner

log = logging.getLogger("evokernel")

#: A call to a new runner actor may take this long beyond the run timeout for the
#: actor to start (a Ray worker, its imports); its worker's start comes on top.
ACTOR_START = 60.0
#: Seconds a runner actor's answer may take beyond its run timeout and worker start.
SLACK = 5.0


def _ship_code_by_value(operator) -> None:
    """A custom operator's functions may live in a module Ray workers cannot import
    (a test file, a notebook helper): send those modules' code along by value."""
    from ray import cloudpickle

    for fn in (getattr(operator, "algorithm_fn", None), getattr(operator, "reference_fn", None)):
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        if callable(fn) and module is not None and not module.__name__.startswith(("evokernel", "__main__")):
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # a package module cloudpickle will not ship: leave it to Ray
                pass


def _build_task(context_parts: tuple, genome: Genome) -> tuple:
    """Runs in a Ray worker: returns (artifact or None, message, node id). A node of
    the target's platform also links the kernel; another leaves that to the runner."""
    operator, space, target = context_parts
    try:
        artifact = build(operator, space, genome, target)
        if platform(target) == host_platform():
            native, runtime = native_runtime(cache_dir(), target.string)  # this node's
            library = link_kernel(artifact.object_bytes, runtime, native)
            artifact = dataclasses.replace(artifact, library=library.read_bytes(), runtime=runtime.name)
        return artifact, "", node_id()
    except EvokernelError as error:
        return None, str(error), node_id()


class RayBuilder(Builder):
    """Builds as Ray tasks of one CPU each, one task per CPU of the cluster in
    flight, spread over the nodes (Ray's default packs tasks near their arguments,
    leaving other nodes idle); ``nodes`` records the Ray node of every build."""

    batch_per_slot = 4

    def __init__(self, address: str | None = None, compile_timeout: float = 15.0):
        self.address, self.compile_timeout = address, compile_timeout
        self.nodes: list[str] = []

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        self._ray = ray = ensure_ray(self.address)
        self._epoch = epoch()
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _ship_code_by_value(context.operator)
        self._parts = ray.put((context.operator, context.space, context.target))
        self._task = ray.remote(num_cpus=1, max_retries=1, scheduling_strategy="SPREAD")(_build_task)

    def build(self, genomes: list[Genome]) -> list[Artifact | Result]:
        """Build with one task per CPU in flight, the next submitted as one ends, so
        every build gets ``compile_timeout`` from its start and a slow one holds up
        only its own CPU. A lost local instance raises ``ClusterError``."""
        ray, out = self._ray, [None] * len(genomes)
        waiting, running = list(enumerate(genomes)), {}  # ref -> (index, submitted)
        with using_ray(self._epoch):
            while waiting or running:
                while waiting and len(running) < self.parallelism:
                    index, genome = waiting.pop(0)
                    running[self._submit(genome)] = (index, time.monotonic())
                first = min(submitted for _, submitted in running.values())
                ready = wait(list(running), max(0.0, first + self.compile_timeout - time.monotonic()), self._epoch)
                for ref in ready:
                    index, _ = running.pop(ref)
                    out[index] = self._built(genomes[index], ref)
                for ref, (index, submitted) in list(running.items()):
                    if time.monotonic() - submitted >= self.compile_timeout:
                        ray.cancel(ref, force=True)
                        del running[ref]
                        out[index] = Result(genomes[index].key, Outcome.COMPILE_TIMEOUT,
                                            message=f"build still running after {self.compile_timeout:g} s")
        return out

    def _submit(self, genome: Genome):
        """Start one build task; returns its object ref."""
        return self._task.remote(self._parts, genome)

    def _built(self, genome: Genome, ref) -> "Artifact | Result":
        try:
            artifact, message, node = self._ray.get(ref)
        except Exception as error:  # the build worker died twice: report, go on
            check(self._epoch)  # unless the instance itself is lost
            return Result(genome.key, Outcome.COMPILE_ERROR, message=f"build worker lost: {error}")
        self.nodes.append(node)
        return artifact if artifact is not None else Result(genome.key, Outcome.COMPILE_ERROR, message=message)


class _RunnerActor:
    """Checks and times kernels on one node, in a killable worker process, or for a
    target of another platform than the node's, under its emulator. A node that
    cannot run the target keeps the reason in ``problem``."""

    def __init__(self, task: Task, target: str, threads: int):
        self.target, self.worker, self.problem = target, None, None
        try:
            native = platform(target) == host_platform()
            emulator = None if native else required_emulator(Target.parse(target))
            self.native_dir, self.runtime = native_runtime(cache_dir(), target)  # this node's
            task.runtime, task.threads = str(self.runtime), threads
            if native:
                self.worker = WorkerProcess(task)
            else:
                self.worker = EmulatedProcess(task, Target.parse(target), emulator, self.native_dir)
        except EvokernelError as error:
            self.problem = (f"the runner node ({host_platform()}) offers a runner resource for {target} but "
                            f"cannot run it: {error}")

    def check(self) -> str | None:
        """Why this node cannot run the target, or ``None``."""
        return self.problem

    def measure(self, artifact: Artifact, protocol: Protocol, best, timeout: float) -> tuple:
        if self.problem is not None:
            return Measurement(Outcome.RUN_CRASH, message=self.problem), node_id()
        try:
            if artifact.library is not None and artifact.runtime == self.runtime.name:
                library = install_library(artifact.library, self.native_dir)
            else:  # not linked on the build node, or against another runtime build: link here
                library = link_kernel(artifact.object_bytes, self.runtime, self.native_dir, self.target)
        except EvokernelError as error:
            return Measurement(Outcome.COMPILE_ERROR, message=str(error)), node_id()
        return self.worker.measure(library, FUNCTION, protocol, best, timeout), node_id()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


class RayRunner(Runner):
    """Times on a runner actor placed on a node that offers the target's runner
    resource, replaced if it is lost; ``nodes`` records the node of every timing."""

    def __init__(self, address: str | None = None):
        self.address = address
        self._actor = None
        self.nodes: list[str] = []

    def check_target(self, target: Target) -> None:
        """Raise ``TargetError`` unless a node of the cluster offers a runner resource
        for ``target``, and, for a target of another platform than this machine's,
        unless its cross toolchain is here (the winner is linked here for the cache)."""
        self._resource(target)
        if platform(target) != host_platform():
            try:
                toolchain(target).cc(TargetError)
            except EvokernelError as error:
                raise TargetError(f"the winner for {target.string} is linked on this machine: {error}") from error

    def _resource(self, target: Target) -> str:
        resource = runner_resource_for(target, ensure_ray(self.address).cluster_resources())
        if resource is None:
            raise no_runner(target, "on any node of the Ray cluster")
        return resource

    def prepare(self, context: Context) -> None:
        self.close()
        super().prepare(context)
        self._ray = ray = ensure_ray(self.address)
        self._epoch = epoch()
        self._actor_class = ray.remote(num_cpus=0, max_restarts=0)(_RunnerActor)
        self._actor_options = {"resources": {self._resource(context.target): 1}}
        self._task = context.task(here=False)
        size = sum(a.nbytes for a in self._task.inputs) + self._task.reference.nbytes
        self._first_allowance = ACTOR_START + FIRST_START + size / TRANSFER_RATE
        self._actor = self._new_actor()
        problem = get(self._actor.check.remote(), ACTOR_START, self._epoch)
        if problem is not None:
            self.close()
            raise TargetError(problem)

    def _new_actor(self):
        self._first_call: float | None = None  # seconds the new actor's first answer took
        return self._actor_class.options(**self._actor_options).remote(
            self._task, self.context.target.string, self.context.threads)

    def allowance(self) -> float:
        """Seconds a call to the actor may take beyond its run timeout: on a new actor,
        its start and its worker's; after that, a worker restart (``RESTART_FACTOR``
        times what the first call took, at least ``MIN_RESTART`` seconds). A stopped
        or hung actor is given up after that and replaced."""
        if self._first_call is None:
            return self._first_allowance
        return max(MIN_RESTART, RESTART_FACTOR * self._first_call) + SLACK

    def measure(self, artifact: Artifact, best, timeout: float, protocol: Protocol) -> Measurement:
        limit, began = timeout + self.allowance(), time.monotonic()
        with using_ray(self._epoch):
            try:
                m, node = get(self._actor.measure.remote(artifact, protocol, best, timeout), limit, self._epoch)
            except ClusterError:
                raise
            except Exception as error:  # the runner actor itself was lost, or hangs: replace it
                check(self._epoch)  # unless the instance itself is lost
                what = f"no answer within {limit:.3g} s" if isinstance(error, TimeoutError) else type(error).__name__
                log.warning("runner actor lost (%s); starting a new one", what)
                self._replace_actor()
                return Measurement(Outcome.RUN_CRASH, message=f"runner lost: {what}")
        if self._first_call is None:
            self._first_call = time.monotonic() - began
        self.nodes.append(node)
        return m

    def _replace_actor(self) -> None:
        try:
            self._ray.kill(self._actor)
        except Exception:
            pass
        self._actor = self._new_actor()

    def close(self) -> None:
        if self._actor is not None and alive(self._epoch):
            try:
                with using_ray(self._epoch):
                    get(self._actor.close.remote(), 30, self._epoch)
                    self._ray.kill(self._actor)
            except Exception:
                pass
        self._actor = None


class RayEvaluator(Evaluator):
    """Evaluate on Ray: ``RayEvaluator()`` uses (or starts) the local instance,
    ``RayEvaluator(address="host:6379")`` joins a cluster.

    A candidate builds in ~0.07 s (gemm 512) to ~0.25 s (conv2d) here;
    ``compile_timeout`` cuts off the rare one LLVM takes minutes over (some
    64-lane ``rfactor`` gemms), which would hold a CPU for much of a short budget.
    ``build_nodes`` and ``timing_nodes`` record the Ray node of every build and
    every timing, for inspection.
    """

    def __init__(self, address: str | None = None, compile_timeout: float = 15.0, settings: Settings | None = None):
        super().__init__(RayBuilder(address, compile_timeout), RayRunner(address), settings)

    @property
    def build_nodes(self) -> list[str]:
        return self.builder.nodes

    @property
    def timing_nodes(self) -> list[str]:
        return self.runner.nodes
