"""``Evaluator``: a ``Builder`` and a ``Runner`` turned into measured results.

Builds and timings alternate batch by batch (``parallelism * batch_per_slot``
builds, then their kernels timed one at a time), so no build runs while a kernel
is timed. The run timeout follows the best time so far, plus what a measurement of
this operator costs around its kernel (a 10000×10000 output takes about a second to
allocate and check); the fastest artifacts are kept in memory for retiming and for
the winner.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import numpy as np

from ..codegen import Artifact
from ..errors import BuildError, EvokernelError
from ..genome import Genome
from ..target import Target
from ._activity import Activity
from ._builder import Builder, LocalBuilder
from ._context import Context, Settings
from ._protocol import Measurement, Protocol
from ._result import Outcome, Result
from ._runner import InlineRunner, LocalRunner, Runner


class Evaluator:
    """Builds, checks and times genomes for one ``Context`` at a time, with
    ``builder`` and ``runner``; ``settings`` are the measurement settings.

    >>> import evokernel as ek
    >>> ev = ek.evaluators.Evaluator(ek.evaluators.LocalBuilder(), ek.evaluators.LocalRunner())
    >>> kernel = ek.tune(ek.operators.relu(64), budget=2, seed=0, evaluator=ev)
    >>> kernel.stats.outcomes.get("ok", 0) >= 1
    True
    """

    #: Artifacts of the fastest candidates kept in memory (for retiming and the
    #: winner); any other is rebuilt on request, so a long search stays small.
    keep: int = 3
    #: Contexts whose kept artifacts outlive a ``prepare`` for another one.
    contexts_kept: int = 64

    def __init__(self, builder: Builder, runner: Runner, settings: Settings | None = None):
        if not isinstance(builder, Builder) or not isinstance(runner, Runner):
            raise TypeError(f"Evaluator(builder, runner) takes an ek.evaluators.Builder and Runner, got "
                            f"{type(builder).__name__} and {type(runner).__name__}")
        self.builder, self.runner, self.settings = builder, runner, settings or Settings()
        self.context: Context | None = None
        self.best: float | None = None
        self._fastest: dict[str, tuple[float, Artifact]] = {}
        self.activity = Activity()  # registered while evaluating: another evaluation on the machine sees it
        self._kept: dict[int, tuple[Context, dict]] = {}  # the fastest artifacts of every context prepared

    def check_target(self, target: Target) -> None:
        """Raise ``TargetError`` unless the runner can execute ``target``."""
        self.runner.check_target(target)

    def prepare(self, context: Context) -> None:
        """Get the builder and the runner ready for ``context``. The artifacts kept
        for a context prepared before are kept again, so that a scheduler going
        back and forth between operators rebuilds none of their finalists."""
        self.context, self.best, self.overhead = context, None, 0.0
        self._fastest = self._kept.setdefault(id(context), (context, {}))[1]
        while len(self._kept) > self.contexts_kept:
            del self._kept[next(iter(self._kept))]
        self.builder.prepare(context)
        self.runner.prepare(context)

    def evaluate(self, genomes: Iterable[Genome], deadline: float | None = None,
                 on_result: Callable[[Genome, Result], None] | None = None) -> list[Result]:
        """Evaluate genomes in order, stopping early once ``deadline`` (a
        ``time.monotonic()`` value) has passed; ``on_result`` sees each result as
        soon as it exists (the records write it there)."""
        genomes, results = list(genomes), []
        step = max(1, self.builder.parallelism * self.builder.batch_per_slot)
        with self.activity:
            for start in range(0, len(genomes), step):
                chunk = genomes[start:start + step]
                for genome, built in zip(chunk, self.builder.build(chunk)):
                    if deadline is not None and results and time.monotonic() > deadline:
                        return results
                    results.append(self._timed(genome, built, None))
                    if on_result is not None:
                        on_result(genome, results[-1])
        return results

    def evaluate_one(self, genome: Genome, protocol: Protocol | None = None) -> Result:
        """Build and time one genome (as ``protocol`` says, else as the settings say)."""
        with self.activity:
            return self._timed(genome, self.builder.build([genome])[0], protocol)

    def _timed(self, genome: Genome, built: "Artifact | Result", protocol: Protocol | None) -> Result:
        if isinstance(built, Result):
            return built
        protocol, settings = protocol or self.settings.protocol, self.settings
        if self.best is None:
            timeout = settings.first_run_timeout
        else:
            timeout = max(settings.min_run_timeout, 10 * protocol.slow_factor * self.best)
        measured, contended = self._measure(built, self.best, timeout, protocol)
        result = dataclasses.replace(_result(genome.key, measured, built.seconds), contended=contended)
        if result.ok:
            self._remember(genome.key, result.time, built)
            if self.best is None or result.time < self.best:
                self.best = result.time
        return result

    def _measure(self, artifact: Artifact, best: float | None, seconds: float,
                 protocol: Protocol) -> tuple[Measurement, bool]:
        """Measure with a run timeout of ``seconds`` for the kernel's calls, plus the
        measurement's own cost (``overhead_factor`` times the largest seen in this run)
        and, on a GPU target, the driver's compile time; and say whether another
        evaluation ran on the machine at its start or its end."""
        seconds += self.settings.overhead_factor * self.overhead
        others = self.activity.others()
        measured = self.runner.measure(artifact, best, self._run_timeout(seconds), protocol)
        contended = bool(others or self.activity.others())
        self.overhead = max(self.overhead, measured.overhead)
        return measured, contended

    def _run_timeout(self, seconds: float) -> float:
        """``seconds``, plus the driver's compile time on a GPU target."""
        return seconds + (self.settings.jit_allowance if self.context.target.is_gpu else 0.0)

    def _remember(self, key: str, seconds: float, artifact: Artifact) -> None:
        self._fastest[key] = (seconds, artifact)
        if len(self._fastest) > self.keep:
            del self._fastest[max(self._fastest, key=lambda k: self._fastest[k][0])]

    def artifact(self, genome: Genome) -> Artifact:
        """The artifact of ``genome``: kept from the search if it was among the
        fastest, else built now (and kept); raises ``BuildError``."""
        if genome.key not in self._fastest:
            built = self.builder.build([genome])[0]
            if isinstance(built, Result):
                raise BuildError(built.message)
            self._fastest[genome.key] = (float("-inf"), built)  # asked for by name: never evicted
        return self._fastest[genome.key][1]

    def retime(self, genomes: list[Genome], rounds: int = 3) -> dict[str, Result]:
        """Time candidates again, side by side (interleaved rounds), so that a lucky
        sample does not pick the winner; returns the combined result per genome key
        (median over every round's samples, on its slowest placement: placements
        the search did not use)."""
        samples: dict[str, list[float]] = {g.key: [] for g in genomes}
        places: dict[str, list[int]] = {g.key: [] for g in genomes}
        failed: dict[str, Result] = {}
        contended: set[str] = set()
        protocol = self.settings.protocol
        protocol = dataclasses.replace(protocol, placement_seed=protocol.placement_seed + 1)
        timeout = max(self.settings.min_run_timeout, 200 * (self.best or 1.0))
        with self.activity:
            for _ in range(rounds):
                for genome in genomes:
                    key = genome.key
                    if key in failed:
                        continue
                    try:
                        artifact = self.artifact(genome)
                    except EvokernelError as error:
                        failed[key] = Result(key, Outcome.COMPILE_ERROR, message=str(error))
                        continue
                    m, shared = self._measure(artifact, None, timeout, protocol)
                    if shared:
                        contended.add(key)
                    if m.outcome is Outcome.OK:
                        samples[key] += m.times
                        places[key] += m.placements or [0] * len(m.times)
                    else:
                        failed[key] = _result(key, m, 0.0)
        out = {k: _result(k, Measurement(Outcome.OK, tuple(v), placements=tuple(places[k])), 0.0)
               for k, v in samples.items() if v}
        return {k: dataclasses.replace(r, contended=k in contended) for k, r in {**out, **failed}.items()}

    def close(self) -> None:
        """Release the builder's and the runner's workers; the evaluator may be
        prepared again afterwards."""
        self.builder.close()
        self.runner.close()


def _result(key: str, m: Measurement, build_seconds: float) -> Result:
    if m.outcome is not Outcome.OK:
        return Result(key, m.outcome, max_error=m.max_error, message=m.message, build_seconds=build_seconds)
    times = np.asarray(m.times)
    median = m.time()
    q75, q25 = np.percentile(times, [75, 25])
    return Result(key, Outcome.OK, median, float((q75 - q25) / median) if median > 0 else 0.0,
                  len(times), m.max_error, m.message, build_seconds)


class LocalEvaluator(Evaluator):
    """No Ray: builds in this process; checks and times in a killable worker process."""

    def __init__(self, settings: Settings | None = None):
        super().__init__(LocalBuilder(), LocalRunner(), settings)


class InlineEvaluator(Evaluator):
    """Everything in this process (no isolation): for debugging."""

    def __init__(self, settings: Settings | None = None):
        super().__init__(LocalBuilder(), InlineRunner(), settings)
