"""Cross-compilation: a tuned schedule as an object file for another target.

Tuning needs a runner that can execute the target; compiling does not. The wheel's
LLVM emits ARM and x86 code of any feature set, CUDA (the PTX is embedded in the
object) and OpenCL (the kernels' OpenCL C is embedded), so a schedule tuned here
can be shipped to a machine that nothing here runs. For a GPU target the genome
decodes onto GPU blocks, threads and shared memory (see ``evokernel.genome._gpu``).
"""

from __future__ import annotations

from ..codegen import FUNCTION, CompiledObject, cache_dir, compile_object, default_threads
from ..errors import BuildError
from ..genome import Genome
from ..operators import Operator
from ..store import Kernel, cached_entry
from ..target import Target


def compile_for(source, target: "str | Target", path, genome: Genome | None = None, *,
                function: str = FUNCTION, header: bool = True, runtime: bool = True) -> CompiledObject:
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
    if genome is not None and not isinstance(genome, Genome):
        raise BuildError(f"genome must be an ek.Genome, got {type(genome).__name__}")
    options = dict(function=function, header=header, runtime=runtime)
    if isinstance(source, Kernel):
        return source.compile_for(target, path, genome, **options)
    if not isinstance(source, Operator):
        raise BuildError(f"compile_for() needs a Kernel or an operator, got {type(source).__name__}")
    return compile_object(source, genome or _tuned_genome(source), Target.parse(target), path,
                          threads=default_threads(), **options)


def _tuned_genome(operator: Operator) -> Genome | None:
    """The genome of ``operator``'s kernel tuned for this host, if one is cached."""
    entry = cached_entry(cache_dir(), operator, Target.parse("host"))
    return entry.meta.genome if entry is not None else None
