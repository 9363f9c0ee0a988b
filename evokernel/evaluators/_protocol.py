"""The measurement protocol: how a built kernel is checked against the reference and
timed, the same for every runner (``run_one``), and what one measurement gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..codegen import PAGE, page_aligned_copy, spinning
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
    first calls after an idle moment often run 1.3-2x slower than the rest.

    A kernel is timed on ``placements`` copies of its inputs and output, each at
    its own offset from a page boundary (drawn with ``placement_seed``), and its
    time is that of its slowest placement: a schedule that is fast only where its
    arrays happen to sit does not win. Retiming the finalists draws placements
    the search never used.

    A kernel is timed as it runs among other layers. With ``fresh_inputs``, the
    timing thread rewrites the inputs before each timed call, so they start in its
    core's cache alone, as the layer before leaves them: a schedule whose threads
    each read all of an input pays for moving it to their cores (on a 2-vCPU VM,
    a 1x1 conv whose two threads each read the whole input took 96 us so, 23 us
    back to back; one that splits the input, 48 and 27). Each placement is copied
    until the copies hold ``rotation_bytes`` (at most ``MAX_COPIES``), and the calls
    take the copies in turn, so a call finds its output buffer (and its weights, but
    for ``fresh_inputs``) out of the cores' own caches, as a layer does in a network
    (a 1x1 conv of 16 to 64 channels on 55x55, tuned at 33 us on one set of arrays,
    took 77 us in ONNX Runtime after a 32 MB pass, 76-84 us in SqueezeNet; schedules
    differ: its templates ran up to 1.9x slower on rotating copies, some no slower).
    Its workers spin ``spin`` seconds after each parallel loop, as an engine's
    threads do between layers, so no timed call waits for the operating system to
    wake a sleeping worker (tens of microseconds there, whatever the schedule)."""

    warmup: int = 0
    min_calls: int = 3
    max_calls: int = 200
    min_time: float = 0.03
    slow_factor: float = 5.0
    screen_factor: float = 1.5
    screen_calls: int = 3
    placements: int = 2
    placement_seed: int = 0
    fresh_inputs: bool = True
    rotation_bytes: int = 16 << 20
    spin: float = 0.001


#: Timed by the check call alone: a baseline that takes seconds a call (the
#: unscheduled gemm 1024³: 4 s), or a method checked before it is timed elsewhere.
CHECK_ONLY = Protocol(max_calls=0)


@dataclass(frozen=True)
class Measurement:
    """One kernel checked and timed: ``overhead`` is the seconds spent around the
    kernel's calls (the output buffer, the check against the reference), which grow
    with the operator's size, not with its schedule; ``placements`` gives the
    placement each of ``times`` was measured on (empty: all on one)."""

    outcome: Outcome
    times: tuple[float, ...] = ()
    max_error: float | None = None
    message: str = ""
    overhead: float = 0.0
    placements: tuple[int, ...] = ()

    def time(self) -> float:
        """The kernel's time: the median of its slowest placement."""
        if not self.placements:
            return float(np.median(self.times))
        groups: dict[int, list[float]] = {}
        for where, t in zip(self.placements, self.times):
            groups.setdefault(where, []).append(t)
        return max(float(np.median(g)) for g in groups.values())


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
    movable: bool = True  # whether the kernel may be timed on copies of the inputs (not on a GPU or in a harness)
    _placed: dict = field(default_factory=dict, repr=False, compare=False)

    def placed(self, count: int, seed: int, copies: int = 1) -> list[list[list[np.ndarray]]]:
        """``count`` placements of the inputs and an output, each as ``copies`` sets
        of arrays in fresh memory, every array of a placement starting at its own
        element offset below a page (drawn with ``seed``). Kept for the next kernel;
        one set of placements at a time."""
        key = (count, seed, copies)
        if key not in self._placed:
            self._placed.clear()
            rng = np.random.default_rng(seed)
            arrays = (*self.inputs, np.zeros(self.shapes[-1], self.dtypes[-1]))
            self._placed[key] = []
            for _ in range(count):
                offsets = [int(rng.integers(0, PAGE // a.dtype.itemsize)) for a in arrays]
                self._placed[key].append([[page_aligned_copy(a, k) for a, k in zip(arrays, offsets)]
                                          for _ in range(copies)])
        return self._placed[key]

    def __getstate__(self) -> dict:
        """Placements stay in their process: a copy elsewhere would sit at other offsets."""
        return {**self.__dict__, "_placed": {}}


#: Largest task (inputs and output, bytes) timed on copies: beyond, copies cost more memory than they tell.
MOVABLE_BYTES = 256 << 20
#: Most copies of a placement the calls rotate through.
MAX_COPIES = 16


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
    with spinning(protocol.spin):
        return _run_one(kernel, task, protocol, best)


def _run_one(kernel, task: Task, protocol: Protocol, best: float | None) -> Measurement:
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
    places = _placements(task, protocol, arrays)
    if protocol.warmup:
        kernel.time(places[0], protocol.warmup, protocol.fresh_inputs)
    screening = best is not None
    first = max(1, min(protocol.max_calls, protocol.screen_calls)) if screening else 1
    measured = list(kernel.time(places[0], first, protocol.fresh_inputs))
    if screening and min(measured) > protocol.screen_factor * best:
        return Measurement(Outcome.OK, tuple(measured), error, "screened: slower than the best", overhead)
    times, where = [], []
    for i, place in enumerate(places):
        share = _timed(kernel, place, protocol, len(places), measured if i == 0 else [])
        times += share
        where += [i] * len(share)
    return Measurement(Outcome.OK, tuple(times), error, overhead=overhead,
                       placements=tuple(where) if len(places) > 1 else ())


def _placements(task: Task, protocol: Protocol, arrays: list[np.ndarray]) -> list[list[list[np.ndarray]]]:
    """Where the kernel is timed: the protocol's placements, each as the copies its
    calls rotate through, or the checked arrays."""
    count = max(1, min(protocol.placements, protocol.max_calls))  # every placement gets a call at least
    size = max(1, sum(a.nbytes for a in arrays))
    copies = max(1, min(MAX_COPIES, -(-protocol.rotation_bytes // size)))
    if count * copies < 2 or not task.movable or size * count * copies > MOVABLE_BYTES:
        return [[arrays]]
    return task.placed(count, protocol.placement_seed, copies)


def _timed(kernel, sets, protocol: Protocol, shares: int, measured: list[float]) -> list[float]:
    """``measured`` extended with batches of calls until this placement's share of
    the protocol's calls and time is measured (doubling, once past its minimum)."""
    least = max(min(2, protocol.min_calls), -(-protocol.min_calls // shares))
    most = max(1, protocol.max_calls // shares)
    while len(measured) < most and (len(measured) < least or sum(measured) < protocol.min_time / shares):
        batch = max(least - len(measured), len(measured))
        measured += list(kernel.time(sets, min(most - len(measured), batch), protocol.fresh_inputs))
    return measured
