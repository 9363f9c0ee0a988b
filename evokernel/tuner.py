"""``tune()``: evolve a schedule for one operator and return the winning Kernel.

The records come first: an operator already tuned here (same target, machine and
Halide version) with at least this budget returns its cached kernel at once; an
interrupted or shorter earlier run is resumed, its evaluations reused, never redone.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections import Counter
from typing import Sequence

from ._progress import Tracker, display_for
from .codegen import cache_dir as resolve_cache_dir
from .codegen import default_threads
from .errors import TuningError
from .evaluators import CHECK_ONLY, Context, Evaluator, Result, create_evaluator
from .genome import Genome, ScheduleSpace, unscheduled
from .operators import Operator
from .search import Budget, BudgetClock, SearchSettings, SearchStrategy, create_strategy, run_search
from .store import Kernel, KernelMeta, Record, Records, TuningStats, cached_entry, from_entry, open_records, store
from .target import Target

log = logging.getLogger("evokernel")

#: Candidates timed again side by side before the winner is chosen.
FINALISTS = 3
#: The best recorded genomes a resumed search starts from.
SEEDS = 16


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
    if not isinstance(operator, Operator):
        raise TypeError(f"tune() needs an operator such as ek.operators.matmul(...), got {type(operator).__name__}")
    target = Target.parse(target)
    budget = Budget.parse(budget)
    search = create_strategy(strategy)
    display = display_for(progress, operator.key)
    root = resolve_cache_dir(cache_dir)
    threads = threads or default_threads()
    if not retune:
        entry = cached_entry(root, operator, target)
        if entry is not None and not budget.exceeds(entry.meta.budget):
            log.info("%s: cached kernel (tuned with budget %s)", operator.key, entry.meta.budget)
            return from_entry(root, operator, entry, threads)
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    ev = create_evaluator(evaluator)
    ev.check_target(target)  # a TargetError naming the ways out when no runner can execute it
    space = ScheduleSpace.of(operator, target, threads)
    context = Context(operator, target, space, threads, root, seed)
    db = open_records(records, root)
    tracker = Tracker(operator.key, budget, display)
    log.info("tuning %s on %s, budget %s, seed %d", operator.key, target.string, budget, seed)
    try:
        ev.prepare(context)
        baseline = ev.evaluate_one(unscheduled(space), CHECK_ONLY)
        tracker.baseline = baseline.time if baseline.ok else None
        clock = budget.clock()  # the budget is the search's: starting Ray and the baseline come first
        tracker.start = clock.start
        history = _search(operator, target, space, ev, db, clock, seed, search, resume=not retune, tracker=tracker)
        winner, result = _choose(ev, history)
        artifact = ev.artifact(winner)
    finally:
        tracker.close()
        ev.close()
        if db is not records:  # opened here by name; a store passed in stays open
            db.close()
    stats = TuningStats(
        time=result.time, spread=result.spread or 0.0, baseline=baseline.time if baseline.ok else None,
        history=tuple(_best_so_far(history)), history_seconds=tuple(tracker.stamps[g.key] for g, _ in history),
        outcomes=dict(Counter(r.outcome.value for _, r in history)),
        elapsed=clock.elapsed(), budget=str(budget), seed=seed)
    log.info("%s: best %.4g ms after %d evaluations in %.1f s", operator.key, result.time * 1e3, len(history),
             stats.elapsed)
    meta = KernelMeta.new(operator, target, winner, artifact.schedule, stats, budget)
    return store(root, meta, artifact.object_bytes, operator, threads)


def _search(operator: Operator, target: Target, space: ScheduleSpace, ev: Evaluator, records: Records,
            clock: BudgetClock, seed: int, strategy: SearchStrategy, resume: bool,
            tracker: Tracker) -> list[tuple[Genome, Result]]:
    """Run the search, recording every new result and telling ``tracker``; with
    ``resume``, reuse the trusted records (their genomes are neither rebuilt nor re-timed)."""
    known: dict[str, tuple[Genome, Result]] = {}
    if resume:
        known = {r.genome.key: (r.genome, r.result) for r in records.trusted(operator.key, target.string)}
    run_id = uuid.uuid4().hex
    if known:
        log.info("%s: resuming from %d recorded evaluations", operator.key, len(known))

    def record(genome: Genome, result: Result) -> None:
        records.add(Record.new(operator.key, target.string, genome, result, run_id))
        known[genome.key] = (genome, result)
        tracker.add(genome.key, result)

    def evaluate(genomes: Sequence[Genome], deadline: float | None) -> list[Result]:
        new = [g for g in genomes if g.key not in known]
        ev.evaluate(new, deadline, on_result=record)
        out = []
        for genome in genomes:  # a prefix: stops where the deadline cut the new ones short
            if genome.key not in known:
                break
            out.append(known[genome.key][1])
            tracker.add(genome.key, out[-1])  # reused records count once they are used
        return out

    best_known = sorted((gr for gr in known.values() if gr[1].ok), key=lambda gr: gr[1].time)
    seeds = [g for g, _ in best_known[:SEEDS]]
    return run_search(strategy, space, evaluate, clock, random.Random(seed), seeds=seeds)


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

