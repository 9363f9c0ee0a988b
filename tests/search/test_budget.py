"""Budgets: what ``tune(budget=...)`` accepts, and what it refuses by name."""

from __future__ import annotations

import time

import pytest

from evokernel import Budget, BudgetError
from evokernel.search import BudgetClock


@pytest.mark.parametrize("text, seconds, evaluations", [
    ("60s", 60.0, None), ("2m", 120.0, None), ("1h", 3600.0, None), ("1.5s", 1.5, None),
    (" 90 sec ", 90.0, None), ("3min", 180.0, None), ("2M", 120.0, None),
    (100, None, 100), ("100 evals", None, 100), ("1 eval", None, 1), ("7 evaluations", None, 7),
    (1.5, 1.5, None),
])
def test_parse_accepts(text, seconds, evaluations):
    budget = Budget.parse(text)
    assert (budget.seconds, budget.evaluations) == (seconds, evaluations)
    assert Budget.parse(budget) is budget


@pytest.mark.parametrize("bad", ["", "   ", "abc", -1, 0, 0.0, -2.5, True, False, "10 parsecs", "0s", "-5s",
                                 "5 s s", "1e3", "inf", float("inf"), float("nan"), None, [60], "100 evals 2m",
                                 "0 evals"])
def test_parse_rejects_with_budget_error(bad):
    with pytest.raises(BudgetError) as info:
        Budget.parse(bad)
    assert info.value.args[0]  # it says what is wrong


def test_budget_error_is_a_value_error():
    with pytest.raises(ValueError):
        Budget.parse("soon")


def test_a_budget_needs_some_limit():
    with pytest.raises(BudgetError):
        Budget()
    assert Budget(seconds=2.0, evaluations=3) == Budget(2.0, 3)


def test_clock_counts_evaluations():
    clock = Budget(evaluations=3).clock()
    assert clock.deadline is None and clock.remaining_evaluations() == 3 and not clock.spent()
    clock.evaluations += 2
    assert clock.remaining_evaluations() == 1 and not clock.spent()
    clock.evaluations += 5
    assert clock.remaining_evaluations() == 0 and clock.spent()


def test_clock_runs_out_of_time():
    now = [100.0]
    clock = Budget(seconds=5.0).clock(now=lambda: now[0])
    assert clock.deadline == 105.0 and clock.remaining_evaluations() is None and not clock.spent()
    now[0] = 104.9
    assert not clock.spent() and clock.elapsed() == pytest.approx(4.9)
    now[0] = 105.0
    assert clock.spent()


def test_the_real_clock_is_monotonic_time():
    """Unless a test injects one, a budget reads time.monotonic (never the wall clock,
    which can jump)."""
    assert BudgetClock(Budget(seconds=60.0), 0.0).now is time.monotonic
    before = time.monotonic()
    clock = Budget(seconds=60.0).clock()
    assert clock.now is time.monotonic and before <= clock.start <= time.monotonic()
    assert clock.deadline == clock.start + 60.0


@pytest.mark.parametrize("budget, text", [(Budget(seconds=90.0), "90s"), (Budget(evaluations=7), "7 evaluations"),
                                          (Budget(seconds=1.5, evaluations=3), "1.5s or 3 evaluations")])
def test_a_budget_prints_and_serialises_itself(budget, text):
    assert str(budget) == text
    assert Budget.from_dict(budget.to_dict()) == budget


@pytest.mark.parametrize("data", [None, {}, {"seconds": "soon"}, {"seconds": 5, "minutes": 2}, {"evaluations": 1.5}])
def test_a_stored_budget_that_makes_no_sense_is_a_budget_error(data):
    with pytest.raises(BudgetError):
        Budget.from_dict(data)


def test_both_limits_whichever_first():
    clock = Budget(seconds=3600.0, evaluations=2).clock()
    clock.evaluations = 2
    assert clock.spent()
