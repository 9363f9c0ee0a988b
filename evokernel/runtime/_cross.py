"""Cross-compilation: a tuned schedule as an object file for another target.

Tuning needs a runner that can execute the target; compiling does not. The wheel's
LLVM emits ARM and x86 code of any feature set, CUDA (the PTX is embedded in the
object) and OpenCL (the kernels' OpenCL C is embedded), so a schedule tuned here
can be shipped to a machine that nothing here runs. For a GPU target the genome
decodes onto GPU blocks, threads and shared memory (see ``evokernel.genome._gpu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import halide as hl

from ..errors import BuildError
from ..genome import Genome, ScheduleSpace, repair, templates
from ..operators import Operator
from ..target import Target


@dataclass(frozen=True)
class CompiledObject:
    """What ``compile_for`` wrote: the object (and C header) of ``function`` for
    ``target``, the genome it was scheduled with and that schedule as code."""

    path: Path
    header: Path | None
    target: Target
    function: str
    genome: Genome
    schedule: str


def compile_for(source, target: "str | Target", path, genome: Genome | None = None, *,
                function: str = "evokernel_kernel", header: bool = True, runtime: bool = True) -> CompiledObject:
    """Compile a kernel's or an operator's schedule for ``target`` into the object
    file ``path`` (plus ``path`` with suffix ``.h``, its C header, if ``header``).

    ``source`` is a ``Kernel`` (its operator and tuned genome) or an ``Operator``
    (with ``genome``, else the genome of its kernel tuned for ``"host"`` in the
    cache, else a default vectorised schedule). The genome is repaired to fit the
    target (vector lanes; GPU mappings on a GPU target). The object exports
    ``function`` (and ``function + "_argv"``) and, if ``runtime``, the Halide runtime
    it needs; link several with ``runtime=False`` for all but one.

    >>> import tempfile, pathlib, evokernel as ek
    >>> op = ek.operators.relu((8, 32))
    >>> out = ek.compile_for(op, "arm-64-linux", pathlib.Path(tempfile.mkdtemp()) / "relu.o")
    >>> out.path.read_bytes()[:4] == b"\\x7fELF", out.header.name
    (True, 'relu.h')
    """
    from ..evaluators._build import BuildFailure, compile_files
    from ..evaluators._evaluator import default_threads

    target = Target.parse(target)
    operator, genome = _source(source, genome)
    space = ScheduleSpace.of(operator, target, default_threads())
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
    except BuildFailure as error:
        raise BuildError(f"Halide cannot compile {operator.key} for {target.string}: {error}") from error
    return CompiledObject(path, outputs.get(hl.OutputFileType.c_header), target, function, genome, schedule)


def _source(source, genome) -> tuple[Operator, Genome | None]:
    from ._kernel import Kernel

    if genome is not None and not isinstance(genome, Genome):
        raise TypeError(f"genome must be an ek.Genome, got {type(genome).__name__}")
    if isinstance(source, Kernel):
        if source.operator is None:
            raise BuildError(f"kernel {source.signature.key} was loaded without its operator (a custom "
                             "operator's bundle): pass the operator and the kernel's genome instead")
        return source.operator, genome or source.genome
    if isinstance(source, Operator):
        return source, genome or _tuned_genome(source)
    raise TypeError(f"compile_for() needs a Kernel or an operator, got {type(source).__name__}")


def _tuned_genome(operator: Operator) -> Genome | None:
    """The genome of ``operator``'s kernel tuned for this host, if one is cached."""
    from . import _paths, _store

    entry = _store.cached_entry(_paths.cache_dir(), operator, Target.parse("host"))
    return Genome.from_dict(entry.meta["genome"]) if entry is not None else None
