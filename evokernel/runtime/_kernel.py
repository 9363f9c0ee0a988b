"""``Kernel``: a tuned operator you call on NumPy arrays, save, and load again."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EvokernelError, KernelCallError
from ..genome import Genome
from ..operators import Operator, TensorSpec
from ..target import Target
from . import _native


@dataclass(frozen=True)
class Signature:
    """What calling a kernel needs to know of its operator: key, array specs, cost.
    Stored with every kernel, so a bundle loads even where its operator's code
    (a custom operator) is not at hand."""

    key: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    flops: int
    bytes_moved: int

    @classmethod
    def of(cls, operator: Operator) -> "Signature":
        return cls(operator.key, tuple(operator.inputs), operator.output, int(operator.flops),
                   int(operator.bytes_moved))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Signature":
        spec = lambda d: TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])  # noqa: E731
        return cls(data["key"], tuple(spec(d) for d in data["inputs"]), spec(data["output"]),
                   int(data["flops"]), int(data["bytes_moved"]))


def format_seconds(seconds: float | None) -> str:
    """A duration in the unit that reads best.

    >>> format_seconds(3e-8), format_seconds(0.000683), format_seconds(0.1729), format_seconds(75.0)
    ('0.03 us', '683 us', '172.9 ms', '75 s')
    """
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds * 1e6:.4g} us"


def format_failures(failures: dict) -> str:
    """Failures by kind, as one phrase.

    >>> format_failures({"wrong_result": 2, "compile_error": 1}), format_failures({})
    ('compile_error 1, wrong_result 2', 'none')
    """
    return ", ".join(f"{kind} {n}" for kind, n in sorted(failures.items()) if n) or "none"


@dataclass(frozen=True)
class TuningStats:
    """How a kernel was found: best and baseline (unscheduled) seconds, the best
    time after each evaluation (``history``) and the wall seconds since the start
    at which each evaluation finished (``history_seconds``; empty for kernels tuned
    before it was recorded), outcomes by kind, budget and seed."""

    time: float
    spread: float
    baseline: float | None
    history: tuple[float, ...] = ()
    history_seconds: tuple[float, ...] = ()
    outcomes: dict = field(default_factory=dict)
    elapsed: float = 0.0
    budget: str = ""
    seed: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TuningStats":
        return cls(**{**data, "history": tuple(data.get("history", ())),
                      "history_seconds": tuple(data.get("history_seconds", ()))})

    @property
    def failures(self) -> dict[str, int]:
        """Evaluations that did not give a correct time, by kind."""
        return {kind: n for kind, n in sorted(self.outcomes.items()) if kind != "ok" and n}


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

    def __init__(self, meta: dict, library: Path, runtime: Path, threads: int, object_bytes: bytes,
                 operator: Operator | None = None, function: str = "evokernel_kernel"):
        self.meta = meta
        self.signature = Signature.from_dict(meta["signature"])
        self.operator = operator
        self.target = Target.parse(meta["target"])
        self.genome = Genome.from_dict(meta["genome"])
        self.schedule: str = meta["schedule"]
        self.stats = TuningStats.from_dict(meta["stats"])
        self._object = object_bytes
        specs = (*self.signature.inputs, self.signature.output)
        self._native = _native.NativeKernel(library, function, _native.load_runtime(runtime, threads),
                                            [s.shape for s in specs], [s.dtype for s in specs])

    # -- the call path ------------------------------------------------------------------
    def __call__(self, *arrays: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
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

    def _check_out(self, out: np.ndarray, inputs: list[np.ndarray]) -> None:
        self.signature.output.check(out, "out")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise KernelCallError("out must be a C-contiguous, writeable array")
        if any(np.may_share_memory(out, a) for a in inputs):
            raise KernelCallError("out must not share memory with an input")

    # -- keeping it ----------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write a self-contained bundle (artifact, genome, metadata, checksums) that
        ``ek.load_kernel(path)`` reads back, in this or another process.

        >>> import tempfile, pathlib, evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu(64), budget=3, seed=0)
        >>> path = kernel.save(pathlib.Path(tempfile.mkdtemp()) / "relu.ekb")
        >>> ek.load_kernel(path).genome == kernel.genome
        True
        """
        from ._cache import write_bundle

        path = Path(path)
        write_bundle(path, self.meta, self._object)
        return path

    def compile_for(self, target, path, **options):
        """This kernel's schedule compiled for another ``target`` into the object file
        ``path``: ``ek.compile_for(kernel, target, path, **options)``.

        >>> import tempfile, pathlib, evokernel as ek
        >>> kernel = ek.tune(ek.operators.relu(64), budget=2, seed=0, evaluator="local")
        >>> kernel.compile_for("arm-64-linux", pathlib.Path(tempfile.mkdtemp()) / "relu.o").target.arch
        'arm'
        """
        from ._cross import compile_for

        return compile_for(self, target, path, **options)

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
            raise EvokernelError(f"report format must be 'text' or 'markdown', got {format!r}")
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
        from ._plot import plot_search

        return plot_search(self, Path(path))

    def __repr__(self) -> str:
        return f"<Kernel {self.signature.key} on {self.target.string}: {self.time_ms:.4g} ms>"
