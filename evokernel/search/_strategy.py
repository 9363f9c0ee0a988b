"""``SearchStrategy``: the ask/tell interface every search implements, its registry,
and the loop that runs one against a budget.

Any object that implements ``SearchStrategy`` can drive ``tune(strategy=...)``,
as Kernel Tuner accepts any strategy object; built-in strategies register a name.
"""

from __future__ import annotations

import abc
import random
from typing import Callable, Sequence

from ..evaluators import Result
from ..genome import Genome, ScheduleSpace
from ._budget import BudgetClock
from ._experience import Experience

#: Name -> strategy class (called with a ``SearchSettings``); ``register_strategy`` fills it.
STRATEGIES: dict[str, Callable] = {}

EvaluateBatch = Callable[[Sequence[Genome], "float | None"], list[Result]]


def register_strategy(name: str):
    """Class decorator: make a strategy available as ``tune(strategy=name)``."""
    def register(cls):
        STRATEGIES[name] = cls
        return cls
    return register


class SearchStrategy(abc.ABC):
    """A search over one schedule space, asked for genomes and told their results.

    ``start`` begins a search (``seeds``: the best genomes already recorded, to
    start from); ``ask`` returns the next genomes to evaluate (empty: nothing new is
    left to try); ``tell`` gives the results of the genomes evaluated, in order (a
    prefix of those asked when the budget ran out). Genomes are plain data: a
    strategy may keep whatever it likes between calls.
    """

    def start(self, space: ScheduleSpace, rng: random.Random, seeds: Sequence[Genome] = ()) -> None:
        """Begin a search of ``space``, drawing every random choice from ``rng``."""
        self.space, self.rng, self.seeds = space, rng, list(seeds)

    @abc.abstractmethod
    def ask(self) -> list[Genome]:
        """The next genomes to evaluate."""

    @abc.abstractmethod
    def tell(self, genomes: Sequence[Genome], results: Sequence[Result]) -> None:
        """The results of ``genomes``."""

    def learn_from(self, experience: Experience) -> None:
        """Before ``start``: the operator and target being tuned and the evaluations
        recorded before, for a strategy that learns from them; ignored by default."""

    def prediction(self, genome: Genome) -> float | None:
        """The seconds this strategy predicted for ``genome`` before asking for it
        (``None``: it made no prediction); recorded beside the measurement."""
        return None


def run_search(strategy: SearchStrategy, space: ScheduleSpace, evaluate: EvaluateBatch, clock: BudgetClock,
               rng: random.Random, seeds: Sequence[Genome] = (),
               experience: Experience | None = None) -> list[tuple[Genome, Result]]:
    """Ask, evaluate and tell until the budget is spent or the strategy has nothing
    new; return every (genome, result) evaluated, in order. ``experience`` is
    handed to the strategy before it starts."""
    if experience is not None:
        strategy.learn_from(experience)
    strategy.start(space, rng, seeds)
    history: list[tuple[Genome, Result]] = []
    while not clock.spent():
        genomes = list(strategy.ask())
        limit = clock.remaining_evaluations()
        genomes = genomes if limit is None else genomes[:limit]
        if not genomes:
            break
        results = evaluate(genomes, clock.deadline)
        clock.evaluations += len(results)
        history.extend(zip(genomes, results))
        strategy.tell(genomes[:len(results)], results)
        if not results:
            break
    return history


def novel(make: Callable[[], "Genome | tuple[Genome, Genome]"], seen: set[str], fallback: Callable[[], Genome],
          retries: int) -> Genome | None:
    """A genome not in ``seen`` (then added to it): from ``make`` (a genome or a pair),
    tried ``retries`` times, else one from ``fallback``; ``None`` when nothing new is
    in reach (the space is nearly exhausted)."""
    for _ in range(retries):
        made = make()
        for genome in made if isinstance(made, tuple) else (made,):
            if genome.key not in seen:
                seen.add(genome.key)
                return genome
    genome = fallback()
    if genome.key in seen:
        return None
    seen.add(genome.key)
    return genome
