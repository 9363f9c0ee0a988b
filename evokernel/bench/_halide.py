"""Halide-compiled methods of one operator (unscheduled, autoscheduled, evokernel's)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..codegen import FUNCTION, NativeKernel, link_kernel, load_runtime, native_runtime
from ..errors import EvokernelError
from ..evaluators import CHECK_ONLY, Outcome, Task, WorkerProcess
from ..operators import Operator
from ..target import Target
from .._timing import Timing


class HalideMethods:
    """Halide-compiled methods of one operator: each object is linked against one
    runtime and first checked in a killable worker process (evokernel's runner), so
    that a kernel that crashes, hangs past ``call_timeout`` or computes the wrong
    thing is reported, never run here; one whose check call took over
    ``max_seconds`` is timed by that call (``once``); the others are bound to the
    inputs and a fresh output (NaN-filled: a kernel that writes nothing fails) for
    the side-by-side timing."""

    def __init__(self, op: Operator, target: Target, threads: int, cache: Path, inputs: list[np.ndarray],
                 reference: np.ndarray, call_timeout: float, max_seconds: float):
        self.op, self.inputs = op, inputs
        self.call_timeout, self.max_seconds = call_timeout, max_seconds
        self.dir, self.runtime_path = native_runtime(cache, target.string)
        self.runtime = load_runtime(self.runtime_path, threads)
        specs = (*op.inputs, op.output)
        self.shapes, self.dtypes = [s.shape for s in specs], [s.dtype for s in specs]
        self.task = Task(str(self.runtime_path), threads, self.shapes, self.dtypes, inputs, reference, *op.tolerance)
        self.worker = WorkerProcess(self.task)
        self.once: dict[str, Timing] = {}
        self.libraries: dict[str, Path] = {}  # every method that passed its check

    def add(self, name: str, object_bytes: bytes, entry: dict, calls: dict) -> None:
        """Link and check one method; record its fate in ``entry``, or bind it into ``calls``."""
        try:
            library = link_kernel(object_bytes, self.runtime_path, self.dir)
        except EvokernelError as error:
            entry.update(status="failed", error=str(error))
            return
        m = self.worker.measure(library, FUNCTION, CHECK_ONLY, best=None, timeout=self.call_timeout)
        if m.outcome is not Outcome.OK:
            entry.update(status="wrong" if m.outcome is Outcome.WRONG_RESULT else "failed",
                         error=f"{m.outcome.value}: {m.message}", max_error=m.max_error)
        elif m.times[0] > self.max_seconds:
            entry.update(status="ok", max_error=m.max_error, check_seconds=m.times[0])
            self.once[name] = Timing(m.times[0], 0.0, 1)
        else:
            self.libraries[name] = library
            calls[name] = self.bind(name)

    def bind(self, name: str, arrays: list[np.ndarray] | None = None) -> Callable[[], np.ndarray]:
        """A call of method ``name`` on ``arrays`` (inputs and output; by default the
        bench's inputs and a fresh NaN-filled output)."""
        kernel = NativeKernel(self.libraries[name], FUNCTION, self.runtime, self.shapes, self.dtypes)
        if arrays is None:
            arrays = [*self.inputs, np.full(self.op.output.shape, np.nan, self.op.output.dtype)]
        out = arrays[-1]

        def call() -> np.ndarray:
            kernel(arrays)
            return out
        return call

    def close(self) -> None:
        self.worker.close()
