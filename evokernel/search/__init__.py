"""The search: budgets, the ask/tell ``SearchStrategy`` and its built-in strategies.

``"ga"`` (``GeneticSearch``, on DEAP), ``"ga+model"`` (``ModelGuidedSearch``: the
GA with a cost model screening its offspring) and ``"random"`` (``RandomSearch``)
are registered by name; any object implementing ``SearchStrategy`` is accepted too.
"""

from ._budget import Budget, BudgetClock
from ._experience import Evaluation, Experience
from ._factory import create_strategy
from ._features import FEATURE_NAMES, features, operator_of
from ._ga import GeneticSearch
from ._guided import ModelGuidedSearch
from ._model import CostModel, GradientBoostingModel, Measured, rank_correlation
from ._random import RandomSearch
from ._settings import SearchSettings
from ._strategy import STRATEGIES, SearchStrategy, novel, register_strategy, run_search

__all__ = ["Budget", "BudgetClock", "SearchSettings", "SearchStrategy", "GeneticSearch", "RandomSearch",
           "ModelGuidedSearch", "STRATEGIES", "create_strategy", "register_strategy", "run_search", "novel",
           "Experience", "Evaluation", "CostModel", "GradientBoostingModel", "Measured", "rank_correlation",
           "features", "FEATURE_NAMES", "operator_of"]
