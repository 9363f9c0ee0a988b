"""Random search: batches of fresh random genomes, no templates, no seeds; the
baseline that shows what evolution adds."""

from __future__ import annotations

from functools import partial

from ..genome import Genome, random_genome
from ._settings import SearchSettings
from ._strategy import SearchStrategy, novel, register_strategy


@register_strategy("random")
class RandomSearch(SearchStrategy):
    """``lambda_`` new random genomes per batch (``SearchSettings``)."""

    def __init__(self, settings: SearchSettings | None = None):
        self.settings = settings or SearchSettings(strategy="random")

    def start(self, space, rng, seeds=()):
        super().start(space, rng, seeds)
        self._seen: set[str] = set()

    def ask(self) -> list[Genome]:
        draw = partial(random_genome, self.space, self.rng)
        fresh = (novel(draw, self._seen, draw, self.settings.max_retries) for _ in range(self.settings.lambda_))
        return [g for g in fresh if g is not None]

    def tell(self, genomes, results) -> None:
        """Random search learns nothing from results."""
