"""Evaluators turn genomes into ``Result``s: build, check against the reference, time.

``Evaluator`` is the extension point (string factory ``create_evaluator``):

- ``"local"`` (default): builds in this process, checks and times in a worker
  process that is killed on a timeout and replaced after a crash.
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

from ..errors import EvokernelError
from ..genome import Genome, ScheduleSpace
from ..operators import Operator
from ..runtime import _native, _paths
from ..target import Target
from ._build import FUNCTION, Artifact, BuildFailure, build
from ._result import Outcome, Result
from ._runner import Measurement, Protocol, Runner, Task, run_one


@dataclass
class Settings:
    """Measurement settings. The run timeout follows the best time found so far:
    ``max(min_run_timeout, slow_factor * 10 * best)``; a candidate whose first call is
    ``slow_factor`` times slower than the best is timed once and no more."""

    protocol: Protocol = field(default_factory=Protocol)
    slow_factor: float = 20.0
    min_run_timeout: float = 2.0
    first_run_timeout: float = 120.0


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
        self.native_dir = _paths.subdir(self.cache, "native")
        self.runtime = _native.runtime_library(self.target.string, self.native_dir)

    def task(self) -> Task:
        specs = (*self.operator.inputs, self.operator.output)
        rtol, atol = self.operator.tolerance
        return Task(str(self.runtime), self.threads, [s.shape for s in specs], [s.dtype for s in specs],
                    self.inputs, self.reference, rtol, atol)

    def link(self, artifact: Artifact) -> Path:
        return _native.link_kernel(artifact.object_bytes, self.runtime, self.native_dir)


class Evaluator(abc.ABC):
    """Builds, checks and times genomes for one ``Context`` at a time."""

    def __init__(self) -> None:
        self.context: Context | None = None
        self.best: float | None = None

    def prepare(self, context: Context) -> None:
        self.context, self.best = context, None
        self.libraries: dict[str, Path] = {}

    @abc.abstractmethod
    def measure(self, library: Path, cutoff: float | None, timeout: float,
                protocol: Protocol | None = None) -> Measurement:
        """Check and time one linked kernel library."""

    def evaluate(self, genomes: Iterable[Genome], deadline: float | None = None,
                 on_result: Callable[[Genome, Result], None] | None = None) -> list[Result]:
        """Evaluate genomes in order, stopping early once ``deadline`` (a
        ``time.monotonic()`` value) has passed; ``on_result`` sees each result as
        soon as it exists (the records write it there)."""
        results = []
        for genome in genomes:
            if deadline is not None and results and time.monotonic() > deadline:
                break
            results.append(self.evaluate_one(genome))
            if on_result is not None:
                on_result(genome, results[-1])
        return results

    def evaluate_one(self, genome: Genome | None, protocol: Protocol | None = None) -> Result:
        ctx = self.context
        key = genome.key if genome is not None else "unscheduled"
        try:
            artifact = build(ctx.operator, ctx.space, genome, ctx.target)
            library = ctx.link(artifact)
            self.libraries[key] = library
        except (BuildFailure, EvokernelError) as error:
            return Result(key, Outcome.COMPILE_ERROR, message=str(error))
        settings = ctx.settings
        if self.best is None:
            cutoff, timeout = None, settings.first_run_timeout
        else:
            cutoff = settings.slow_factor * self.best
            timeout = max(settings.min_run_timeout, 10 * cutoff)
        m = self.measure(library, cutoff, timeout, protocol or settings.protocol)
        result = _result(key, m, artifact.seconds)
        if result.ok and genome is not None and (self.best is None or result.time < self.best):
            self.best = result.time
        return result

    def library(self, genome: Genome) -> Path:
        """The linked library of ``genome``, built now if this evaluator has not
        built it (a candidate known from the records); raises ``BuildFailure``."""
        if genome.key not in self.libraries:
            self.libraries[genome.key] = self.context.link(
                build(self.context.operator, self.context.space, genome, self.context.target))
        return self.libraries[genome.key]

    def retime(self, genomes: list[Genome], rounds: int = 3) -> dict[str, Result]:
        """Time candidates again, side by side (interleaved rounds), so that a lucky
        sample does not pick the winner; returns the combined result per genome key
        (median over every round's samples)."""
        samples: dict[str, list[float]] = {g.key: [] for g in genomes}
        failed: dict[str, Result] = {}
        timeout = max(self.context.settings.min_run_timeout, 200 * (self.best or 1.0))
        for _ in range(rounds):
            for genome in genomes:
                key = genome.key
                if key in failed:
                    continue
                try:
                    library = self.library(genome)
                except (BuildFailure, EvokernelError) as error:
                    failed[key] = Result(key, Outcome.COMPILE_ERROR, message=str(error))
                    continue
                m = self.measure(library, None, timeout)
                if m.outcome is Outcome.OK:
                    samples[key] += m.times
                else:
                    failed[key] = _result(key, m, 0.0)
        out = {k: _result(k, Measurement(Outcome.OK, tuple(v)), 0.0) for k, v in samples.items() if v}
        return {**out, **failed}

    def close(self) -> None:
        """Release workers; the evaluator may be prepared again afterwards."""


def _result(key: str, m: Measurement, build_seconds: float) -> Result:
    if m.outcome is not Outcome.OK:
        return Result(key, m.outcome, max_error=m.max_error, message=m.message, build_seconds=build_seconds)
    times = np.asarray(m.times)
    median = float(np.median(times))
    q75, q25 = np.percentile(times, [75, 25])
    return Result(key, Outcome.OK, median, float((q75 - q25) / median) if median > 0 else 0.0,
                  len(times), m.max_error, m.message, build_seconds)


class LocalEvaluator(Evaluator):
    """Build here; check and time in a killable worker process."""

    def __init__(self) -> None:
        super().__init__()
        self._runner: Runner | None = None

    def prepare(self, context: Context) -> None:
        self.close()
        super().prepare(context)
        self._runner = Runner(context.task())

    def measure(self, library, cutoff, timeout, protocol=None):
        return self._runner.measure(library, FUNCTION, protocol or self.context.settings.protocol,
                                    cutoff, timeout)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


class InlineEvaluator(Evaluator):
    """Everything in this process (no isolation): for debugging."""

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        self._task = context.task()
        self._runtime = _native.load_runtime(context.runtime, context.threads)

    def measure(self, library, cutoff, timeout, protocol=None):
        kernel = _native.NativeKernel(library, FUNCTION, self._runtime, self._task.shapes, self._task.dtypes)
        return run_one(kernel, self._task, protocol or self.context.settings.protocol, cutoff)


_EVALUATORS = {"local": LocalEvaluator, "inline": InlineEvaluator}


def create_evaluator(kind: "str | Evaluator") -> Evaluator:
    """``"local"`` or ``"inline"`` (or an ``Evaluator`` instance, returned as is)."""
    if isinstance(kind, Evaluator):
        return kind
    if kind not in _EVALUATORS:
        raise ValueError(f"unknown evaluator {kind!r}: choose one of {sorted(_EVALUATORS)} or pass an Evaluator")
    return _EVALUATORS[kind]()


def default_threads() -> int:
    """Halide's thread pool size: every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
