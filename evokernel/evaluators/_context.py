"""What an evaluator needs for one operator on one target, and its measurement settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..codegen import Artifact, link_kernel, native_runtime
from ..genome import ScheduleSpace
from ..operators import Operator
from ..target import Target
from ._protocol import Protocol, Task


@dataclass
class Settings:
    """Measurement settings. The run timeout follows the best time found so far:
    ``max(min_run_timeout, 10 * protocol.slow_factor * best)``; the protocol times
    candidates much slower than the best only roughly (it says how). Added to it:
    ``overhead_factor`` times the largest cost of a measurement around its kernel
    seen in the run (allocating the output, checking it: about a second for
    10000×10000 floats). On a GPU target a kernel's first call also compiles it in
    the driver (OpenCL C, PTX): that call is made untimed first, and
    ``jit_allowance`` seconds are added to every run timeout for it."""

    protocol: Protocol = field(default_factory=Protocol)
    min_run_timeout: float = 1.0
    first_run_timeout: float = 120.0
    jit_allowance: float = 10.0
    overhead_factor: float = 3.0


@dataclass
class Context:
    """Everything builders and runners need for one operator on one target: the
    schedule space, the inputs and reference output every candidate is checked
    against, and the runtime library kernels are linked with here (built on first
    use, with the target platform's toolchain: a runner on another node never
    needs it here)."""

    operator: Operator
    target: Target
    space: ScheduleSpace
    threads: int
    cache: Path
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.inputs = self.operator.random_inputs(rng)
        self.reference = np.asarray(self.operator.reference(*self.inputs), dtype=self.operator.dtype)

    @cached_property
    def _native(self) -> tuple[Path, Path]:
        return native_runtime(self.cache, self.target.string)

    @property
    def native_dir(self) -> Path:
        return self._native[0]

    @property
    def runtime(self) -> Path:
        return self._native[1]

    def task(self, here: bool = True) -> Task:
        """What runners check and time against; ``here=False`` for a runner on
        another node, which names its own runtime library."""
        specs = (*self.operator.inputs, self.operator.output)
        rtol, atol = self.operator.tolerance
        return Task(str(self.runtime) if here else "", self.threads, [s.shape for s in specs],
                    [s.dtype for s in specs], self.inputs, self.reference, rtol, atol, jit_call=self.target.is_gpu,
                    movable=not self.target.is_gpu)

    def link(self, artifact: Artifact) -> Path:
        return link_kernel(artifact.object_bytes, self.runtime, self.native_dir, self.target.string)
