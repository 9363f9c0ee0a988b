"""The measurement protocol: how a built kernel is checked against the reference and
timed, the same for every runner (``run_one``), and what one measurement gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import KernelRuntimeError
from ._result import Outcome


@dataclass(frozen=True)
class Protocol:
    """How a kernel is timed: the check call comes first and is the warm-up (code,
    caches and the output buffer are hot after it); then ``warmup`` further untimed
    calls, then batches of calls until ``min_time`` seconds are measured (at least
    ``min_calls``, at most ``max_calls``); the median is the kernel's time. With
    ``max_calls=0`` (``CHECK_ONLY``) the check call is the one timing.

    Precision is spent where it decides something. Against the best time so far:
    a kernel whose check call is ``slow_factor`` times slower is timed by that call
    alone, and one whose fastest of the first ``screen_calls`` warm calls is
    ``screen_factor`` times slower by those calls (it will not win; the search only
    needs its rank). One call is not enough to judge: on this kind of shared VM the
    first calls after an idle moment often run 1.3-2x slower than the rest."""

    warmup: int = 0
    min_calls: int = 3
    max_calls: int = 200
    min_time: float = 0.03
    slow_factor: float = 5.0
    screen_factor: float = 1.5
    screen_calls: int = 3


#: Timed by the check call alone: a baseline that takes seconds a call (the
#: unscheduled gemm 1024³: 4 s), or a method checked before it is timed elsewhere.
CHECK_ONLY = Protocol(max_calls=0)


@dataclass(frozen=True)
class Measurement:
    """One kernel checked and timed: ``overhead`` is the seconds spent around the
    kernel's calls (the output buffer, the check against the reference), which grow
    with the operator's size, not with its schedule."""

    outcome: Outcome
    times: tuple[float, ...] = ()
    max_error: float | None = None
    message: str = ""
    overhead: float = 0.0


@dataclass
class Task:
    """What every candidate of one tuning run is checked and timed against."""

    runtime: str
    threads: int
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    inputs: list[np.ndarray]
    reference: np.ndarray
    rtol: float
    atol: float
    jit_call: bool = False  # GPU targets: an untimed first call compiles the kernels in the driver


#: Elements compared at a time: blocks that stay in cache make the check of a large
#: output several times faster than whole-array passes (10⁸ floats: 0.9 s, not 11 s).
CHECK_BLOCK = 1 << 16


def check(output: np.ndarray, reference: np.ndarray, rtol: float, atol: float) -> tuple[bool, float]:
    """Whether ``output`` matches ``reference``: the same elements are finite, and
    max |error| over them <= atol + rtol * max |ref|. Floats are compared in their own
    type (the difference of two nearby floats is exact), integers as float64."""
    out, ref = output.reshape(-1), reference.reshape(-1)
    wide = ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.dtype(np.float64)
    error = scale = 0.0
    any_finite = False
    for start in range(0, ref.size, CHECK_BLOCK):
        o, r = out[start:start + CHECK_BLOCK], ref[start:start + CHECK_BLOCK]
        finite = np.isfinite(r)
        if not np.array_equal(np.isfinite(o), finite):
            return False, float("inf")
        if not finite.all():
            o, r = o[finite], r[finite]
        if r.size:
            any_finite = True
            error = max(error, float(np.max(np.abs(o.astype(wide) - r.astype(wide)))))
            scale = max(scale, float(np.max(np.abs(r))))
    if not any_finite:
        return bool(np.array_equal(output, reference)), 0.0
    return error <= atol + rtol * scale, error


def run_one(kernel, task: Task, protocol: Protocol, best: float | None) -> Measurement:
    """Check ``kernel`` once on the task's inputs, then time it as ``protocol`` says
    against the ``best`` time so far (``None``: fully). With ``task.jit_call`` (GPU
    targets) an untimed call comes first, so the driver's compile is never timed."""
    began = time.perf_counter()
    output = np.full(task.shapes[-1], np.nan, dtype=task.dtypes[-1])
    arrays = [*task.inputs, output]
    try:
        if task.jit_call:
            kernel(arrays)
            output.fill(np.nan)
        start = time.perf_counter()
        kernel(arrays)
        check_seconds = time.perf_counter() - start
    except KernelRuntimeError as error:
        return Measurement(Outcome.RUN_CRASH, message=str(error))
    good, error = check(output, task.reference, task.rtol, task.atol)
    overhead = time.perf_counter() - began - check_seconds
    if not good:
        return Measurement(Outcome.WRONG_RESULT, max_error=error,
                           message=f"max abs error {error:.3g} exceeds tolerance", overhead=overhead)
    if best is not None and check_seconds > protocol.slow_factor * best:
        return Measurement(Outcome.OK, (check_seconds,), error, "timed once: slower than the cut-off", overhead)
    if protocol.max_calls < 1:
        return Measurement(Outcome.OK, (check_seconds,), error, "timed by its check call", overhead)
    if protocol.warmup:
        kernel.time(arrays, protocol.warmup)
    screening = best is not None
    first = max(1, min(protocol.max_calls, protocol.screen_calls)) if screening else 1
    measured = list(kernel.time(arrays, first))
    if screening and min(measured) > protocol.screen_factor * best:
        return Measurement(Outcome.OK, tuple(measured), error, "screened: slower than the best", overhead)
    while len(measured) < protocol.max_calls and (
            len(measured) < protocol.min_calls or sum(measured) < protocol.min_time):
        batch = max(protocol.min_calls - len(measured), len(measured))  # doubling, once past min_calls
        measured += list(kernel.time(arrays, min(protocol.max_calls - len(measured), batch)))
    return Measurement(Outcome.OK, tuple(measured), error, overhead=overhead)
