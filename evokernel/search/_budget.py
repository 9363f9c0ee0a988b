"""Tuning budgets: wall time, evaluations, or both."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import BudgetError

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)\s*$")
_EVALS = re.compile(r"^\s*(\d+)\s*(evals?|evaluations?)?\s*$")


@dataclass(frozen=True)
class Budget:
    """Stop after ``seconds`` of wall time or ``evaluations`` candidates, whichever
    comes first (``None``: no limit of that kind).

    >>> Budget.parse("2m"), Budget.parse(100), Budget.parse("90s").seconds
    (Budget(seconds=120.0, evaluations=None), Budget(seconds=None, evaluations=100), 90.0)
    """

    seconds: float | None = None
    evaluations: int | None = None

    def __post_init__(self) -> None:
        if self.seconds is None and self.evaluations is None:
            raise BudgetError("a budget needs a time limit, an evaluation limit, or both")
        if self.seconds is not None and (isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float))
                                         or not (self.seconds > 0 and math.isfinite(self.seconds))):
            raise BudgetError(f"budget seconds must be a positive finite number, got {self.seconds!r}")
        if self.evaluations is not None and (isinstance(self.evaluations, bool) or not isinstance(self.evaluations, int)
                                             or self.evaluations <= 0):
            raise BudgetError(f"budget evaluations must be a positive int, got {self.evaluations!r}")

    @classmethod
    def parse(cls, budget: "str | int | float | Budget") -> "Budget":
        """``"60s"``, ``"2m"``, ``"1h"`` (time), ``100``, ``"100"`` or ``"100 evals"``
        (evaluations), a float (seconds) or a ``Budget``.

        >>> Budget.parse("100") == Budget.parse(100) == Budget.parse("100 evals")
        True
        """
        if isinstance(budget, Budget):
            return budget
        if isinstance(budget, bool):
            raise BudgetError(f"budget must be a duration like '60s' or a number of evaluations, got {budget!r}")
        if isinstance(budget, int):
            return cls(evaluations=budget)
        if isinstance(budget, float):
            return cls(seconds=budget)
        if isinstance(budget, str):
            if m := _TIME.match(budget.lower()):
                return cls(seconds=float(m.group(1)) * _UNITS[m.group(2)])
            if m := _EVALS.match(budget.lower()):
                return cls(evaluations=int(m.group(1)))
        raise BudgetError(
            f"cannot understand budget {budget!r}: use a duration ('60s', '2m', '1h') or a number of evaluations (100)")

    def exceeds(self, other: "Budget") -> bool:
        """Whether this budget allows more than ``other`` in time or evaluations
        (a missing limit is no limit).

        >>> Budget.parse("2m").exceeds(Budget.parse("60s")), Budget.parse("60s").exceeds(Budget.parse("60s"))
        (True, False)
        """
        def more(mine, theirs):
            return theirs is not None and (mine is None or mine > theirs)

        return more(self.seconds, other.seconds) or more(self.evaluations, other.evaluations)

    def __str__(self) -> str:
        """As it reads in reports: ``60s``, ``100 evaluations``, ``60s or 100 evaluations``.

        >>> str(Budget(seconds=90)), str(Budget(seconds=60, evaluations=100))
        ('90s', '60s or 100 evaluations')
        """
        parts = []
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        if self.evaluations is not None:
            parts.append(f"{self.evaluations} evaluations")
        return " or ".join(parts)

    def to_dict(self) -> dict:
        """JSON-ready data that ``from_dict`` reads back.

        >>> Budget.from_dict(Budget(seconds=60).to_dict()) == Budget(seconds=60)
        True
        """
        return {"seconds": self.seconds, "evaluations": self.evaluations}

    @classmethod
    def from_dict(cls, data: dict) -> "Budget":
        """The budget ``to_dict`` wrote; ``BudgetError`` for anything else."""
        if not isinstance(data, dict) or set(data) - {"seconds", "evaluations"}:
            raise BudgetError(f"a stored budget has the keys 'seconds' and 'evaluations', got {data!r}")
        return cls(data.get("seconds"), data.get("evaluations"))

    def clock(self, now: Callable[[], float] = time.monotonic) -> "BudgetClock":
        """Start spending this budget; ``now`` is the clock it reads (seconds)."""
        return BudgetClock(self, now(), now=now)


@dataclass
class BudgetClock:
    """A running budget: counts evaluations against the start time, read from ``now``
    (``time.monotonic`` unless a test injects another clock).

    >>> t = [0.0]
    >>> clock = Budget(seconds=10).clock(now=lambda: t[0])
    >>> clock.spent(), t.__setitem__(0, 10.0), clock.spent()
    (False, None, True)
    """

    budget: Budget
    start: float
    evaluations: int = 0
    now: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    @property
    def deadline(self) -> float | None:
        return None if self.budget.seconds is None else self.start + self.budget.seconds

    def elapsed(self) -> float:
        return self.now() - self.start

    def spent(self) -> bool:
        if self.budget.evaluations is not None and self.evaluations >= self.budget.evaluations:
            return True
        return self.deadline is not None and self.now() >= self.deadline

    def remaining_evaluations(self) -> int | None:
        if self.budget.evaluations is None:
            return None
        return max(0, self.budget.evaluations - self.evaluations)
