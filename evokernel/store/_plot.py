"""``Kernel.plot``: the search at a glance, best time against evaluations and wall time."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import EvokernelError
from .._format import format_seconds


def plot_search(kernel, path: Path) -> Path:
    """Write a figure of ``kernel.stats``: two panels sharing the time axis, best
    time (ms) after each evaluation, and against wall seconds since the start
    (when recorded), with the unscheduled baseline and the winner's final time
    (timed again side by side with the other finalists) as lines."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise EvokernelError("Kernel.plot needs matplotlib: pip install 'evokernel[plot]'") from error
    stats = kernel.stats
    best = [t * 1e3 if math.isfinite(t) else math.nan for t in stats.history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    by_count, by_time = figure.subplots(1, 2, sharey=True)
    by_count.step(range(1, len(best) + 1), best, where="post")
    by_count.set_xlabel("evaluations")
    by_count.set_ylabel("best time (ms)")
    if stats.history_seconds:
        by_time.step(stats.history_seconds, best, where="post")
        by_time.set_xlim(left=0)
    else:
        by_time.text(0.5, 0.5, "wall times not recorded", ha="center", transform=by_time.transAxes)
    by_time.set_xlabel("wall time (s)")
    for axes in (by_count, by_time):
        if stats.baseline:
            axes.axhline(stats.baseline * 1e3, linestyle="--", color="grey", label="unscheduled")
        axes.axhline(stats.time * 1e3, linestyle=":", color="green", label="winner, timed again")
        axes.set_yscale("log")
        axes.grid(True, which="both", alpha=0.3)
    by_count.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_count.legend()
    speedup = f", {kernel.speedup:.1f}x faster than unscheduled" if kernel.speedup else ""
    figure.suptitle(f"{kernel.signature.key}\nbest {format_seconds(stats.time)}{speedup}")
    try:
        figure.savefig(path)
    except (OSError, ValueError) as error:
        raise EvokernelError(f"cannot write the plot to {path}: {error}") from error
    return path
