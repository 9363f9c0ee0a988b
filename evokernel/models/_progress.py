"""Progress of a network's tuning: a row per operator and one for the network."""

from __future__ import annotations

import sys

from .._format import format_seconds
from .._progress import TuningProgress, status_line
from ..search import Budget


class ModelDisplay:
    """Silent: the display ``tune_model(progress=False)`` gets; the others override
    what they show. ``operator(key)`` is the display of one operator's tracker."""

    @staticmethod
    def create(progress, name: str, budget: Budget) -> "ModelDisplay":
        """The display ``tune_model(progress=...)`` asks for: ``None`` (bars when
        stderr is a terminal), ``True``, ``False`` or a callable given every
        operator's ``ek.TuningProgress`` after each evaluation."""
        if callable(progress):
            return CallbackDisplay(progress)
        if progress is None:
            progress = sys.stderr.isatty()
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True, False or a callable, got {type(progress).__name__}")
        return BarsDisplay(name, budget) if progress else ModelDisplay()

    def operator(self, key: str):
        return None

    def slice(self, scheduler, clock) -> None:
        pass

    def close(self) -> None:
        pass


class CallbackDisplay(ModelDisplay):
    def __init__(self, callback):
        self.callback = callback

    def operator(self, key: str):
        return self.callback


class BarsDisplay(ModelDisplay):
    """Live ``rich`` rows on stderr: the network's share of the budget and its
    estimated time, then each operator's evaluations, best time and speedup."""

    def __init__(self, name: str, budget: Budget):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._live = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                              TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                              console=Console(stderr=True), transient=False)
        self._network = self._live.add_task(name[:40], total=1.0, status=f"budget {budget}")
        self._live.start()

    def operator(self, key: str):
        return _Row(self._live, key)

    def slice(self, scheduler, clock) -> None:
        share = []
        if clock.budget.seconds:
            share.append(clock.elapsed() / clock.budget.seconds)
        if clock.budget.evaluations:
            share.append(clock.evaluations / clock.budget.evaluations)
        tuned = sum(t.job is not None for t in scheduler.tasks.values())
        self._live.update(self._network, completed=min(1.0, max(share)),
                          status=f"operators {tuned}/{len(scheduler.tasks)} | network "
                                 f"{format_seconds(scheduler.network_time())} on tuned operators")

    def close(self) -> None:
        self._live.update(self._network, completed=1.0)
        self._live.stop()


class _Row:
    """One operator's row, updated by its tracker."""

    def __init__(self, live, key: str):
        self._live, self._key, self._task = live, key, None

    def start(self) -> None:
        label = self._key if len(self._key) <= 40 else self._key[:37] + "..."
        self._task = self._live.add_task(label, total=1.0, status="waiting")

    def __call__(self, p: TuningProgress) -> None:
        self._live.update(self._task, completed=p.fraction, status=status_line(p))

    def close(self) -> None:
        self._live.update(self._task, completed=1.0)
