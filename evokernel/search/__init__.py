"""The search: budgets, the ask/tell ``SearchStrategy`` and its built-in strategies.

``"ga"`` (``GeneticSearch``, on DEAP) and ``"random"`` (``RandomSearch``) are
registered by name; any object implementing ``SearchStrategy`` is accepted too.
"""

from ._budget import Budget, BudgetClock
from ._factory import create_strategy
from ._ga import GeneticSearch
from ._random import RandomSearch
from ._settings import SearchSettings
from ._strategy import STRATEGIES, SearchStrategy, novel, register_strategy, run_search

__all__ = ["Budget", "BudgetClock", "SearchSettings", "SearchStrategy", "GeneticSearch", "RandomSearch",
           "STRATEGIES", "create_strategy", "register_strategy", "run_search", "novel"]
