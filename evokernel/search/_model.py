"""Cost models: predict how long a candidate will run from what was measured
before, so that a search spends its evaluations on the promising ones.

``CostModel`` is the seam (as TVM meta_schedule's): ``fit`` on measured
candidates, ``predict`` seconds for new ones. ``GradientBoostingModel``, the
default, fits LightGBM's gradient-boosted trees to the features of each
candidate's plan and operator (``_features``), on every operator of the family
at once: the target is the log of seconds per unit of work (FLOPs plus bytes
moved), so shapes of one family share a scale; a candidate that failed counts as
slower than the slowest correct one of its operator.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import SearchSettingsError
from ..genome import Genome, ScheduleSpace
from ..operators import Operator
from ._features import features

#: Log-seconds a failed candidate counts above the slowest correct one of its operator.
FAILURE_PENALTY = 1.0


@dataclass(frozen=True)
class Measured:
    """One measured candidate: the operator, its schedule space, the genome and
    the median seconds of a call (``None``: it failed to build, run or check)."""

    operator: Operator
    space: ScheduleSpace
    genome: Genome
    time: float | None


class CostModel(abc.ABC):
    """Learns from measured candidates and predicts the seconds of new ones.
    Only the order of predictions within one operator matters to a search."""

    @abc.abstractmethod
    def fit(self, measured: Sequence[Measured]) -> None:
        """Learn from ``measured`` (all of it: a model is refitted, not updated)."""

    @abc.abstractmethod
    def predict(self, operator: Operator, space: ScheduleSpace, genomes: Sequence[Genome]) -> np.ndarray:
        """Predicted seconds of each of ``genomes`` (lower: faster)."""


def work(operator: Operator) -> float:
    """The scale of an operator's time: its FLOPs plus the bytes it moves."""
    return float(max(1, int(operator.flops)) + max(1, int(operator.bytes_moved)))


def require_lightgbm():
    """LightGBM, or a ``SearchSettingsError`` that says how to install it."""
    try:
        import lightgbm
    except ImportError as error:
        raise SearchSettingsError(
            "the 'ga+model' search needs the package 'lightgbm' for its cost model: "
            "pip install 'evokernel[model]' (or pip install lightgbm)") from error
    return lightgbm


class GradientBoostingModel(CostModel):
    """LightGBM regression on plan and operator features (a few hundred trees fit
    in tens of milliseconds on a few thousand rows, on one thread: cheap enough
    to refit after every generation).

    >>> import evokernel as ek
    >>> from evokernel.genome import ScheduleSpace, templates
    >>> op = ek.operators.matmul(64, 64, 64)
    >>> space = ScheduleSpace.of(op, ek.Target.parse("host"), threads=2)
    >>> found = templates(space)
    >>> model = GradientBoostingModel()
    >>> model.fit([Measured(op, space, g, 1e-4 * (i + 1)) for i, g in enumerate(found)])
    >>> len(model.predict(op, space, found)) == len(found)
    True
    """

    def __init__(self, trees: int = 200, learning_rate: float = 0.1, leaves: int = 31, seed: int = 0):
        self._lgb = require_lightgbm()
        self.trees = trees
        self.params = dict(objective="regression", learning_rate=learning_rate, num_leaves=leaves,
                           min_data_in_leaf=5, bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.8,
                           seed=seed, num_threads=1, verbose=-1, deterministic=True, force_row_wise=True)
        self._booster = None
        self._rows: dict[tuple[str, str], np.ndarray] = {}

    @property
    def fitted(self) -> bool:
        return self._booster is not None

    def row(self, operator: Operator, space: ScheduleSpace, genome: Genome) -> np.ndarray:
        """The features of one candidate (kept: a genome's plan never changes)."""
        key = (operator.key, genome.key)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = features(operator, space, genome)
        return row

    def fit(self, measured: Sequence[Measured]) -> None:
        rows, targets = [], []
        by_operator: dict[str, list[Measured]] = {}
        for m in measured:
            by_operator.setdefault(m.operator.key, []).append(m)
        for group in by_operator.values():
            times = [m.time for m in group if m.time is not None and m.time > 0 and math.isfinite(m.time)]
            if not times:
                continue  # nothing correct: no scale for its failures either
            scale = work(group[0].operator)
            failed = math.log(max(times) / scale) + FAILURE_PENALTY
            for m in group:
                try:
                    row = self.row(m.operator, m.space, m.genome)
                except Exception:  # noqa: BLE001 - a genome that does not plan here teaches nothing
                    continue
                good = m.time is not None and m.time > 0 and math.isfinite(m.time)
                rows.append(row)
                targets.append(math.log(m.time / scale) if good else failed)
        if len(rows) < 2:
            return
        data = self._lgb.Dataset(np.vstack(rows), np.asarray(targets), params={"verbose": -1},
                                 free_raw_data=True)
        self._booster = self._lgb.train(self.params, data, num_boost_round=self.trees)

    def predict(self, operator: Operator, space: ScheduleSpace, genomes: Sequence[Genome]) -> np.ndarray:
        if not genomes:
            return np.zeros(0)
        if self._booster is None:
            raise SearchSettingsError("the cost model predicts only after it was fitted")
        x = np.vstack([self.row(operator, space, g) for g in genomes])
        return np.exp(self._booster.predict(x)) * work(operator)


def rank_correlation(pairs: Sequence[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation of (predicted, measured) pairs (ties share their
    average rank); ``None`` below three pairs or when either side is constant.

    >>> round(rank_correlation([(1, 10), (2, 30), (3, 20), (4, 40)]), 6)
    0.8
    """
    if len(pairs) < 3:
        return None
    a, b = (np.asarray(v, dtype=np.float64) for v in zip(*pairs))
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):  # ties: their average rank
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks
