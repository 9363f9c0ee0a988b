"""What every operator is: a Halide algorithm, a NumPy reference and a cost.

An operator is a frozen value: its shapes and dtype are fixed, equal arguments give
an equal ``key``. ``algorithm()`` builds *fresh* Halide objects each call, because a
schedule that Halide rejects leaves its Funcs half-changed.

Arrays are in NumPy's layout (row-major, NCHW). Halide numbers dimensions the other
way round (dim 0 is the last NumPy axis); the reversal stays inside the operators.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import halide as hl
import numpy as np

from .._dtypes import halide_type
from ..errors import KernelCallError, OperatorArgumentError
from ._registry import register_family


#: The most elements one array may hold: Halide indexes buffers with 32-bit integers.
MAX_ELEMENTS = 2**31 - 1


def check_positive(**sizes: int) -> None:
    """Raise ``OperatorArgumentError`` unless every size is a positive int."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise OperatorArgumentError(f"{name} must be a positive integer, got {value!r}")


def check_non_negative(**sizes: int) -> None:
    """Raise ``OperatorArgumentError`` unless every size is an int >= 0."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise OperatorArgumentError(f"{name} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class TensorSpec:
    """Name, NumPy shape and dtype of one input or output array."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def check(self, array: np.ndarray, role: str) -> None:
        """Raise ``KernelCallError`` if ``array`` does not fit this spec."""
        if not isinstance(array, np.ndarray):
            raise KernelCallError(f"{role} {self.name!r} must be a numpy.ndarray, got {type(array).__name__}")
        if array.dtype != np.dtype(self.dtype):
            raise KernelCallError(f"{role} {self.name!r} must have dtype {self.dtype}, got {array.dtype}")
        if tuple(array.shape) != self.shape:
            raise KernelCallError(
                f"{role} {self.name!r} must have shape {self.shape}, got {tuple(array.shape)} "
                "(kernels are specialised to the shapes they were tuned for)"
            )


def constrain(buffer, shape: Sequence[int]) -> None:
    """Fix the bounds and dense row-major strides of an ImageParam or output
    buffer to a NumPy ``shape``: Halide then knows every extent and stride."""
    stride = 1
    for dim, extent in enumerate(reversed(tuple(shape))):
        buffer.dim(dim).set_bounds(0, int(extent)).set_stride(stride)
        stride *= int(extent)


def input_param(spec: TensorSpec) -> hl.ImageParam:
    """An ImageParam for ``spec`` with its bounds and strides fixed."""
    param = hl.ImageParam(halide_type(spec.dtype), len(spec.shape), spec.name)
    constrain(param, spec.shape)
    return param


@dataclass
class Stage:
    """One schedulable Func of an algorithm.

    ``extents`` are the loop extents of the Func's pure variables in Halide order
    (dim 0 first) over the region its consumers need. ``rdom`` is the reduction
    domain of its single update definition, if any. ``consumer`` names the stage at
    whose loops it may be computed (default: the next stage in the list).
    ``optional`` marks an extra stage (a packed or padded copy, say) that the
    schedule may leave inlined, which is the same as not having it.
    """

    func: hl.Func
    extents: tuple[int, ...]
    rdom: hl.RDom | None = None
    consumer: str | None = None
    optional: bool = False

    @property
    def name(self) -> str:
        """The name the operator gave the Func, stable across builds: Halide makes
        every Func name unique in the process (a second ``Func("acc")`` is called
        ``"acc$1"``), and that suffix is dropped here."""
        return re.sub(r"\$\d+$", "", self.func.name())


@dataclass
class Algorithm:
    """A freshly built Halide pipeline: inputs in the operator's order, stages in
    producer-to-consumer order, the output stage last."""

    inputs: list[hl.ImageParam]
    stages: list[Stage]
    output_shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.output_shape:
            constrain(self.output.func.output_buffer(), self.output_shape)

    @property
    def output(self) -> Stage:
        return self.stages[-1]

    def pipeline(self) -> hl.Pipeline:
        return hl.Pipeline(self.output.func)


class Operator(abc.ABC):
    """Base class of operators. Subclasses are frozen dataclasses whose fields are
    the operator's arguments; they validate them in ``__post_init__``."""

    family: ClassVar[str] = "operator"
    #: Whether ``from_dict`` rebuilds it from its arguments (a custom operator carries code).
    rebuildable: ClassVar[bool] = True
    #: Arguments added after the family's first release (left out of ``key`` at their default).
    added_later: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        """A subclass that names its own ``family`` is registered under it; its
        ``__post_init__`` is followed by ``check_addressable`` (every operator's
        arrays are checked where it is made, not when a kernel is built)."""
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__ and cls.rebuildable:
            register_family(cls)
        if "__post_init__" in cls.__dict__:
            cls.__post_init__ = _then_check_addressable(cls.__dict__["__post_init__"])

    # -- what subclasses provide -------------------------------------------------
    @property
    @abc.abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Specs of the input arrays, in call order."""

    @property
    @abc.abstractmethod
    def output(self) -> TensorSpec:
        """Spec of the output array."""

    @abc.abstractmethod
    def algorithm(self) -> Algorithm:
        """Build a fresh Halide pipeline for these shapes (unscheduled)."""

    @abc.abstractmethod
    def reference(self, *arrays: np.ndarray) -> np.ndarray:
        """The same result computed with NumPy, in float64 where it matters."""

    @property
    @abc.abstractmethod
    def flops(self) -> int:
        """Floating point operations of one call (a multiply-add counts 2)."""

    @property
    def bytes_moved(self) -> int:
        """Bytes read and written by one call, counting each array once."""
        specs = (*self.inputs, self.output)
        return int(sum(np.prod(s.shape) * np.dtype(s.dtype).itemsize for s in specs))

    @property
    def reduction_length(self) -> int:
        """Terms summed into one output element (sets the check tolerance)."""
        return 1

    # -- derived ------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.output.dtype

    @property
    def key(self) -> str:
        """A stable text key: equal arguments, equal key. Arguments added to a family
        after its first release (``added_later``) appear only where they are not at
        their default, so the keys of operators recorded before them stay the same."""
        args = ",".join(f"{f.name}={_key_value(getattr(self, f.name))}" for f in dataclasses.fields(self)
                        if f.name not in self.added_later or getattr(self, f.name) != f.default)
        return f"{self.family}({args})"

    @property
    def tolerance(self) -> tuple[float, float]:
        """(rtol, atol) for comparing a kernel's output with the reference."""
        eps = float(np.finfo(np.dtype(self.dtype)).eps)
        scale = max(1.0, float(self.reduction_length)) ** 0.5
        return 64 * eps * scale, 64 * eps * scale

    def random_inputs(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Inputs drawn uniformly from [-1, 1], one per input spec."""
        return [rng.uniform(-1.0, 1.0, s.shape).astype(s.dtype) for s in self.inputs]

    def to_dict(self) -> dict:
        """The operator's family and arguments as JSON-ready data (see ``from_dict``)."""
        args = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        return {"family": self.family, "args": args}

    def __str__(self) -> str:
        return self.key


def check_addressable(operator: "Operator") -> None:
    """Raise ``OperatorArgumentError`` if an array of ``operator`` holds more than
    ``MAX_ELEMENTS`` elements: Halide's 32-bit indexing cannot address it.

    >>> from evokernel.operators import relu
    >>> relu(2**31)
    Traceback (most recent call last):
    ...
    evokernel.errors.OperatorArgumentError: relu: array 'input' of shape (2147483648,) holds 2147483648 elements; \
Halide indexes arrays with 32-bit integers: at most 2147483647 (2^31 - 1) elements per array
    """
    for spec in (*operator.inputs, operator.output):
        count = math.prod(spec.shape)
        if count > MAX_ELEMENTS:
            raise OperatorArgumentError(
                f"{operator.family}: array {spec.name!r} of shape {spec.shape} holds {count} elements; Halide "
                f"indexes arrays with 32-bit integers: at most {MAX_ELEMENTS} (2^31 - 1) elements per array")


def _then_check_addressable(post_init):
    @functools.wraps(post_init)
    def checked(self) -> None:
        post_init(self)
        if type(self).__post_init__ is checked:  # the outermost one (a subclass's may call its parent's)
            check_addressable(self)
    return checked


def _key_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)
