"""``Kernel``: a tuned operator you call on NumPy arrays."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import KernelCallError
from ..genome import Genome
from ..operators import Operator
from ..target import Target
from . import _native


@dataclass(frozen=True)
class TuningStats:
    """How a kernel was found: best and baseline (unscheduled) seconds, the best
    time after each evaluation, outcomes by kind, budget and seed."""

    time: float
    spread: float
    baseline: float | None
    history: tuple[float, ...] = ()
    outcomes: dict = field(default_factory=dict)
    elapsed: float = 0.0
    budget: str = ""
    seed: int | None = None


class Kernel:
    """A compiled, tuned operator.

    Call it with the operator's input arrays (NumPy layout, the tuned shapes and
    dtype). Non-contiguous inputs are copied to C order first; ``out=`` must be a
    C-contiguous, writeable array of the output's shape and dtype that shares no
    memory with the inputs.

    >>> import numpy as np, evokernel as ek
    >>> kernel = ek.tune(ek.operators.relu((4, 100)), budget=4, seed=0)
    >>> x = np.linspace(-1, 1, 400, dtype=np.float32).reshape(4, 100)
    >>> bool(np.array_equal(kernel(x), np.maximum(x, 0)))
    True
    """

    def __init__(self, operator: Operator, target: Target, genome: Genome, schedule: str,
                 library: Path, runtime: Path, threads: int, stats: TuningStats, function: str):
        self.operator, self.target, self.genome, self.schedule = operator, target, genome, schedule
        self.stats = stats
        self._library = library
        specs = (*operator.inputs, operator.output)
        self._native = _native.NativeKernel(library, function, _native.load_runtime(runtime, threads),
                                            [s.shape for s in specs], [s.dtype for s in specs])

    # -- the call path ------------------------------------------------------------------
    def __call__(self, *arrays: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        specs = self.operator.inputs
        if len(arrays) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise KernelCallError(f"{self.operator.key} takes {len(specs)} input arrays ({names}), got {len(arrays)}")
        inputs = []
        for spec, array in zip(specs, arrays):
            spec.check(array, "input")
            inputs.append(array if array.flags.c_contiguous else np.ascontiguousarray(array))
        if out is None:
            out = np.empty(self.operator.output.shape, self.operator.output.dtype)
        else:
            self._check_out(out, inputs)
        self._native([*inputs, out])
        return out

    def _check_out(self, out: np.ndarray, inputs: list[np.ndarray]) -> None:
        self.operator.output.check(out, "out")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise KernelCallError("out must be a C-contiguous, writeable array")
        if any(np.may_share_memory(out, a) for a in inputs):
            raise KernelCallError("out must not share memory with an input")

    # -- what was found -----------------------------------------------------------------
    @property
    def time_ms(self) -> float:
        """Median milliseconds of one call, as measured while tuning."""
        return self.stats.time * 1e3

    @property
    def history(self) -> list[float]:
        """Best time (ms) found after each evaluation of the search."""
        return [t * 1e3 for t in self.stats.history]

    @property
    def speedup(self) -> float | None:
        """Unscheduled pipeline time over tuned time."""
        return None if not self.stats.baseline else self.stats.baseline / self.stats.time

    def report(self) -> str:
        """A short text report: operator, target, times, speed, search summary."""
        op, s = self.operator, self.stats
        gflops = op.flops / s.time / 1e9 if op.flops else None
        lines = [
            f"operator   {op.key}",
            f"target     {self.target}",
            f"time       {self.time_ms:.4g} ms (median, spread {100 * s.spread:.1f}%)",
        ]
        if gflops is not None:
            lines.append(f"throughput {gflops:.1f} GFLOP/s")
        lines.append(f"bandwidth  {op.bytes_moved / s.time / 1e9:.1f} GB/s")
        if s.baseline:
            lines.append(f"baseline   {s.baseline * 1e3:.4g} ms unscheduled -> speedup {self.speedup:.1f}x")
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(Counter(s.outcomes).items()))
        lines.append(f"search     {len(s.history)} evaluations in {s.elapsed:.1f} s (budget {s.budget}, "
                     f"seed {s.seed}): {outcomes}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Kernel {self.operator.key} on {self.target.string}: {self.time_ms:.4g} ms>"
