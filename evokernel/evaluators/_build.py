"""Builder: genome -> compiled object (the portable artifact of a candidate)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import halide as hl

from ..genome import Genome, ScheduleSpace, apply
from ..operators import Operator
from ..target import Target

FUNCTION = "evokernel_kernel"
UNSCHEDULED = "unscheduled"  # the genome key that stands for the unscheduled pipeline


def genome_key(genome: Genome | None) -> str:
    """The key results carry: the genome's, or ``UNSCHEDULED`` for ``None``."""
    return genome.key if genome is not None else UNSCHEDULED


@dataclass(frozen=True)
class Artifact:
    """A compiled kernel: an object file without the Halide runtime, for ``target``
    (and, when built on Ray, the library linked on the build node, so the runner
    need not link). Its C entry point is ``FUNCTION`` (and ``FUNCTION + "_argv"``)."""

    object_bytes: bytes
    target: str
    schedule: str
    seconds: float
    library: bytes | None = None  # linked where it was built (Ray builds), against ``runtime``
    runtime: str = ""


class BuildFailure(Exception):
    """Halide rejected the schedule or failed to compile it (message kept)."""


def build(operator: Operator, space: ScheduleSpace, genome: Genome | None, target: Target) -> Artifact:
    """Decode ``genome`` (``None``: leave the pipeline unscheduled) onto a fresh
    algorithm and compile it ahead of time."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "kernel.o")
        schedule = compile_files(operator, space, genome, target.halide.with_feature(hl.TargetFeature.NoRuntime),
                                 {hl.OutputFileType.object: path})
        data = path.read_bytes()
    return Artifact(data, target.string, schedule, time.perf_counter() - start)


def compile_files(operator: Operator, space: ScheduleSpace, genome: Genome | None, target: hl.Target,
                  outputs: dict, function: str = FUNCTION) -> str:
    """Decode ``genome`` onto a fresh algorithm and write ``outputs`` (Halide output
    file type -> path) for ``target``; returns the schedule code."""
    algorithm = operator.algorithm()
    try:
        schedule = apply(genome, algorithm, space) if genome is not None else "# unscheduled"
        with _quiet_stderr():
            algorithm.pipeline().compile_to({kind: str(path) for kind, path in outputs.items()},
                                            algorithm.inputs, function, target)
    except (hl.HalideError, RuntimeError, ValueError, TypeError) as error:
        raise BuildFailure(str(error).strip() or type(error).__name__) from error
    return schedule


@contextlib.contextmanager
def _quiet_stderr():
    """Halide prints schedule warnings ("Unrolling a for loop of extent 1") straight
    to file descriptor 2; a search compiles thousands of candidates, so mute them."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
