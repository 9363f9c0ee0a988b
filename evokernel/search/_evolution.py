"""The evolutionary loop, on DEAP: (mu + lambda) with tournament selection.

Individuals are DEAP ``creator`` objects that live only in this process; whatever
crosses to another process (an evaluator, a database) is the plain ``Genome``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Callable, Sequence

from deap import base, creator, tools

from ..errors import SearchSettingsError
from ..evaluators import Result
from ..genome import Genome, ScheduleSpace, crossover, mutate, random_genome, templates
from ._budget import BudgetClock

if not hasattr(creator, "EvokernelFitness"):
    creator.create("EvokernelFitness", base.Fitness, weights=(-1.0,))  # minimise time
    creator.create("EvokernelIndividual", object, fitness=creator.EvokernelFitness)

EvaluateBatch = Callable[[Sequence[Genome], "float | None"], list[Result]]


@dataclass(frozen=True)
class SearchSettings:
    """Population size ``mu``, offspring per generation ``lambda_``, tournament size,
    probability that an offspring comes from crossover (else from mutation alone),
    and the share of fresh random immigrants per generation.

    ``strategy="random"`` replaces evolution by random search (batches of
    ``lambda_`` fresh random genomes, no templates, no seeds): the baseline that
    shows what evolution adds.

    >>> SearchSettings(strategy="random").strategy
    'random'
    """

    mu: int = 16
    lambda_: int = 16
    tournament: int = 3
    crossover_rate: float = 0.5
    immigrants: float = 0.1
    max_retries: int = 30
    strategy: str = "ga"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise SearchSettingsError(f"unknown search strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if self.mu < 1 or self.lambda_ < 1 or self.tournament < 1:
            raise SearchSettingsError(f"mu, lambda_ and tournament must be at least 1, got {self.mu}, "
                                      f"{self.lambda_}, {self.tournament}")
        for name in ("crossover_rate", "immigrants"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SearchSettingsError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


STRATEGIES = ("ga", "random")


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


def evolve(space: ScheduleSpace, evaluate: EvaluateBatch, clock: BudgetClock, rng: random.Random,
           settings: SearchSettings = SearchSettings(), seeds: Sequence[Genome] = ()) -> list[tuple[Genome, Result]]:
    """Run the search until the budget is spent; return every (genome, result)
    evaluated, in order. The first generation is the ``seeds`` (at most ``mu``),
    every template of the space, then random genomes until it holds ``mu``. With
    ``settings.strategy == "random"`` only fresh random genomes are evaluated."""
    tb = toolbox(space, rng, settings)
    seen: set[str] = set()
    history: list[tuple[Genome, Result]] = []

    def run(genomes: list[Genome]) -> list:
        limit = clock.remaining_evaluations()
        genomes = genomes if limit is None else genomes[:limit]
        if not genomes:
            return []
        results = evaluate(genomes, clock.deadline)
        clock.evaluations += len(results)
        history.extend(zip(genomes, results))
        return [individual(g, r) for g, r in zip(genomes, results)]

    def fresh(make: Callable[[], "Genome | tuple[Genome, Genome]"]) -> Genome | None:
        for _ in range(settings.max_retries):
            made = make()
            for genome in made if isinstance(made, tuple) else (made,):
                if genome.key not in seen:
                    seen.add(genome.key)
                    return genome
        genome = tb.immigrant()
        if genome.key in seen:
            return None  # nothing new in reach: the space is (nearly) exhausted
        seen.add(genome.key)
        return genome

    if settings.strategy == "random":
        while not clock.spent() and run([g for g in (fresh(tb.immigrant) for _ in range(settings.lambda_)) if g]):
            pass
        return history

    first: list[Genome] = []
    for genome in [*seeds[:settings.mu], *templates(space)]:
        if genome.key not in seen:
            seen.add(genome.key)
            first.append(genome)
    while len(first) < settings.mu and (genome := fresh(tb.immigrant)) is not None:
        first.append(genome)
    population = run(first)

    while population and not clock.spent():
        breed = partial(_offspring, tb, population, rng, settings)
        offspring = [fresh(breed) for _ in range(settings.lambda_)]
        born = run([g for g in offspring if g is not None])
        if not born:
            break
        population = tools.selBest(population + born, settings.mu)
    return history


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
