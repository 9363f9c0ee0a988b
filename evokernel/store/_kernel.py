"""``Kernel``: a tuned operator you call on NumPy arrays, save, and load again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._format import format_failures, format_seconds
from ..codegen import (FUNCTION, NativeKernel, compile_object, default_threads, host_platform, load_runtime,
                       page_aligned, platform)
from .._checks import check_path
from ..codegen import cache_dir
from ..errors import ArgumentError, BuildError, KernelCallError
from ..operators import Operator
from ..target import Target
from ._cache import write_bundle
from ._meta import KernelMeta
from ._plot import plot_search
from ._signing import signing_key


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

    A kernel tuned for another platform (``arm-64-linux``, timed on a Ray node of
    that platform) is kept, saved and exported like any other, but not called here.
    """

    def __init__(self, meta: KernelMeta, library: Path, runtime: Path, threads: int, object_bytes: bytes,
                 operator: Operator | None = None, root: Path | None = None):
        self.meta = meta
        self._root = root  # the cache directory it came from: its key signs saved bundles
        self.signature = meta.signature
        self.operator = operator
        self.target = Target.parse(meta.target)
        self.genome = meta.genome
        self.schedule: str = meta.schedule
        self.stats = meta.stats
        self.object_bytes = object_bytes
        specs = (*self.signature.inputs, self.signature.output)
        self._native = None  # code of another platform is never loaded here
        if platform(self.target) == host_platform():
            self._native = NativeKernel(library, FUNCTION, load_runtime(runtime, threads),
                                        [s.shape for s in specs], [s.dtype for s in specs])

    # -- the call path ------------------------------------------------------------------
    def __call__(self, *arrays: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self._native is None:
            raise KernelCallError(
                f"{self.signature.key} was tuned for {self.target.string}, which cannot run on this machine "
                f"({host_platform()}): export it for that platform (ek.export_c, ek.export_tengine_plugin) "
                "or save it (kernel.save) and call it there")
        specs = self.signature.inputs
        if len(arrays) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise KernelCallError(f"{self.signature.key} takes {len(specs)} input arrays ({names}), got {len(arrays)}")
        inputs = []
        for spec, array in zip(specs, arrays):
            spec.check(array, "input")
            inputs.append(array if array.flags.c_contiguous else np.ascontiguousarray(array))
        if out is None:
            out = np.empty(self.signature.output.shape, self.signature.output.dtype)
        else:
            self._check_out(out, inputs)
        self._native([*inputs, out])
        return out

    def empty_output(self) -> np.ndarray:
        """A new array for ``out=``: the output's shape and dtype, starting on a page
        boundary, its pages already mapped. Without ``out=`` every call allocates its
        result, and a large one costs page faults on every call; on a hot path,
        allocate once and pass it (each call then overwrites the last result).

        >>> import numpy as np, evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu((4, 100)), budget=4, seed=0)
        >>> out = kernel.empty_output()
        >>> x = np.full((4, 100), -1.0, np.float32)
        >>> kernel(x, out=out) is out, out.ctypes.data % 4096, float(out.max())
        (True, 0, 0.0)
        """
        spec = self.signature.output
        out = page_aligned(spec.shape, spec.dtype)
        out.fill(0)  # maps every page now, not in the first call
        return out

    def _check_out(self, out: np.ndarray, inputs: list[np.ndarray]) -> None:
        self.signature.output.check(out, "out")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise KernelCallError("out must be a C-contiguous, writeable array")
        if any(np.may_share_memory(out, a) for a in inputs):
            raise KernelCallError("out must not share memory with an input")

    # -- keeping it ----------------------------------------------------------------------
    def save(self, path, key=None) -> Path:
        """Write a self-contained bundle (artifact, genome, metadata, checksums) that
        ``ek.load_kernel(path)`` reads back, in this or another process. It is
        signed with ``key``: by default the key of the cache directory the kernel
        came from (``ek.store.public_key()`` gives its public half, for whoever
        loads the bundle elsewhere), or an ``Ed25519PrivateKey`` or the path of
        one in PEM.

        >>> import tempfile, pathlib, evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu(64), budget=3, seed=0)
        >>> path = kernel.save(pathlib.Path(tempfile.mkdtemp()) / "relu.ekb")
        >>> ek.load_kernel(path).genome == kernel.genome
        True
        """
        path = Path(check_path(path))
        write_bundle(path, self.meta, self.object_bytes, signing_key(key, self._root or cache_dir()))
        return path

    def compile_for(self, target, path, genome=None, **options):
        """This kernel's schedule compiled for another ``target`` into the object file
        ``path`` (and its C header beside it): as ``ek.compile_for(kernel, target, path, **options)``.

        >>> import tempfile, pathlib, evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu(64), budget=2, seed=0, evaluator="local")
        >>> kernel.compile_for("arm-64-linux", pathlib.Path(tempfile.mkdtemp()) / "relu.o").target.arch
        'arm'
        """
        if self.operator is None:
            raise BuildError(f"kernel {self.signature.key} was loaded without its operator (a custom "
                             "operator's bundle): pass the operator and the kernel's genome instead")
        return compile_object(self.operator, genome or self.genome, Target.parse(target), path,
                              threads=default_threads(), **options)

    @property
    def cache_dir(self) -> Path | None:
        """The cache directory this kernel was stored in or loaded through (its key
        signs the bundles ``save`` writes)."""
        return self._root

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

    def report(self, format: str = "text") -> str:
        """What was found, as ``"text"`` or ``"markdown"``: operator, target, budget,
        tuned and baseline times, speed, failures by kind and the schedule code.

        >>> import evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu(64), budget=3, seed=0, evaluator="local")
        >>> print(kernel.report("markdown").splitlines()[0].split(" on ")[0])
        ## relu(shape=64,dtype=float32)
        >>> "failures" in kernel.report() and kernel.schedule in kernel.report()
        True
        """
        if format not in ("text", "markdown"):
            raise ArgumentError(f"report format must be 'text' or 'markdown', got {format!r}")
        rows, schedule = self._report_rows(), self.schedule.rstrip()
        if format == "text":
            width = max(len(name) for name, _ in rows)
            return "\n".join([*(f"{name:<{width}}  {value}" for name, value in rows), "schedule:", schedule])
        table = ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
        return "\n".join([f"## {self.signature.key} on {self.target.string}", "", *table, "",
                          "```python", schedule, "```"])

    def _report_rows(self) -> list[tuple[str, str]]:
        sig, s = self.signature, self.stats
        rows = [("operator", sig.key), ("target", self.target.string),
                ("budget", f"{s.budget} (seed {s.seed})"),
                ("time", f"{format_seconds(s.time)} (median, spread {100 * s.spread:.1f}%)")]
        if s.baseline:
            rows.append(("baseline", f"{format_seconds(s.baseline)} unscheduled -> speedup {self.speedup:.1f}x"))
        if sig.flops:
            rows.append(("throughput", f"{sig.flops / s.time / 1e9:.1f} GFLOP/s"))
        rows.append(("bandwidth", f"{sig.bytes_moved / s.time / 1e9:.1f} GB/s"))
        rows.append(("search", f"{len(s.history)} evaluations in {s.elapsed:.1f} s"))
        rows.append(("failures", format_failures(s.failures)))
        if s.predicted:
            rho = "n/a" if s.rank_correlation is None else f"{s.rank_correlation:.2f}"
            rows.append(("cost model", f"rank correlation {rho} (predicted vs measured, {s.predicted} candidates)"))
        return rows

    def plot(self, path) -> Path:
        """Draw the best time found against evaluations and against wall time, to
        ``path`` (PNG, SVG, PDF: by its suffix). Needs matplotlib
        (``pip install 'evokernel[plot]'``).

        >>> import tempfile, pathlib, evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu(64), budget=3, seed=0, evaluator="local")
        >>> kernel.plot(pathlib.Path(tempfile.mkdtemp()) / "search.png").read_bytes()[:4]
        b'\\x89PNG'
        """
        return plot_search(self, Path(path))

    def __repr__(self) -> str:
        return f"<Kernel {self.signature.key} on {self.target.string}: {self.time_ms:.4g} ms>"
