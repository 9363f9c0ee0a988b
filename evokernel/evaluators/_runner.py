"""Runner: check and time compiled kernels in a separate worker process.

Generated code can crash, hang or run a thousand times slower than the best
candidate. The runner therefore calls kernels in a child process it can kill: a
timeout becomes ``run_timeout``, a signal ``run_crash``, and the next candidate gets
a fresh worker. The worker keeps the task's inputs and reference output, so each
candidate costs one small message.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

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
    outcome: Outcome
    times: tuple[float, ...] = ()
    max_error: float | None = None
    message: str = ""


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


class Runner:
    """Parent side: a worker process, restarted whenever it dies or is killed."""

    def __init__(self, task: Task):
        self.task = task
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def measure(self, library: Path, function: str, protocol: Protocol, best: float | None,
                timeout: float) -> Measurement:
        """Check and time one kernel library against the ``best`` time so far (``None``:
        time it fully); never raises for the kernel's faults."""
        conn = self._connection()
        conn.send(("run", {"library": str(library), "function": function,
                           "protocol": asdict(protocol), "best": best}))
        try:
            if not conn.poll(timeout):
                self.close()
                return Measurement(Outcome.RUN_TIMEOUT, message=f"no result after {timeout:.3g} s")
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return Measurement(Outcome.RUN_CRASH, message=self._death())
        return Measurement(Outcome(payload["outcome"]), tuple(payload["times"]),
                           payload["max_error"], payload["message"])

    def _connection(self) -> Connection:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        return self._conn

    def _start(self) -> None:
        self.close()
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "evokernel.evaluators._worker", str(child.fileno())],
            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send(("task", self.task))
        kind, payload = self._conn.recv()
        if kind != "ready":
            raise RuntimeError(f"runner worker failed to start: {payload}")

    def _death(self) -> str:
        proc = self._proc
        self._proc = None
        if proc is None:
            return "worker lost"
        rc = proc.wait()
        if rc < 0:
            return f"killed by signal {signal.Signals(-rc).name}"
        return f"worker exited with status {rc}"

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# -- worker side ------------------------------------------------------------------------

def check(output: np.ndarray, reference: np.ndarray, rtol: float, atol: float) -> tuple[bool, float]:
    """Whether ``output`` matches ``reference``: max |error| <= atol + rtol * max |ref|."""
    if not np.all(np.isfinite(output) == np.isfinite(reference)):
        return False, float("inf")
    finite = np.isfinite(reference)
    if not finite.any():
        return bool(np.array_equal(output, reference)), 0.0
    error = float(np.max(np.abs(output[finite].astype(np.float64) - reference[finite])))
    scale = float(np.max(np.abs(reference[finite])))
    return error <= atol + rtol * scale, error


def run_one(kernel, task: Task, protocol: Protocol, best: float | None) -> Measurement:
    """Check ``kernel`` once on the task's inputs, then time it as ``protocol`` says
    against the ``best`` time so far (``None``: fully). With ``task.jit_call`` (GPU
    targets) an untimed call comes first, so the driver's compile is never timed."""
    from ..errors import KernelRuntimeError

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
    if not good:
        return Measurement(Outcome.WRONG_RESULT, max_error=error,
                           message=f"max abs error {error:.3g} exceeds tolerance")
    if best is not None and check_seconds > protocol.slow_factor * best:
        return Measurement(Outcome.OK, (check_seconds,), error, "timed once: slower than the cut-off")
    if protocol.max_calls < 1:
        return Measurement(Outcome.OK, (check_seconds,), error, "timed by its check call")
    if protocol.warmup:
        kernel.time(arrays, protocol.warmup)
    screening = best is not None
    first = max(1, min(protocol.max_calls, protocol.screen_calls)) if screening else 1
    measured = list(kernel.time(arrays, first))
    if screening and min(measured) > protocol.screen_factor * best:
        return Measurement(Outcome.OK, tuple(measured), error, "screened: slower than the best")
    while len(measured) < protocol.max_calls and (
            len(measured) < protocol.min_calls or sum(measured) < protocol.min_time):
        batch = max(protocol.min_calls - len(measured), len(measured))  # doubling, once past min_calls
        measured += list(kernel.time(arrays, min(protocol.max_calls - len(measured), batch)))
    return Measurement(Outcome.OK, tuple(measured), error)


def serve(conn: Connection) -> None:
    """Worker loop: receive the task, then check and time kernels until EOF."""
    from ..runtime._native import NativeKernel, load_runtime

    kind, task = conn.recv()
    runtime = load_runtime(Path(task.runtime), task.threads)
    conn.send(("ready", None))
    while True:
        try:
            kind, request = conn.recv()
        except EOFError:
            return
        kernel = NativeKernel(Path(request["library"]), request["function"], runtime,
                              task.shapes, task.dtypes)
        result = run_one(kernel, task, Protocol(**request["protocol"]), request["best"])
        conn.send(("result", {**asdict(result), "outcome": result.outcome.value}))

