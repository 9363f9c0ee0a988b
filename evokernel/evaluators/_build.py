"""Builder: genome -> compiled object (the portable artifact of a candidate)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import halide as hl

from ..genome import Genome, ScheduleSpace, apply
from ..operators import Operator
from ..target import Target

FUNCTION = "evokernel_kernel"


@dataclass(frozen=True)
class Artifact:
    """A compiled kernel: an object file without the Halide runtime, for ``target``.
    Its C entry point is ``FUNCTION`` (and ``FUNCTION + "_argv"``)."""

    object_bytes: bytes
    target: str
    schedule: str
    seconds: float


class BuildFailure(Exception):
    """Halide rejected the schedule or failed to compile it (message kept)."""


def build(operator: Operator, space: ScheduleSpace, genome: Genome | None, target: Target) -> Artifact:
    """Decode ``genome`` (``None``: leave the pipeline unscheduled) onto a fresh
    algorithm and compile it ahead of time."""
    start = time.perf_counter()
    algorithm = operator.algorithm()
    try:
        schedule = apply(genome, algorithm, space) if genome is not None else "# unscheduled"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "kernel.o")
            algorithm.pipeline().compile_to(
                {hl.OutputFileType.object: str(path)}, algorithm.inputs, FUNCTION,
                target.halide.with_feature(hl.TargetFeature.NoRuntime))
            data = path.read_bytes()
    except (hl.HalideError, RuntimeError, ValueError, TypeError) as error:
        raise BuildFailure(str(error).strip() or type(error).__name__) from error
    return Artifact(data, target.string, schedule, time.perf_counter() - start)
