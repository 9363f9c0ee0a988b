"""Strategies by name, settings or object: what ``tune(strategy=...)`` accepts."""

from __future__ import annotations

from ..errors import SearchSettingsError
from ._settings import SearchSettings
from ._strategy import STRATEGIES, SearchStrategy


def create_strategy(strategy: "str | SearchSettings | SearchStrategy") -> SearchStrategy:
    """A registered name (``"ga"``, ``"random"``), a ``SearchSettings`` (its
    ``strategy`` with those parameters) or any ``SearchStrategy`` object, returned as is.

    >>> type(create_strategy("random")).__name__, type(create_strategy(SearchSettings(mu=4))).__name__
    ('RandomSearch', 'GeneticSearch')
    """
    if isinstance(strategy, SearchStrategy):
        return strategy
    if isinstance(strategy, str):
        strategy = SearchSettings(strategy=strategy)
    if not isinstance(strategy, SearchSettings):
        raise SearchSettingsError(f"strategy must be a name ({', '.join(STRATEGIES)}), an ek.SearchSettings or an "
                                  f"ek.search.SearchStrategy, got {type(strategy).__name__}")
    return STRATEGIES[strategy.strategy](strategy)
