"""The built-in strategies run by ``run_search`` against a real evaluator: budgets,
reproducible first generation, duplicate rejection."""

from __future__ import annotations

import random

import pytest
from _families import FAMILIES, prepared, space_of

import evokernel as ek
from evokernel import Budget
from evokernel.genome import repair, templates
from evokernel.search import SearchSettings, create_strategy, run_search

OPS = dict(FAMILIES)
SMALL = SearchSettings(mu=4, lambda_=4)


def run_evolve(op, budget: Budget, seed: int, settings: SearchSettings = SMALL, seeds=()):
    evaluator, context = prepared(op)
    clock = budget.clock()
    batches = []

    def evaluate(genomes, deadline):
        batches.append(len(genomes))
        return evaluator.evaluate(genomes, deadline)

    try:
        history = run_search(create_strategy(settings), context.space, evaluate, clock, random.Random(seed), seeds)
    finally:
        evaluator.close()
    return history, clock, batches, context.space


@pytest.mark.parametrize("evaluations", [3, 11])
def test_stops_at_the_evaluation_budget_exactly(evaluations):
    history, clock, batches, _ = run_evolve(OPS["relu"], Budget(evaluations=evaluations), seed=1)
    assert len(history) == evaluations
    assert clock.evaluations == evaluations
    assert sum(batches) == evaluations
    assert all(b <= max(SMALL.mu, SMALL.lambda_) for b in batches)
    assert any(r.ok for _, r in history)


def test_first_generation_is_the_same_for_the_same_seed():
    """Templates first, then seeded random genomes; the same seed draws the same."""
    op = OPS["matmul"]
    settings = SearchSettings(mu=16, lambda_=4)
    first, _, _, space = run_evolve(op, Budget(evaluations=16), seed=42, settings=settings)
    second, _, _, _ = run_evolve(op, Budget(evaluations=16), seed=42, settings=settings)
    other, _, _, _ = run_evolve(op, Budget(evaluations=16), seed=43, settings=settings)
    genomes = [g for g, _ in first]
    assert genomes == [g for g, _ in second]
    count = len(templates(space))
    assert count < 16
    assert genomes[:count] == templates(space)
    assert [g for g, _ in other][:count] == genomes[:count]
    assert [g for g, _ in other][count:] != genomes[count:], "the random part follows the seed"
    assert all(repair(space, g) == g for g in genomes)


def test_the_first_generation_holds_every_template_even_past_mu():
    op = OPS["conv2d"]
    count = len(templates(space_of(op)))
    assert count > SMALL.mu
    history, _, _, space = run_evolve(op, Budget(evaluations=count), seed=0)
    assert [g for g, _ in history] == templates(space)


def test_seeds_go_first():
    op = OPS["matmul"]
    evaluator, context = prepared(op)
    evaluator.close()
    found = templates(context.space)
    history, _, _, _ = run_evolve(op, Budget(evaluations=3), seed=0, seeds=[found[3]])
    assert [g for g, _ in history] == [found[3], found[0], found[1]]


@pytest.mark.parametrize("name, evaluations", [("relu-tiny", 40),
                                               pytest.param("matmul-tiny", 30, marks=pytest.mark.slow)])
def test_no_genome_is_evaluated_twice(name, evaluations):
    """Small spaces make repeats likely; duplicate rejection must still hold."""
    history, clock, _, _ = run_evolve(OPS[name], Budget(evaluations=evaluations), seed=3)
    keys = [g.key for g, _ in history]
    assert len(keys) == evaluations == clock.evaluations
    assert len(set(keys)) == len(keys)
    assert [r.genome_key for _, r in history] == keys


@pytest.mark.slow
def test_an_exhausted_space_ends_the_search_without_repeats():
    """relu on one element has a couple of hundred distinct genomes: the search
    evaluates each at most once and stops before a larger budget is spent (a minute
    of evaluations; a strategy with nothing new ending the search is also checked
    in tests/test_extending.py)."""
    op = ek.operators.relu((1,))
    history, clock, _, _ = run_evolve(op, Budget(evaluations=1000), seed=0, settings=SearchSettings())
    keys = [g.key for g, _ in history]
    assert len(set(keys)) == len(keys)
    assert 50 < len(keys) < 1000 and not clock.spent()


def test_time_budget_ends_the_search():
    """On an injected clock where each evaluation takes 0.25 s, a 2.1 s budget: the
    evaluations started at 0, 0.25, ..., 2.0 s run (the one in progress at the deadline
    finishes), then the search stops, whatever the batch sizes."""
    now = [0.0]
    evaluator, context = prepared(OPS["relu"])
    clock = Budget(seconds=2.1).clock(now=lambda: now[0])
    deadlines = []

    def evaluate(genomes, deadline):
        """As an evaluator does: stop early once the deadline has passed, after one result."""
        deadlines.append(deadline)
        results = []
        for genome in genomes:
            if results and now[0] > deadline:
                break
            results.extend(evaluator.evaluate([genome]))
            now[0] += 0.25
        return results

    try:
        history = run_search(create_strategy(SMALL), context.space, evaluate, clock, random.Random(5))
    finally:
        evaluator.close()
    assert len(history) == 9 == clock.evaluations
    assert clock.spent() and clock.elapsed() == 2.25  # one evaluation past the deadline, no more
    assert set(deadlines) == {2.1}
    assert len({g.key for g, _ in history}) == len(history)


def test_random_strategy_evaluates_only_fresh_random_genomes():
    """Random search: no templates, no seeds, no repeats, the budget exactly."""
    op = OPS["relu"]
    settings = SearchSettings(mu=4, lambda_=4, strategy="random")
    history, clock, batches, space = run_evolve(op, Budget(evaluations=9), seed=3, settings=settings,
                                                seeds=templates(space_of(op)))
    genomes = [g for g, _ in history]
    assert len(genomes) == 9 and clock.evaluations == 9
    assert len({g.key for g in genomes}) == 9
    assert not set(g.key for g in templates(space)) & {g.key for g in genomes}
    again, _, _, _ = run_evolve(op, Budget(evaluations=9), seed=3, settings=settings)
    assert [g for g, _ in again] == genomes


@pytest.mark.parametrize("bad", [dict(strategy="annealing"), dict(mu=0), dict(crossover_rate=1.5)])
def test_bad_search_settings_name_the_problem(bad):
    with pytest.raises(ek.SearchSettingsError, match=next(iter(bad)).rstrip("_")):
        SearchSettings(**bad)
