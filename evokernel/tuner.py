"""``tune()``: evolve a schedule for one operator and return the winning Kernel.

The records come first: an operator already tuned here (same target, machine and
Halide version) with at least this budget returns its cached kernel at once; an
interrupted or shorter earlier run is resumed, its evaluations reused, never redone;
a new operator starts from the best genomes of other shapes of its family.
``OperatorTuning`` is the same run cut into slices, for a scheduler (``tune_model``)
that shares one budget among many operators.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections import Counter
from typing import Sequence

from ._arguments import check_tune_arguments
from ._progress import Tracker, display_for
from .codegen import cache_dir as resolve_cache_dir
from .codegen import default_threads
from .errors import TuningError
from .evaluators import CHECK_ONLY, Context, Evaluator, Result, create_evaluator
from .genome import Genome, ScheduleSpace, repair, unscheduled
from .operators import Operator
from .search import Budget, Experience, SearchSettings, SearchStrategy, create_strategy, rank_correlation, run_search
from .store import Kernel, KernelMeta, Record, Records, TuningStats, cached_entry, from_entry, open_records, store
from .target import Target

log = logging.getLogger("evokernel")

#: Candidates timed again side by side before the winner is chosen.
FINALISTS = 3
#: The best recorded genomes a resumed search starts from.
SEEDS = 16
#: Genomes of other operators of the family a new operator starts from.
WARM_START = 8


def tune(operator: Operator, target: "str | Target" = "host", budget="60s", seed: int | None = None, *,
         retune: bool = False, evaluator: "str | Evaluator" = "ray",
         strategy: "str | SearchSettings | SearchStrategy" = "ga", records: "str | Records" = "sqlite",
         threads: int | None = None, cache_dir=None, progress=None) -> Kernel:
    """Evolve a fast schedule for ``operator`` on ``target`` within ``budget``.

    ``budget`` (the search's: starting the evaluator and timing the unscheduled
    baseline come first) is a duration (``"60s"``, ``"2m"``), a number of evaluations (``100``)
    or a ``Budget``; ``seed`` makes the search reproducible. A kernel already tuned
    here with at least this budget is returned from the cache; a larger budget tunes
    on from the recorded evaluations; ``retune=True`` searches afresh.
    ``evaluator`` is ``"ray"`` (default: parallel builds on the local Ray instance,
    started on first use, or on ``$RAY_ADDRESS``), ``"local"`` (no Ray: builds here,
    kernels timed in a killable worker process), ``"inline"`` (debugging) or an
    ``Evaluator`` (any ``Builder`` and ``Runner``). ``strategy`` is ``"ga"`` (default),
    ``"random"``, an ``ek.SearchSettings`` or any ``ek.search.SearchStrategy`` object.
    ``records`` is where evaluations are kept: ``"sqlite"`` (the cache directory's
    database, default), ``"memory"`` or an ``ek.store.Records``. ``cache_dir``
    overrides ``$EVOKERNEL_CACHE_DIR``. ``progress``: ``None`` (a live bar when stderr
    is a terminal), ``True``, ``False`` or a callable given an ``ek.TuningProgress``
    after each evaluation.

    >>> import numpy as np, evokernel as ek
    >>> op = ek.operators.matmul(m=64, n=64, k=64)
    >>> kernel = ek.tune(op, budget=6, seed=0)
    >>> a, b = np.ones((64, 64), np.float32), np.ones((64, 64), np.float32)
    >>> float(kernel(a, b)[0, 0])
    64.0
    """
    check_tune_arguments(operator, seed=seed, retune=retune, evaluator=evaluator, records=records, threads=threads,
                         progress=progress)
    if not isinstance(operator, Operator):
        raise TypeError(f"tune() needs an operator such as ek.operators.matmul(...), got {type(operator).__name__}")
    target = Target.parse(target)
    budget = Budget.parse(budget)
    search = create_strategy(strategy)
    display = display_for(progress, operator.key)
    root = resolve_cache_dir(cache_dir)
    threads = threads or default_threads()
    if not retune:
        cached = cached_kernel(operator, target, budget, root, threads)
        if cached is not None:
            return cached
    ev = create_evaluator(evaluator)
    ev.check_target(target)  # a TargetError naming the ways out when no runner can execute it
    db = open_records(records, root)
    job = OperatorTuning(operator, target, ev, db, root, search=search, seed=seed, threads=threads,
                         resume=not retune, warm_start=family_genomes(db, operator, target), display=display)
    try:
        job.advance(budget)
        return job.finish()
    finally:
        job.close()
        ev.close()
        if db is not records:  # opened here by name; a store passed in stays open
            db.close()


def cached_kernel(operator: Operator, target: Target, budget: Budget, root, threads: int) -> Kernel | None:
    """The cached kernel of ``operator`` if it was tuned with at least ``budget``."""
    entry = cached_entry(root, operator, target)
    if entry is None or budget.exceeds(entry.meta.budget):
        return None
    log.info("%s: cached kernel (tuned with budget %s)", operator.key, entry.meta.budget)
    return from_entry(root, operator, entry, threads)


class OperatorTuning:
    """One operator's search, run in slices (``advance``) on a shared evaluator and
    ended by ``finish`` (the finalists retimed side by side, the winner stored).

    Every slice starts from the best genomes known so far (recorded ones when
    ``resume``; else ``warm_start``, genomes of other operators of the family,
    repaired to this one's space), so no finished candidate is ever evaluated twice.

    >>> import evokernel as ek
    >>> ev = ek.evaluators.create_evaluator("local")
    >>> job = OperatorTuning(ek.operators.relu(256), ek.Target.parse("host"), ev, ek.store.MemoryRecords(),
    ...                      ek.codegen.cache_dir(), seed=0)
    >>> job.advance(ek.Budget(evaluations=3)); job.advance(ek.Budget(evaluations=3))
    >>> job.evaluations, job.finish().stats.outcomes.get("ok", 0) >= 1
    (6, True)
    >>> job.close(); ev.close()
    """

    def __init__(self, operator: Operator, target: Target, evaluator: Evaluator, records: Records, root, *,
                 search: SearchStrategy | None = None, seed: int | None = None, threads: int | None = None,
                 resume: bool = True, warm_start: Sequence[Genome] = (), display=None):
        self.operator, self.target, self.evaluator, self.records = operator, target, evaluator, records
        self.root, self.threads = root, threads or default_threads()
        self.search = search or create_strategy("ga")
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        self.space = ScheduleSpace.of(operator, target, self.threads)
        self.context = Context(operator, target, self.space, self.threads, root, self.seed)
        self.known: dict[str, tuple[Genome, Result]] = {}
        if resume:
            self.known = {r.genome.key: (r.genome, r.result) for r in records.trusted(operator.key, target.string)}
            if self.known:
                log.info("%s: resuming from %d recorded evaluations", operator.key, len(self.known))
        self.warm_start = [g for g in (adapt(self.space, g) for g in warm_start) if g is not None]
        self.history: list[tuple[Genome, Result]] = []  # this run's, in order, each genome once
        self.predicted: dict[str, float] = {}  # genome key -> seconds the search's cost model predicted
        self.baseline: Result | None = None
        self.seconds, self.slices, self._budget = 0.0, 0, None
        self._clock, self._used = None, set()
        self._run_id = uuid.uuid4().hex
        self.tracker = Tracker(operator.key, Budget(evaluations=1), display)

    @property
    def evaluations(self) -> int:
        """Evaluations this run has used (recorded ones it reused included)."""
        return len(self.history)

    @property
    def best(self) -> float | None:
        """The best time (seconds) this run has seen, or None."""
        times = [r.time for _, r in self.history if r.ok]
        return min(times) if times else None

    def advance(self, budget: Budget) -> None:
        """Search on for one more ``budget``."""
        self._ready()
        clock = budget.clock()
        # the tracker's clock counts this operator's slices only (not the evaluator's start, nor other operators')
        self.tracker.start, self.tracker.budget = clock.start - self.seconds, budget
        log.info("tuning %s on %s, slice %d of %s, seed %d", self.operator.key, self.target.string, self.slices + 1,
                 budget, self.seed)
        rng = random.Random(self.seed if self.slices == 0 else f"{self.seed}:{self.slices}")  # tune(): one slice
        self._clock, self._used = clock, {g.key for g, _ in self.history}
        past = lambda: self.records.trusted_family(self.operator.family, self.target.string)  # noqa: E731
        found = run_search(self.search, self.space, self._evaluate, clock, rng, seeds=self._seeds(),
                           experience=Experience(self.operator, self.target, past))
        self.history += [(g, r) for g, r in found if g.key not in self._used and not self._used.add(g.key)]
        self.seconds += clock.elapsed()
        self.slices += 1
        self._budget = budget if self._budget is None else _sum(self._budget, budget, self.seconds)

    def finish(self) -> Kernel:
        """Retime the finalists, store the winner in the cache and return it."""
        self._ready()
        winner, result = _choose(self.evaluator, self.history)
        artifact = self.evaluator.artifact(winner)
        baseline = self.baseline.time if self.baseline.ok else None
        history = self.history
        scored = [(self.predicted[g.key], r.time) for g, r in history if r.ok and g.key in self.predicted]
        stats = TuningStats(
            time=result.time, spread=result.spread or 0.0, baseline=baseline,
            history=tuple(_best_so_far(history)), history_seconds=tuple(self.tracker.stamps[g.key] for g, _ in history),
            outcomes=dict(Counter(r.outcome.value for _, r in history)),
            elapsed=self.seconds, budget=str(self._budget), seed=self.seed,
            rank_correlation=rank_correlation(scored), predicted=len(scored))
        log.info("%s: best %.4g ms after %d evaluations in %.1f s", self.operator.key, result.time * 1e3,
                 len(history), stats.elapsed)
        meta = KernelMeta.new(self.operator, self.target, winner, artifact.schedule, stats, self._budget)
        return store(self.root, meta, artifact.object_bytes, self.operator, self.threads)

    def close(self) -> None:
        """End the progress display."""
        self.tracker.close()

    def _ready(self) -> None:
        """Point the shared evaluator at this operator; time the baseline once."""
        if self.evaluator.context is not self.context:
            self.evaluator.prepare(self.context)
            best = self.best
            self.evaluator.best = best  # the run timeout follows this operator's best, not another's
        if self.baseline is None:
            self.baseline = self.evaluator.evaluate_one(unscheduled(self.space), CHECK_ONLY)
            self.tracker.baseline = self.baseline.time if self.baseline.ok else None

    def _seeds(self) -> list[Genome]:
        best_known = sorted((gr for gr in self.known.values() if gr[1].ok), key=lambda gr: gr[1].time)
        seeds = [g for g, _ in best_known[:SEEDS]]
        return seeds + [g for g in self.warm_start if g.key not in self.known][:max(0, SEEDS - len(seeds))]

    def _record(self, genome: Genome, result: Result) -> None:
        predicted = self.search.prediction(genome)  # a cost model's, recorded beside the measurement
        if predicted is not None:
            self.predicted[genome.key] = predicted
        self.records.add(Record.new(self.operator.key, self.target.string, genome, result, self._run_id,
                                    predicted=predicted))
        self.known[genome.key] = (genome, result)
        self.tracker.add(genome.key, result)

    def _evaluate(self, genomes: Sequence[Genome], deadline: float | None) -> list[Result]:
        new = [g for g in genomes if g.key not in self.known]
        self.evaluator.evaluate(new, deadline, on_result=self._record)
        out = []
        for genome in genomes:  # a prefix: stops where the deadline cut the new ones short
            if genome.key not in self.known:
                break
            out.append(self.known[genome.key][1])
            self.tracker.add(genome.key, out[-1])  # reused records count once they are used
        # a genome an earlier slice of this run already used is free: a slice's evaluations are new to the run
        self._clock.evaluations -= sum(g.key in self._used for g in genomes[:len(out)])
        return out


def adapt(space: ScheduleSpace, genome: Genome) -> Genome | None:
    """``genome`` (found for another operator of the family) repaired to fit
    ``space``; None when its stages do not match."""
    if len(genome.stages) != len(space.stages):
        return None
    try:
        return repair(space, genome)
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def family_genomes(records: Records, operator: Operator, target: Target, limit: int = WARM_START) -> list[Genome]:
    """The best recorded genomes of other operators of ``operator``'s family on
    ``target`` (trusted records), best of each operator first."""
    best: dict[str, list] = {}
    for record in records.trusted_family(operator.family, target.string):
        if record.operator != operator.key and record.result.ok:
            best.setdefault(record.operator, []).append((record.result.time, record.genome))
    ranked = [sorted(found, key=lambda tg: tg[0]) for found in best.values()]
    out, seen = [], set()
    for depth in range(limit):
        for found in ranked:
            if depth < len(found) and found[depth][1].key not in seen and len(out) < limit:
                seen.add(found[depth][1].key)
                out.append(found[depth][1])
    return out


def _sum(a: Budget, b: Budget, seconds: float) -> Budget:
    """Two slices' budgets as one (limits of a kind both have add up); where they
    share none, the ``seconds`` actually spent."""
    def add(x, y):
        return None if x is None or y is None else x + y
    total_seconds, total_evaluations = add(a.seconds, b.seconds), add(a.evaluations, b.evaluations)
    if total_seconds is None and total_evaluations is None:
        return Budget(seconds=seconds)
    return Budget(total_seconds, total_evaluations)


def _choose(ev: Evaluator, history: list) -> tuple[Genome, Result]:
    ok = sorted(((g, r) for g, r in history if r.ok), key=lambda gr: gr[1].time)
    if not ok:
        kinds = Counter(r.outcome.value for _, r in history)
        example = next((r.message for _, r in history if r.message), "")
        raise TuningError(f"no correct candidate among {len(history)} evaluations ({dict(kinds)}); e.g. {example}")
    finalists = [g for g, _ in ok[:FINALISTS]]
    retimed = {k: r for k, r in ev.retime(finalists).items() if r.ok}
    if not retimed:
        return ok[0]
    best = min(finalists, key=lambda g: retimed[g.key].time if g.key in retimed else float("inf"))
    return best, retimed[best.key]


def _best_so_far(history: list) -> list[float]:
    best, out = float("inf"), []
    for _, r in history:
        if r.ok:
            best = min(best, r.time)
        out.append(best)
    return out
