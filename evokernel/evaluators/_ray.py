"""Evaluation on Ray: builds as parallel tasks, timing on one runner actor per target.

- ``RayBuilder``: builds are Ray tasks of one CPU each, so a batch spreads over every
  core of every node. A build that outlives the compile timeout is cancelled (its
  worker killed): ``compile_timeout``. A build worker that dies under it (a crash in
  Halide, a kill from outside) is retried once by Ray, then recorded as
  ``compile_error``.
- ``RayRunner``: timing happens on a runner actor that needs the target's runner
  resource (``runner_resources(target)``): only nodes that offer it time candidates.
  The actor checks and times kernels in its own killable worker process.
- ``RayEvaluator`` combines them: builds and timings alternate batch by batch (a
  batch is four builds per CPU), so nothing is built while a kernel is timed.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

from ..codegen import FUNCTION, Artifact, build, cache_dir, install_library, link_kernel, native_runtime
from ..errors import EvokernelError
from ..genome import Genome
from ..target import Target
from ._builder import Builder
from ._cluster import ensure_ray, node_id, runner_resource_for
from ._context import Context, Settings
from ._evaluator import Evaluator
from ._process import WorkerProcess
from ._protocol import Measurement, Protocol, Task
from ._result import Outcome, Result
from ._runner import Runner, no_runner

log = logging.getLogger("evokernel")


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
    """Runs in a Ray worker: returns (artifact or None, message, node id)."""
    operator, space, target = context_parts
    try:
        artifact = build(operator, space, genome, target)
        native, runtime = native_runtime(cache_dir(), target.string)  # this node's
        library = link_kernel(artifact.object_bytes, runtime, native)
        artifact = dataclasses.replace(artifact, library=library.read_bytes(), runtime=runtime.name)
        return artifact, "", node_id()
    except EvokernelError as error:
        return None, str(error), node_id()


class RayBuilder(Builder):
    """Builds as Ray tasks of one CPU each, one task per CPU of the cluster in
    flight; ``nodes`` records the Ray node of every build."""

    batch_per_slot = 4

    def __init__(self, address: str | None = None, compile_timeout: float = 15.0):
        self.address, self.compile_timeout = address, compile_timeout
        self.nodes: list[str] = []

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        self._ray = ray = ensure_ray(self.address)
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _ship_code_by_value(context.operator)
        self._parts = ray.put((context.operator, context.space, context.target))
        self._task = ray.remote(num_cpus=1, max_retries=1)(_build_task)

    def build(self, genomes: list[Genome]) -> list[Artifact | Result]:
        """Build with one task per CPU in flight, the next submitted as one ends, so
        every build gets ``compile_timeout`` from its start and a slow one holds up
        only its own CPU."""
        ray, out = self._ray, [None] * len(genomes)
        waiting, running = list(enumerate(genomes)), {}  # ref -> (index, submitted)
        while waiting or running:
            while waiting and len(running) < self.parallelism:
                index, genome = waiting.pop(0)
                running[self._submit(genome)] = (index, time.monotonic())
            first = min(submitted for _, submitted in running.values())
            ready, _ = ray.wait(list(running), num_returns=1,
                                timeout=max(0.0, first + self.compile_timeout - time.monotonic()))
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
            return Result(genome.key, Outcome.COMPILE_ERROR, message=f"build worker lost: {error}")
        self.nodes.append(node)
        return artifact if artifact is not None else Result(genome.key, Outcome.COMPILE_ERROR, message=message)


class _RunnerActor:
    """Checks and times kernels on one node, in a killable worker process."""

    def __init__(self, task: Task, target: str, threads: int):
        self.native_dir, self.runtime = native_runtime(cache_dir(), target)  # this node's
        task.runtime, task.threads = str(self.runtime), threads
        self.worker = WorkerProcess(task)

    def measure(self, artifact: Artifact, protocol: Protocol, best, timeout: float) -> tuple:
        try:
            if artifact.library is not None and artifact.runtime == self.runtime.name:
                library = install_library(artifact.library, self.native_dir)
            else:  # linked against another runtime build: link here
                library = link_kernel(artifact.object_bytes, self.runtime, self.native_dir)
        except EvokernelError as error:
            return Measurement(Outcome.COMPILE_ERROR, message=str(error)), node_id()
        return self.worker.measure(library, FUNCTION, protocol, best, timeout), node_id()

    def close(self) -> None:
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
        for ``target``."""
        self._resource(target)

    def _resource(self, target: Target) -> str:
        resource = runner_resource_for(target, ensure_ray(self.address).cluster_resources())
        if resource is None:
            raise no_runner(target, "on any node of the Ray cluster")
        return resource

    def prepare(self, context: Context) -> None:
        self.close()
        super().prepare(context)
        self._ray = ray = ensure_ray(self.address)
        self._actor_class = ray.remote(num_cpus=0, max_restarts=0)(_RunnerActor)
        self._actor_options = {"resources": {self._resource(context.target): 1}}
        self._task = context.task()
        self._actor = self._new_actor()

    def _new_actor(self):
        return self._actor_class.options(**self._actor_options).remote(
            self._task, self.context.target.string, self.context.threads)

    def measure(self, artifact: Artifact, best, timeout: float, protocol: Protocol) -> Measurement:
        try:
            m, node = self._ray.get(self._actor.measure.remote(artifact, protocol, best, timeout),
                                    timeout=timeout + 60)
        except Exception as error:  # the runner actor itself was lost: replace it
            log.warning("runner actor lost (%s); starting a new one", type(error).__name__)
            self._replace_actor()
            return Measurement(Outcome.RUN_CRASH, message=f"runner lost: {type(error).__name__}")
        self.nodes.append(node)
        return m

    def _replace_actor(self) -> None:
        try:
            self._ray.kill(self._actor)
        except Exception:
            pass
        self._actor = self._new_actor()

    def close(self) -> None:
        if self._actor is not None:
            try:
                self._ray.get(self._actor.close.remote(), timeout=30)
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
