"""``SearchSettings``: the parameters of the built-in strategies."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SearchSettingsError
from ._strategy import STRATEGIES


@dataclass(frozen=True)
class SearchSettings:
    """Population size ``mu``, offspring per generation ``lambda_``, tournament size,
    probability that an offspring comes from crossover (else from mutation alone),
    the share of fresh random immigrants per generation, draws before giving up on
    a new genome, and the built-in ``strategy`` they configure.

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
        for name in ("mu", "lambda_", "tournament", "max_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchSettingsError(f"{name} must be an int of at least 1, got {value!r}")
        for name in ("crossover_rate", "immigrants"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise SearchSettingsError(f"{name} must lie in [0, 1], got {value!r}")
