"""Evaluation on Ray: builds as parallel tasks, timing on one runner actor per target.

- Builds are Ray tasks of one CPU each, so a batch spreads over every core of every
  node. A build that outlives the compile timeout is cancelled (its worker killed):
  ``compile_timeout``. A build worker that dies under it (a crash in Halide, a kill
  from outside) is retried once by Ray, then recorded as ``compile_error``.
- Timing happens on a runner actor that needs the target's runner resource
  (``runner_resources(target)``): only nodes that offer it time candidates. The
  actor checks and times kernels in its own killable worker process (see
  ``_runner``). Builds and timings alternate batch by batch (a batch is four
  builds per CPU), so nothing is built while a kernel is timed.
- Without an address (nor ``RAY_ADDRESS``), the first use starts a local Ray on
  loopback, sized to this machine, quiet and without dashboard, offering the host's
  runner resource; it is reused and shut down at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import EvokernelError
from ..genome import Genome
from ..target import Target
from ._build import FUNCTION, Artifact, BuildFailure, build, genome_key
from ._evaluator import Context, Evaluator, no_runner
from ._result import Outcome, Result
from ._runner import Measurement, Protocol, Runner, Task

RESOURCE_PREFIX = "evokernel-runner:"
log = logging.getLogger("evokernel")


def runner_resources(target: "str | Target" = "host") -> dict[str, float]:
    """The custom resource a Ray node offers to time kernels: named after the node's
    own target (its CPU, plus a GPU API such as ``-opencl`` or ``-cuda`` for a node
    with such a device), it serves every target that node can run. Pass it to
    ``ray start --resources`` on the nodes that should run timings.

    >>> sorted(runner_resources("x86-64-linux-avx2"))
    ['evokernel-runner:x86-64-linux-avx2']
    """
    return {RESOURCE_PREFIX + Target.parse(target).string: 1.0}


def local_runner_resources() -> dict[str, float]:
    """The runner resources this machine offers: its CPU's, and one per GPU API
    with a device here (``...-opencl`` where an OpenCL device is found)."""
    from ..target import gpu_available

    resources = runner_resources("host")
    for api in ("opencl", "cuda"):
        if gpu_available(api):
            resources.update(runner_resources(f"host-{api}"))
    return resources


def runner_resource_for(target: Target, offered: dict) -> str | None:
    """The runner resource in ``offered`` (a cluster's resources) of a node that can
    run ``target``, preferring an exact match."""
    names = [n for n in offered if n.startswith(RESOURCE_PREFIX) and offered[n] >= 1]
    exact = RESOURCE_PREFIX + target.string
    if exact in names:
        return exact
    return next((n for n in sorted(names) if target.runs_on(Target(n[len(RESOURCE_PREFIX):]))), None)


_STARTED_HERE = False


def reachable(address: str, timeout: float = 5.0, what: str = "a Ray cluster address") -> str:
    """``address`` if a Ray head answers there; else an ``EvokernelError`` at once
    (``ray.init`` would retry a dead address for minutes).

    >>> reachable("head", what="--cluster")
    Traceback (most recent call last):
    evokernel.errors.EvokernelError: --cluster takes HOST:PORT (the Ray head's address), got 'head'
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EvokernelError(f"{what} takes HOST:PORT (the Ray head's address), got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise EvokernelError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}") from None
    return address


def ensure_ray(address: str | None = None):
    """Connect to ``address`` (or ``$RAY_ADDRESS``), or start the local instance
    once; returns the ``ray`` module."""
    global _STARTED_HERE
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "auto":
        reachable(address)
    if not address:
        # On Linux, Ray binds to the machine's network address unless this is set
        # before Ray is imported: keep the embedded instance on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray runs its workers at nice 15, below everything else on the machine; on
        # the embedded instance they do the tuning itself (builds ~17% slower, and
        # timings open to any background process, at 15).
        os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    if ray.is_initialized():
        return ray
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **quiet)
        return ray
    from ._evaluator import default_threads

    ray.init(address="local", num_cpus=default_threads(), resources=local_runner_resources(), **quiet)
    _STARTED_HERE = True
    atexit.register(_shutdown)
    return ray


def _shutdown() -> None:
    import ray

    if _STARTED_HERE and ray.is_initialized():
        ray.shutdown()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _ship_code_by_value(operator) -> None:
    """A custom operator's functions may live in a module Ray workers cannot import
    (a test file, a notebook helper): send those modules' code along by value."""
    import sys

    from ray import cloudpickle

    for fn in (getattr(operator, "algorithm_fn", None), getattr(operator, "reference_fn", None)):
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        if callable(fn) and module is not None and not module.__name__.startswith(("evokernel", "__main__")):
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # a package module cloudpickle will not ship: leave it to Ray
                pass


def _node_runtime(target: str) -> tuple[Path, Path]:
    """This node's directory of compiled code and its runtime library for ``target``."""
    from ..runtime import _native, _paths

    native = _paths.native_dir(_paths.cache_dir())
    return native, _native.runtime_library(target, native)


def _build_task(context_parts: tuple, genome: Genome | None) -> tuple:
    """Runs in a Ray worker: returns (artifact or None, message, node id)."""
    import dataclasses

    from ..runtime import _native

    operator, space, target = context_parts
    try:
        artifact = build(operator, space, genome, target)
        native, runtime = _node_runtime(target.string)
        library = _native.link_kernel(artifact.object_bytes, runtime, native)
        artifact = dataclasses.replace(artifact, library=library.read_bytes(), runtime=runtime.name)
        return artifact, "", _node_id()
    except (BuildFailure, EvokernelError) as error:
        return None, str(error), _node_id()


class _RunnerActor:
    """Checks and times kernels on one node, in a killable worker process."""

    def __init__(self, task: Task, target: str, threads: int):
        self.native_dir, self.runtime = _node_runtime(target)
        task.runtime, task.threads = str(self.runtime), threads
        self.runner = Runner(task)

    def measure(self, artifact: Artifact, protocol: Protocol, best, timeout: float) -> tuple:
        from ..runtime import _native

        try:
            if artifact.library is not None and artifact.runtime == self.runtime.name:
                library = _native.install_library(artifact.library, self.native_dir)
            else:  # linked against another runtime build: link here
                library = _native.link_kernel(artifact.object_bytes, self.runtime, self.native_dir)
        except EvokernelError as error:
            return Measurement(Outcome.COMPILE_ERROR, message=str(error)), _node_id()
        return self.runner.measure(library, FUNCTION, protocol, best, timeout), _node_id()

    def close(self) -> None:
        self.runner.close()


class RayEvaluator(Evaluator):
    """Evaluate on Ray: ``RayEvaluator()`` uses (or starts) the local instance,
    ``RayEvaluator(address="host:6379")`` joins a cluster.

    A candidate builds in ~0.07 s (gemm 512) to ~0.25 s (conv2d) here;
    ``compile_timeout`` cuts off the rare one LLVM takes minutes over (some
    64-lane ``rfactor`` gemms), which would hold a CPU for much of a short budget.

    ``build_nodes`` and ``timing_nodes`` record the Ray node of every build and
    every timing, for inspection.
    """

    batch_per_slot = 4

    def __init__(self, address: str | None = None, compile_timeout: float = 15.0):
        super().__init__()
        self.address, self.compile_timeout = address, compile_timeout
        self._actor = None
        self.build_nodes: list[str] = []
        self.timing_nodes: list[str] = []

    def check_target(self, target: Target) -> None:
        """Raise ``TargetError`` unless a node of the cluster offers a runner resource
        for ``target``."""
        self._runner_resource(target)

    def _runner_resource(self, target: Target) -> str:
        resource = runner_resource_for(target, ensure_ray(self.address).cluster_resources())
        if resource is None:
            raise no_runner(target, "on any node of the Ray cluster")
        return resource

    def prepare(self, context: Context) -> None:
        self.close()
        super().prepare(context)
        ray = ensure_ray(self.address)
        resource = self._runner_resource(context.target)
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._ray = ray
        _ship_code_by_value(context.operator)
        self._parts = ray.put((context.operator, context.space, context.target))
        self._build = ray.remote(num_cpus=1, max_retries=1)(_build_task)
        self._actor_class = ray.remote(num_cpus=0, max_restarts=0)(_RunnerActor)
        self._actor_options = {"resources": {resource: 1}}
        self._task = context.task()
        self._actor = self._new_actor()

    def _new_actor(self):
        return self._actor_class.options(**self._actor_options).remote(
            self._task, self.context.target.string, self.context.threads)

    def build_batch(self, genomes: list[Genome | None]) -> list[Artifact | Result]:
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
                    out[index] = Result(genome_key(genomes[index]), Outcome.COMPILE_TIMEOUT,
                                        message=f"build still running after {self.compile_timeout:g} s")
        return out

    def _submit(self, genome: Genome | None):
        return self._build.remote(self._parts, genome)

    def _built(self, genome: Genome | None, ref) -> "Artifact | Result":
        try:
            artifact, message, node = self._ray.get(ref)
        except Exception as error:  # the build worker died twice: report, go on
            return Result(genome_key(genome), Outcome.COMPILE_ERROR, message=f"build worker lost: {error}")
        self.build_nodes.append(node)
        return artifact if artifact is not None else Result(genome_key(genome), Outcome.COMPILE_ERROR,
                                                            message=message)

    def measure(self, artifact: Artifact, best, timeout: float, protocol: Protocol) -> Measurement:
        ray = self._ray
        try:
            m, node = ray.get(self._actor.measure.remote(artifact, protocol, best, timeout),
                              timeout=timeout + 60)
        except Exception as error:  # the runner actor itself was lost: replace it
            log.warning("runner actor lost (%s); starting a new one", type(error).__name__)
            self._replace_actor()
            return Measurement(Outcome.RUN_CRASH, message=f"runner lost: {type(error).__name__}")
        self.timing_nodes.append(node)
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


__all__ = ["RayEvaluator", "runner_resources", "local_runner_resources", "ensure_ray"]
