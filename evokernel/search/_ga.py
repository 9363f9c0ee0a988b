"""The genetic algorithm, on DEAP: (mu + lambda) with tournament selection.

Individuals are DEAP ``creator`` objects that live only in this process; whatever
crosses to another process (an evaluator, a database) is the plain ``Genome``.
"""

from __future__ import annotations

import random
from functools import partial
from operator import attrgetter
from typing import Sequence

from deap import base, creator, tools

from ..evaluators import Result
from ..genome import Genome, ScheduleSpace, crossover, mutate, random_genome, templates
from ._settings import SearchSettings
from ._strategy import SearchStrategy, novel, register_strategy

if not hasattr(creator, "EvokernelFitness"):
    creator.create("EvokernelFitness", base.Fitness, weights=(-1.0,))  # minimise time
    creator.create("EvokernelIndividual", object, fitness=creator.EvokernelFitness)


def individual(genome: Genome, result: Result):
    ind = creator.EvokernelIndividual()
    ind.genome = genome
    ind.fitness.values = (result.time if result.ok else float("inf"),)
    return ind


def select_tournament(individuals: list, k: int, tournsize: int, rng: random.Random) -> list:
    """DEAP's ``selTournament``, drawing from ``rng`` so that a seed reproduces it."""
    return [max(rng.sample(individuals, min(tournsize, len(individuals))), key=attrgetter("fitness"))
            for _ in range(k)]


def toolbox(space: ScheduleSpace, rng: random.Random, settings: SearchSettings) -> base.Toolbox:
    tb = base.Toolbox()
    tb.register("mate", crossover, space, rng=rng)
    tb.register("mutate", mutate, space, rng=rng)
    tb.register("select", select_tournament, tournsize=settings.tournament, rng=rng)
    tb.register("immigrant", random_genome, space, rng)
    return tb


@register_strategy("ga")
class GeneticSearch(SearchStrategy):
    """Evolution. The first generation is the seeds (at most ``mu``), every template
    of the space, then random genomes until it holds ``mu``; each later generation
    breeds ``lambda_`` new genomes (crossover, mutation, immigrants) and keeps the
    best ``mu`` of parents and children.

    >>> import evokernel as ek
    >>> kernel = ek.tune(ek.operators.relu(64), budget=3, seed=0, strategy=GeneticSearch(ek.SearchSettings(mu=2)))
    >>> len(kernel.stats.history)
    3
    """

    def __init__(self, settings: SearchSettings | None = None):
        self.settings = settings or SearchSettings()

    def start(self, space, rng, seeds=()):
        super().start(space, rng, seeds)
        self._toolbox = toolbox(space, rng, self.settings)
        self._seen: set[str] = set()
        self._population: list | None = None  # None until the first generation is told

    def ask(self) -> list[Genome]:
        if self._population is None:
            return self._first_generation()
        if not self._population:
            return []
        return self._breed(self.settings.lambda_, self._seen)

    def tell(self, genomes: Sequence[Genome], results: Sequence[Result]) -> None:
        born = [individual(g, r) for g, r in zip(genomes, results)]
        if self._population is None:
            self._population = born
        else:
            self._population = tools.selBest(self._population + born, self.settings.mu)

    def _first_generation(self) -> list[Genome]:
        first: list[Genome] = []
        for genome in [*self.seeds[:self.settings.mu], *templates(self.space)]:
            if genome.key not in self._seen:
                self._seen.add(genome.key)
                first.append(genome)
        return first + self._immigrants(self.settings.mu - len(first), self._seen)

    def _immigrants(self, count: int, seen: set[str]) -> list[Genome]:
        """Up to ``count`` new random genomes, not in ``seen`` (then added to it)."""
        out: list[Genome] = []
        while len(out) < count and (genome := self._novel(self._toolbox.immigrant, seen)) is not None:
            out.append(genome)
        return out

    def _breed(self, count: int, seen: set[str]) -> list[Genome]:
        """Up to ``count`` offspring of the population, not in ``seen`` (then added to it)."""
        breed = partial(_offspring, self._toolbox, self._population, self.rng, self.settings)
        offspring = [self._novel(breed, seen) for _ in range(count)]
        return [g for g in offspring if g is not None]

    def _novel(self, make, seen: set[str]) -> Genome | None:
        return novel(make, seen, self._toolbox.immigrant, self.settings.max_retries)


def _offspring(tb: base.Toolbox, population: list, rng: random.Random, settings: SearchSettings):
    roll = rng.random()
    if roll < settings.immigrants:
        return tb.immigrant()
    if roll < settings.immigrants + settings.crossover_rate and len(population) > 1:
        a, b = tb.select(population, 2)
        child, _ = tb.mate(a.genome, b.genome)
        return tb.mutate(child) if rng.random() < 0.5 else child
    (parent,) = tb.select(population, 1)
    return tb.mutate(parent.genome)
