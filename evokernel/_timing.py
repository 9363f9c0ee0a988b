"""One timing protocol for methods run side by side in this process: the bench's
peers, an exporter's choice between an engine's kernel and ours (``SideBySide``:
not to be confused with ``evokernel.evaluators.Protocol``, how the tuner times a
candidate).

Each method is a call with no arguments (its inputs and output are bound already).
First each method finds how many calls last ``min_time`` (batches of 1, 2, 4...
calls: its warm-up, the last of them its first sample); then the methods take turns:
in every further round each runs such a batch, whose per-call mean is one sample;
the order rotates from round to round, so every method sees the same machine noise.
A slow method (an unscheduled pipeline can take seconds) stops once it has spent
``max_seconds`` and has ``min_rounds`` samples, or at ``4 * max_seconds`` with fewer
(a pathological kernel must not hold up the suite). The result is the median sample.
Methods that run on other libraries' thread pools can ask for a pause before each
batch and one untimed call (``settle``), so that no batch starts while the previous
method's idle workers still spin on the cores, or with its own asleep.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class SideBySide:
    """How ``time_side_by_side`` times methods: rounds, seconds per batch and the
    limits for slow methods."""

    rounds: int = 9
    min_time: float = 0.05
    min_rounds: int = 3
    max_seconds: float = 6.0
    settle: float = 0.0  # seconds of pause before each batch, then one untimed call (none at 0)


@dataclass(frozen=True)
class Timing:
    """Median seconds per call, interquartile spread over median, calls made."""

    median: float
    spread: float
    calls: int


def time_side_by_side(methods: Mapping[str, Callable[[], object]], protocol: SideBySide = SideBySide()
                      ) -> dict[str, Timing]:
    """Time every method with the same protocol, interleaved.

    >>> import numpy as np
    >>> x = np.ones(1000)
    >>> t = time_side_by_side({"sum": x.sum, "max": x.max}, SideBySide(rounds=3, min_time=0.001))
    >>> sorted(t), all(v.median > 0 and v.calls >= 3 for v in t.values())
    (['max', 'sum'], True)
    """
    names = list(methods)
    samples: dict[str, list[float]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    calls = dict.fromkeys(names, 0)

    def run(name: str, n: int) -> float:
        if protocol.settle:
            time.sleep(protocol.settle)
            methods[name]()
        start = time.perf_counter()
        for _ in range(n):
            methods[name]()
        seconds = time.perf_counter() - start
        spent[name] += seconds
        return seconds

    batch = {name: _calibrate(lambda n, name=name: run(name, n), protocol.min_time) for name in names}
    for name in names:  # the last calibration batch lasted min_time: it is the first sample
        samples[name].append(batch[name][1])
        calls[name] = batch[name][0]
    for r in range(1, protocol.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if spent[name] > protocol.max_seconds and (
                    len(samples[name]) >= protocol.min_rounds or spent[name] > 4 * protocol.max_seconds):
                continue
            n = batch[name][0]
            samples[name].append(run(name, n) / n)
            calls[name] += n
    return {name: _summary(samples[name], calls[name]) for name in names}


def _calibrate(run: Callable[[int], float], min_time: float, most: int = 100_000) -> tuple[int, float]:
    """Calls per batch, enough to last ``min_time`` (as ``timeit``'s autorange, but
    growing by the measured shortfall, at most 10x a step), and the seconds per
    call of the last batch."""
    calls = 1
    while True:
        seconds = run(calls)
        if seconds >= min_time or calls >= most:
            return calls, seconds / calls
        calls = min(most, max(2 * calls, min(10 * calls, math.ceil(calls * min_time / max(seconds, 1e-9)))))


def _summary(samples: list[float], calls: int) -> Timing:
    median = float(np.median(samples))
    q75, q25 = np.percentile(samples, [75, 25])
    return Timing(median, float((q75 - q25) / median) if median > 0 else 0.0, calls)
