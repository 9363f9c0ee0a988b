"""``"ga+model"``: the genetic algorithm with a cost model that screens its offspring.

Each generation breeds ``screen`` times more offspring than it evaluates; the
model, trained on every recorded evaluation of the family on this target and on
this run's results as they arrive, ranks them, and the search evaluates the best
ranked plus a share drawn at random (``explore``), so the model keeps learning
where it is wrong. The first generation is the GA's (seeds, templates, random
genomes), with the random part screened from a larger pool that also holds the
best schedules recorded for other shapes of the family, carried over
(transfer). With too few measurements the model is off and the search is the
plain GA, draw for draw.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Sequence

from ..evaluators import Result
from ..genome import Genome, ScheduleSpace, repair
from ..operators import Operator
from ._experience import Experience
from ._features import operator_of
from ._ga import GeneticSearch
from ._model import CostModel, GradientBoostingModel, Measured, require_lightgbm
from ._settings import SearchSettings
from ._strategy import register_strategy

log = logging.getLogger("evokernel")

#: The most measurements a model is fitted on (this operator's first, then the most recent).
MAX_SAMPLES = 4000


@register_strategy("ga+model")
class ModelGuidedSearch(GeneticSearch):
    """The GA, its offspring screened by a cost model (``GradientBoostingModel``
    unless ``model`` is given): ``screen`` candidates bred per one evaluated, a
    share ``explore`` of each generation drawn at random from the screened-out
    ones, the model on from ``min_samples`` measurements (of the family, with at
    least ``min_samples // 2`` correct ones), ``transfer`` best recorded schedules
    of each other operator of the family offered to the first generation.

    >>> import evokernel as ek
    >>> kernel = ek.tune(ek.operators.relu(64), budget=4, seed=0, evaluator="local", strategy="ga+model")
    >>> len(kernel.stats.history)
    4
    """

    def __init__(self, settings: SearchSettings | None = None, model: CostModel | None = None, *,
                 screen: int = 8, explore: float = 0.25, min_samples: int = 32, transfer: int = 2):
        super().__init__(settings or SearchSettings(strategy="ga+model"))
        if model is None:
            require_lightgbm()
        self._given_model = model
        self.model: CostModel | None = model
        self.screen, self.explore, self.min_samples, self.transfer = screen, explore, min_samples, transfer
        self._experience: Experience | None = None
        #: Seconds spent refitting the model, and breeding and ranking a screened
        #: generation, one entry each time since this object was made (what the
        #: model costs the search).
        self.fit_seconds: list[float] = []
        self.screen_seconds: list[float] = []

    def learn_from(self, experience: Experience) -> None:
        self._experience = experience

    def start(self, space, rng, seeds=()):
        super().start(space, rng, seeds)
        self.model = self._given_model or GradientBoostingModel()
        self._operator: Operator | None = self._experience.operator if self._experience else None
        self._measured: dict[tuple[str, str], Measured] = {}
        self._recorded_here: set[str] = set()  # genomes of this operator measured before this run
        self._foreign: list[Measured] = []
        self._predicted: dict[str, float] = {}
        self._fitted_on = 0
        self._ready = False
        if self._operator is not None:
            self._load_past(space)
            self._fit()

    # -- the GA's generations, screened -----------------------------------------------------
    def ask(self) -> list[Genome]:
        if self._population is None or not self._population or not self._ready:
            return super().ask()
        began = time.perf_counter()
        lam = self.settings.lambda_
        pool = self._breed(self.screen * lam, self._seen | self._recorded_here)
        chosen = self._choose(pool, lam)
        self._seen.update(g.key for g in chosen)
        self.screen_seconds.append(time.perf_counter() - began)
        return chosen

    def _immigrants(self, count: int, seen: set[str]) -> list[Genome]:
        if not self._ready:
            return super()._immigrants(count, seen)
        began = time.perf_counter()
        count = max(count, self.settings.mu // 2)
        pool_seen = seen | self._recorded_here
        pool = self._transferred(pool_seen)
        pool += super()._immigrants(max(0, self.screen * count - len(pool)), pool_seen)
        chosen = self._choose(pool, count)
        seen.update(g.key for g in chosen)
        self.screen_seconds.append(time.perf_counter() - began)
        return chosen

    def _choose(self, pool: list[Genome], count: int) -> list[Genome]:
        """The ``count`` genomes of ``pool`` to evaluate: the best predicted, then
        a random share of the rest; their predictions are kept."""
        if not pool:
            return []
        try:
            predicted = self.model.predict(self._operator, self.space, pool)
        except Exception as error:  # noqa: BLE001 - a model that fails leaves the plain GA running
            log.warning("the cost model failed (%s); the search goes on without it", error)
            self._ready = False
            return pool[:count]
        order = sorted(range(len(pool)), key=lambda i: predicted[i])
        explore = min(len(pool) - min(count, len(pool)), round(self.explore * count))
        best = order[:count - explore]
        rest = order[count - explore:]
        picked = best + self.rng.sample(rest, explore)
        for i in picked:
            self._predicted[pool[i].key] = float(predicted[i])
        return [pool[i] for i in picked]

    def tell(self, genomes: Sequence[Genome], results: Sequence[Result]) -> None:
        super().tell(genomes, results)
        if self._operator is None:
            return
        for genome, result in zip(genomes, results):
            self._add(Measured(self._operator, self.space, genome, result.time if result.ok else None))
        self._fit()

    def prediction(self, genome: Genome) -> float | None:
        return self._predicted.get(genome.key)

    # -- what the model learns from ------------------------------------------------------------
    def _add(self, measured: Measured) -> None:
        self._measured[(measured.operator.key, measured.genome.key)] = measured

    def _fit(self) -> None:
        samples = list(self._measured.values())
        if len(samples) > MAX_SAMPLES:  # this operator's, then the most recent of the others
            mine = [m for m in samples if m.operator.key == self._operator.key][-MAX_SAMPLES:]
            others = [m for m in samples if m.operator.key != self._operator.key]
            samples = others[len(others) - (MAX_SAMPLES - len(mine)):] + mine if len(mine) < MAX_SAMPLES else mine
        correct = sum(m.time is not None for m in samples)
        if len(samples) < self.min_samples or correct < self.min_samples // 2 or len(samples) == self._fitted_on:
            return
        began = time.perf_counter()
        self.model.fit(samples)
        self.fit_seconds.append(time.perf_counter() - began)
        self._fitted_on, self._ready = len(samples), True

    def _load_past(self, space: ScheduleSpace) -> None:
        """Every usable past evaluation of the family on this target: a row whose
        operator is of another family or does not rebuild from its key, whose
        genome does not fit its operator's space, or that is damaged, is passed over."""
        operators: dict[str, tuple[Operator, ScheduleSpace] | None] = {self._operator.key: (self._operator, space)}
        skipped = 0
        try:
            for evaluation in self._experience.past():
                measured = self._usable(evaluation, operators, space)
                if measured is None:
                    skipped += 1
                    continue
                self._add(measured)
                if measured.operator.key == self._operator.key:
                    self._recorded_here.add(measured.genome.key)
                else:
                    self._foreign.append(measured)
        except Exception as error:  # noqa: BLE001 - a damaged store must not stop the search
            log.warning("the cost model reads no further past evaluations: %s", error)
        if skipped:
            log.info("the cost model passed over %d unusable past evaluations", skipped)

    def _usable(self, evaluation, operators: dict, space: ScheduleSpace) -> Measured | None:
        try:
            key, genome, result = evaluation.operator, evaluation.genome, evaluation.result
            if not isinstance(key, str) or not isinstance(genome, Genome) or not isinstance(result, Result):
                return None
            if key not in operators:
                op = operator_of(key)
                operators[key] = None if op is None or op.family != self._operator.family else (
                    op, ScheduleSpace.of(op, self._experience.target, space.threads))
            found = operators[key]
            if found is None:
                return None
            op, op_space = found
            if len(genome.stages) != len(op_space.stages):
                return None
            good = result.ok and isinstance(result.time, (int, float)) and result.time > 0 and \
                math.isfinite(result.time)
            if result.ok and not good:
                return None
            return Measured(op, op_space, genome, float(result.time) if good else None)
        except Exception:  # noqa: BLE001 - any row that does not read is passed over
            return None

    def _transferred(self, seen: set[str]) -> list[Genome]:
        """The best ``transfer`` recorded genomes of each other operator of the
        family, repaired for this space, not in ``seen``."""
        best: dict[str, list[Measured]] = {}
        for m in self._foreign:
            if m.time is not None and len(m.genome.stages) == len(self.space.stages):
                best.setdefault(m.operator.key, []).append(m)
        out = []
        for group in best.values():
            for m in sorted(group, key=lambda m: m.time)[:self.transfer]:
                try:
                    genome = repair(self.space, m.genome)
                except Exception:  # noqa: BLE001 - a schedule that does not carry over is left behind
                    continue
                if genome.key not in seen:
                    seen.add(genome.key)
                    out.append(genome)
        return out
