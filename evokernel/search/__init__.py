"""The search: budgets and the DEAP evolutionary loop."""

from ._budget import Budget, BudgetClock
from ._evolution import SearchSettings, evolve

__all__ = ["Budget", "BudgetClock", "SearchSettings", "evolve"]
