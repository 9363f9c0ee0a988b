"""Genome -> compiled object: the portable artifact of a candidate, and objects
with headers for other targets (cross-compilation).

Tuning needs a runner that can execute the target; compiling does not. The wheel's
LLVM emits ARM and x86 code of any feature set, CUDA (the PTX is embedded in the
object) and OpenCL (the kernels' OpenCL C is embedded).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import halide as hl

from ..errors import BuildError
from ..genome import Genome, ScheduleSpace, apply, repair, templates
from ..operators import Operator
from ..target import Target

#: The C entry point of every kernel object (and ``FUNCTION + "_argv"``).
FUNCTION = "evokernel_kernel"


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


def build(operator: Operator, space: ScheduleSpace, genome: Genome, target: Target) -> Artifact:
    """Decode ``genome`` onto a fresh algorithm and compile it ahead of time, without
    the Halide runtime; raises ``BuildError`` if Halide rejects the schedule."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "kernel.o")
        schedule = compile_files(operator, space, genome, target.halide.with_feature(hl.TargetFeature.NoRuntime),
                                 {hl.OutputFileType.object: path})
        data = path.read_bytes()
    return Artifact(data, target.string, schedule, time.perf_counter() - start)


def compile_files(operator: Operator, space: ScheduleSpace, genome: Genome, target: hl.Target,
                  outputs: dict, function: str = FUNCTION) -> str:
    """Decode ``genome`` onto a fresh algorithm and write ``outputs`` (Halide output
    file type -> path) for ``target``; returns the schedule code."""
    algorithm = operator.algorithm()
    try:
        schedule = apply(genome, algorithm, space)
        with _quiet_stderr():
            algorithm.pipeline().compile_to({kind: str(path) for kind, path in outputs.items()},
                                            algorithm.inputs, function, target)
    except (hl.HalideError, RuntimeError, ValueError, TypeError) as error:
        raise BuildError(str(error).strip() or type(error).__name__) from error
    return schedule


@dataclass(frozen=True)
class CompiledObject:
    """What ``compile_object`` wrote: the object (and C header) of ``function`` for
    ``target``, the genome it was scheduled with and that schedule as code."""

    path: Path
    header: Path | None
    target: Target
    function: str
    genome: Genome
    schedule: str


def compile_object(operator: Operator, genome: Genome | None, target: Target, path: Path, *, threads: int,
                   function: str = FUNCTION, header: bool = True, runtime: bool = True) -> CompiledObject:
    """Compile ``operator`` scheduled by ``genome`` (repaired to fit ``target``: vector
    lanes, GPU mappings; ``None``: the first template) into the object file ``path``,
    with its C header beside it if ``header`` and the Halide runtime if ``runtime``."""
    space = ScheduleSpace.of(operator, target, threads)
    genome = repair(space, genome) if genome is not None else templates(space)[0]
    if not isinstance(function, str) or not function.isidentifier():
        raise BuildError(f"function must be a C identifier, got {function!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = {hl.OutputFileType.object: path}
    if header:
        outputs[hl.OutputFileType.c_header] = path.with_suffix(".h")
    halide_target = target.halide if runtime else target.halide.with_feature(hl.TargetFeature.NoRuntime)
    try:
        schedule = compile_files(operator, space, genome, halide_target, outputs, function)
    except BuildError as error:
        raise BuildError(f"Halide cannot compile {operator.key} for {target.string}: {error}") from error
    return CompiledObject(path, outputs.get(hl.OutputFileType.c_header), target, function, genome, schedule)


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
