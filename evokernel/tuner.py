"""``tune()``: evolve a schedule for one operator and return the winning Kernel."""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter

from .errors import TargetError, TuningError
from .evaluators import FUNCTION, Context, Evaluator, Protocol, Settings, create_evaluator, default_threads
from .genome import Genome, ScheduleSpace
from .operators import Operator
from .runtime import _paths
from .runtime._kernel import Kernel, TuningStats
from .search import Budget, SearchSettings, evolve
from .target import Target

log = logging.getLogger("evokernel")

#: Candidates timed again side by side before the winner is chosen.
FINALISTS = 3
_BASELINE = Protocol(warmup=0, min_calls=1, max_calls=1, min_time=0.0)


def tune(operator: Operator, target: "str | Target" = "host", budget="60s", seed: int | None = None, *,
         evaluator: "str | Evaluator" = "local", search: SearchSettings | None = None,
         settings: Settings | None = None, threads: int | None = None, cache_dir=None) -> Kernel:
    """Evolve a fast schedule for ``operator`` on ``target`` within ``budget``.

    ``budget`` is a duration (``"60s"``, ``"2m"``), a number of evaluations (``100``)
    or a ``Budget``; ``seed`` makes the search reproducible. ``evaluator`` is
    ``"local"`` (default: kernels run in a killable worker process) or ``"inline"``.

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
    if not target.runs_here():
        raise TargetError(f"target {target.string!r} cannot run on this machine "
                          f"({Target.parse('host').string}); tune for 'host' or a subset of its features")
    clock = Budget.parse(budget).clock()
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    threads = threads or default_threads()
    space = ScheduleSpace.from_algorithm(operator.algorithm(), target.natural_vector_size(operator.dtype), threads)
    context = Context(operator, target, space, threads, _paths.cache_dir(cache_dir), seed, settings or Settings())
    ev = create_evaluator(evaluator)
    ev.prepare(context)
    try:
        baseline = ev.evaluate_one(None, _BASELINE)
        log.info("%s: unscheduled %s", operator.key, f"{baseline.time * 1e3:.3g} ms" if baseline.ok else baseline.outcome)
        history = evolve(space, lambda genomes, deadline: ev.evaluate(genomes, deadline), clock,
                         random.Random(seed), search or SearchSettings())
        winner, result = _choose(ev, history)
    finally:
        ev.close()
    stats = TuningStats(
        time=result.time, spread=result.spread or 0.0, baseline=baseline.time if baseline.ok else None,
        history=tuple(_best_so_far(history)), outcomes=dict(Counter(r.outcome.value for _, r in history)),
        elapsed=clock.elapsed(), budget=_budget_text(clock.budget), seed=seed)
    from .genome import schedule_code

    return Kernel(operator, target, winner, schedule_code(winner, operator.algorithm(), space),
                  ev.libraries[winner.key], context.runtime, threads, stats, FUNCTION)


def _choose(ev: Evaluator, history: list) -> tuple[Genome, object]:
    ok = sorted(((g, r) for g, r in history if r.ok), key=lambda gr: gr[1].time)
    if not ok:
        kinds = Counter(r.outcome.value for _, r in history)
        example = next((r.message for _, r in history if r.message), "")
        raise TuningError(f"no correct candidate among {len(history)} evaluations ({dict(kinds)}); e.g. {example}")
    finalists = {g.key: g for g, _ in ok[:FINALISTS]}
    retimed = {k: r for k, r in ev.retime(list(finalists)).items() if r.ok}
    if not retimed:
        return ok[0]
    key = min(retimed, key=lambda k: retimed[k].time)
    return finalists[key], retimed[key]


def _best_so_far(history: list) -> list[float]:
    best, out = float("inf"), []
    for _, r in history:
        if r.ok:
            best = min(best, r.time)
        out.append(best)
    return out


def _budget_text(budget: Budget) -> str:
    parts = []
    if budget.seconds is not None:
        parts.append(f"{budget.seconds:g}s")
    if budget.evaluations is not None:
        parts.append(f"{budget.evaluations} evaluations")
    return " or ".join(parts)
