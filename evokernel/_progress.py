"""Progress of a tuning run: a snapshot after each evaluation, shown as a live bar.

``tune(..., progress=...)`` takes ``None`` (a bar only when stderr is a terminal),
``True`` (always a bar), ``False`` (nothing) or a callable that receives a
``TuningProgress`` after every evaluation.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ._format import format_failures, format_seconds
from .evaluators import Result
from .search import Budget


@dataclass(frozen=True)
class TuningProgress:
    """Where a tuning run stands: evaluations so far, the best time (seconds),
    the unscheduled baseline's, failures by kind and seconds since the start.

    >>> p = TuningProgress("relu(shape=64)", Budget(evaluations=8), evaluations=3, best=0.001, baseline=0.004)
    >>> p.speedup, p.fraction
    (4.0, 0.375)
    """

    operator: str
    budget: Budget
    evaluations: int = 0
    best: float | None = None
    baseline: float | None = None
    failures: dict = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def speedup(self) -> float | None:
        """Baseline time over the best time so far."""
        return self.baseline / self.best if self.baseline and self.best else None

    @property
    def fraction(self) -> float:
        """Share of the budget spent (whichever limit is nearer), 0 to 1."""
        shares = []
        if self.budget.evaluations:
            shares.append(self.evaluations / self.budget.evaluations)
        if self.budget.seconds:
            shares.append(self.elapsed / self.budget.seconds)
        return min(1.0, max(shares))


Display = Callable[[TuningProgress], None]


class Tracker:
    """Follows one run: stamps each evaluation with the seconds since ``start`` (its
    creation, until the tuner sets it to the search's start), keeps the best time
    and the failures, and hands a snapshot to ``display``."""

    def __init__(self, operator_key: str, budget: Budget, display: Display | None):
        self.operator_key, self.budget, self.display = operator_key, budget, display
        self.start = time.monotonic()
        self.stamps: dict[str, float] = {}
        self.best: float | None = None
        self.baseline: float | None = None
        self.failures: Counter = Counter()
        getattr(display, "start", lambda: None)()

    def add(self, genome_key: str, result: Result) -> None:
        """Note one evaluation (a genome seen before in this run is not counted again)."""
        if genome_key in self.stamps:
            return
        self.stamps[genome_key] = time.monotonic() - self.start
        if result.ok:
            self.best = result.time if self.best is None else min(self.best, result.time)
        else:
            self.failures[result.outcome.value] += 1
        if self.display is not None:
            self.display(self.snapshot())

    def snapshot(self) -> TuningProgress:
        return TuningProgress(self.operator_key, self.budget, len(self.stamps), self.best, self.baseline,
                              dict(self.failures), time.monotonic() - self.start)

    def close(self) -> None:
        close = getattr(self.display, "close", None)
        if close is not None:
            close()


def display_for(progress, operator_key: str) -> Display | None:
    """The display ``tune(progress=...)`` asks for (see the module docstring)."""
    if callable(progress):
        return progress
    if progress is None:
        progress = sys.stderr.isatty()
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be None, True, False or a callable, got {type(progress).__name__}")
    return Bar(operator_key) if progress else None


class Bar:
    """A live ``rich`` progress bar on stderr: evaluations, best time, speedup, failures.
    It appears when the run starts and stays, complete, when it ends."""

    def __init__(self, operator_key: str):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._live = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                              TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                              console=Console(stderr=True), transient=False)
        self._label, self._task = _short(operator_key), None

    def start(self) -> None:
        self._task = self._live.add_task(self._label, total=1.0, status="starting")
        self._live.start()

    def __call__(self, p: TuningProgress) -> None:
        if self._task is not None:
            self._live.update(self._task, completed=p.fraction, status=status_line(p))

    def close(self) -> None:
        if self._task is not None:
            self._live.update(self._task, completed=1.0)
            self._live.stop()


def status_line(p: TuningProgress) -> str:
    """One line of text for a snapshot.

    >>> status_line(TuningProgress("op", Budget(evaluations=10), 4, 0.002, 0.01, {"wrong_result": 1}))
    'evaluations 4 | best 2 ms | speedup 5.0x | failures: wrong_result 1'
    """
    parts = [f"evaluations {p.evaluations}", f"best {format_seconds(p.best)}"]
    if p.speedup:
        parts.append(f"speedup {p.speedup:.1f}x")
    parts.append(f"failures: {format_failures(p.failures)}")
    return " | ".join(parts)


def _short(key: str, width: int = 40) -> str:
    return key if len(key) <= width else key[: width - 3] + "..."
