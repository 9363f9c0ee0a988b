"""Evaluators turn genomes into ``Result``s: build, check against the reference, time.

``Evaluator`` is the extension point (string factory ``create_evaluator``):

- ``"local"``: builds in this process, checks and times in a worker process that is
  killed on a timeout and replaced after a crash.
- ``"ray"`` (``_ray.RayEvaluator``, the default of ``tune``): builds as parallel Ray
  tasks, times on a runner actor of the target's node.
- ``"inline"``: everything in this process, for debugging (a crash in generated
  code ends the process, a hang hangs it).
"""

from __future__ import annotations

import abc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import EvokernelError, TargetError
from ..genome import Genome, ScheduleSpace
from ..operators import Operator
from ..runtime import _native, _paths
from ..target import Target
from ._build import FUNCTION, Artifact, BuildFailure, build, genome_key
from ._result import Outcome, Result
from ._runner import Measurement, Protocol, Runner, Task, run_one


@dataclass
class Settings:
    """Measurement settings. The run timeout follows the best time found so far:
    ``max(min_run_timeout, 10 * protocol.slow_factor * best)``; the protocol times
    candidates much slower than the best only roughly (it says how). On a GPU
    target a kernel's first call also compiles it in the driver (OpenCL C, PTX):
    that call is made untimed first, and ``jit_allowance`` seconds are added to
    every run timeout for it."""

    protocol: Protocol = field(default_factory=Protocol)
    min_run_timeout: float = 1.0
    first_run_timeout: float = 120.0
    jit_allowance: float = 10.0


@dataclass
class Context:
    """Everything an evaluator needs for one operator on one target."""

    operator: Operator
    target: Target
    space: ScheduleSpace
    threads: int
    cache: Path
    seed: int = 0
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.inputs = self.operator.random_inputs(rng)
        self.reference = np.asarray(self.operator.reference(*self.inputs), dtype=self.operator.dtype)
        self.native_dir = _paths.native_dir(self.cache)
        self.runtime = _native.runtime_library(self.target.string, self.native_dir)

    def task(self) -> Task:
        specs = (*self.operator.inputs, self.operator.output)
        rtol, atol = self.operator.tolerance
        return Task(str(self.runtime), self.threads, [s.shape for s in specs], [s.dtype for s in specs],
                    self.inputs, self.reference, rtol, atol, jit_call=self.target.is_gpu)

    def run_timeout(self, seconds: float) -> float:
        """``seconds``, plus the driver's compile time on a GPU target."""
        return seconds + (self.settings.jit_allowance if self.target.is_gpu else 0.0)

    def link(self, artifact: Artifact) -> Path:
        return _native.link_kernel(artifact.object_bytes, self.runtime, self.native_dir)


class Evaluator(abc.ABC):
    """Builds, checks and times genomes for one ``Context`` at a time.

    Subclasses provide two steps: ``build_batch`` (genomes to artifacts, in parallel
    where they can) and ``measure`` (check and time one artifact, alone on its
    device). ``evaluate`` alternates them batch by batch (``parallelism`` builds at
    a time, ``batch_per_slot`` each), so no build runs while a kernel is timed.
    """

    parallelism: int = 1
    #: Builds per build slot in one batch: builds differ in length, and a longer
    #: batch keeps every slot busy to its end (at the price of noticing a passed
    #: deadline one batch later).
    batch_per_slot: int = 1
    #: Artifacts of the fastest candidates kept in memory (for retiming and the
    #: winner); any other is rebuilt on request, so a long search stays small.
    keep: int = 3

    def __init__(self) -> None:
        self.context: Context | None = None
        self.best: float | None = None
        self._fastest: dict[str, tuple[float, Artifact]] = {}

    def prepare(self, context: Context) -> None:
        self.context, self.best, self._fastest = context, None, {}

    def check_target(self, target: Target) -> None:
        """Raise ``TargetError`` unless this evaluator has a runner for ``target``
        (here: this machine's CPU, and its GPU for a GPU target)."""
        if not target.runs_here():
            raise no_runner(target, f"on this machine ({Target.parse('host').string})")

    @abc.abstractmethod
    def build_batch(self, genomes: list[Genome | None]) -> list["Artifact | Result"]:
        """Build each genome (``None``: the unscheduled pipeline); a failed build
        is a ``Result`` (compile_error or compile_timeout)."""

    @abc.abstractmethod
    def measure(self, artifact: Artifact, best: float | None, timeout: float,
                protocol: Protocol) -> Measurement:
        """Check and time one built kernel against the ``best`` time so far."""

    def evaluate(self, genomes: Iterable[Genome], deadline: float | None = None,
                 on_result: Callable[[Genome, Result], None] | None = None) -> list[Result]:
        """Evaluate genomes in order, stopping early once ``deadline`` (a
        ``time.monotonic()`` value) has passed; ``on_result`` sees each result as
        soon as it exists (the records write it there)."""
        genomes, results, step = list(genomes), [], max(1, self.parallelism * self.batch_per_slot)
        for start in range(0, len(genomes), step):
            chunk = genomes[start:start + step]
            for genome, built in zip(chunk, self.build_batch(chunk)):
                if deadline is not None and results and time.monotonic() > deadline:
                    return results
                results.append(self._timed(genome, built, None))
                if on_result is not None:
                    on_result(genome, results[-1])
        return results

    def evaluate_one(self, genome: Genome | None, protocol: Protocol | None = None) -> Result:
        """Build and time one genome (``None``: the unscheduled pipeline)."""
        return self._timed(genome, self.build_batch([genome])[0], protocol)

    def _timed(self, genome: Genome | None, built: "Artifact | Result", protocol: Protocol | None) -> Result:
        if isinstance(built, Result):
            return built
        settings = self.context.settings
        protocol = protocol or settings.protocol
        if self.best is None:
            timeout = settings.first_run_timeout
        else:
            timeout = max(settings.min_run_timeout, 10 * protocol.slow_factor * self.best)
        key = genome_key(genome)
        measured = self.measure(built, self.best, self.context.run_timeout(timeout), protocol)
        result = _result(key, measured, built.seconds)
        if result.ok and genome is not None:
            self._remember(key, result.time, built)
            if self.best is None or result.time < self.best:
                self.best = result.time
        return result

    def _remember(self, key: str, seconds: float, artifact: Artifact) -> None:
        self._fastest[key] = (seconds, artifact)
        if len(self._fastest) > self.keep:
            del self._fastest[max(self._fastest, key=lambda k: self._fastest[k][0])]

    def artifact(self, genome: Genome) -> Artifact:
        """The artifact of ``genome``: kept from the search if it was among the
        fastest, else built now (and kept); raises ``BuildFailure``."""
        if genome.key not in self._fastest:
            built = self.build_batch([genome])[0]
            if isinstance(built, Result):
                raise BuildFailure(built.message)
            self._fastest[genome.key] = (float("-inf"), built)  # asked for by name: never evicted
        return self._fastest[genome.key][1]

    def retime(self, genomes: list[Genome], rounds: int = 3) -> dict[str, Result]:
        """Time candidates again, side by side (interleaved rounds), so that a lucky
        sample does not pick the winner; returns the combined result per genome key
        (median over every round's samples)."""
        samples: dict[str, list[float]] = {g.key: [] for g in genomes}
        failed: dict[str, Result] = {}
        timeout = self.context.run_timeout(max(self.context.settings.min_run_timeout, 200 * (self.best or 1.0)))
        for _ in range(rounds):
            for genome in genomes:
                key = genome.key
                if key in failed:
                    continue
                try:
                    artifact = self.artifact(genome)
                except (BuildFailure, EvokernelError) as error:
                    failed[key] = Result(key, Outcome.COMPILE_ERROR, message=str(error))
                    continue
                m = self.measure(artifact, None, timeout, self.context.settings.protocol)
                if m.outcome is Outcome.OK:
                    samples[key] += m.times
                else:
                    failed[key] = _result(key, m, 0.0)
        out = {k: _result(k, Measurement(Outcome.OK, tuple(v)), 0.0) for k, v in samples.items() if v}
        return {**out, **failed}

    def close(self) -> None:
        """Release workers; the evaluator may be prepared again afterwards."""


def build_here(context: Context, genome: Genome | None) -> "Artifact | Result":
    """Build in this process; a rejected schedule becomes a compile_error Result."""
    try:
        return build(context.operator, context.space, genome, context.target)
    except BuildFailure as error:
        return Result(genome_key(genome), Outcome.COMPILE_ERROR, message=str(error))


def _result(key: str, m: Measurement, build_seconds: float) -> Result:
    if m.outcome is not Outcome.OK:
        return Result(key, m.outcome, max_error=m.max_error, message=m.message, build_seconds=build_seconds)
    times = np.asarray(m.times)
    median = float(np.median(times))
    q75, q25 = np.percentile(times, [75, 25])
    return Result(key, Outcome.OK, median, float((q75 - q25) / median) if median > 0 else 0.0,
                  len(times), m.max_error, m.message, build_seconds)


class _BuildsHere(Evaluator):
    """Builds and links in this process, one genome at a time; subclasses run."""

    def build_batch(self, genomes):
        return [build_here(self.context, g) for g in genomes]

    def measure(self, artifact, best, timeout, protocol):
        try:
            library = self.context.link(artifact)
        except EvokernelError as error:
            return Measurement(Outcome.COMPILE_ERROR, message=str(error))
        return self.run(library, best, timeout, protocol)

    @abc.abstractmethod
    def run(self, library: Path, best: float | None, timeout: float, protocol: Protocol) -> Measurement:
        """Check and time a linked kernel library."""


class LocalEvaluator(_BuildsHere):
    """Build here; check and time in a killable worker process."""

    def __init__(self) -> None:
        super().__init__()
        self._runner: Runner | None = None

    def prepare(self, context: Context) -> None:
        self.close()
        super().prepare(context)
        self._runner = Runner(context.task())

    def run(self, library, best, timeout, protocol):
        return self._runner.measure(library, FUNCTION, protocol, best, timeout)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


class InlineEvaluator(_BuildsHere):
    """Everything in this process (no isolation): for debugging."""

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        self._task = context.task()
        self._runtime = _native.load_runtime(context.runtime, context.threads)

    def run(self, library, best, timeout, protocol):
        kernel = _native.NativeKernel(library, FUNCTION, self._runtime, self._task.shapes, self._task.dtypes)
        return run_one(kernel, self._task, protocol, best)


def no_runner(target: Target, where: str) -> TargetError:
    """The error for a target no runner can execute, with the two ways out."""
    from ._ray import runner_resources

    resource = next(iter(runner_resources(target)))
    return TargetError(
        f"no runner can execute target {target.string!r} {where}. Cross-compile for it with "
        f"ek.compile_for(kernel_or_operator, {target.string!r}, path), or tune with evaluator='ray' on a "
        f"Ray cluster where a node offers the runner resource {resource!r} "
        f"(ray start --resources='{{\"{resource}\": 1}}')")


def create_evaluator(kind: "str | Evaluator") -> Evaluator:
    """``"ray"`` (parallel builds on the local Ray instance or ``$RAY_ADDRESS``),
    ``"local"`` or ``"inline"``; an ``Evaluator`` instance is returned as is."""
    if isinstance(kind, Evaluator):
        return kind
    if kind == "ray":
        from ._ray import RayEvaluator

        return RayEvaluator()
    factories = {"local": LocalEvaluator, "inline": InlineEvaluator}
    if kind not in factories:
        raise ValueError(f"unknown evaluator {kind!r}: choose 'ray', 'local' or 'inline', or pass an Evaluator")
    return factories[kind]()


def default_threads() -> int:
    """Halide's thread pool size: every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
