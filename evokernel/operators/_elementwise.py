"""Elementwise operators on arrays of rank 1 to 4: relu, relu6 and add.

Each is a single stage ``out(x, y, z, w)`` (as many Vars as the rank, Halide order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import halide as hl
import numpy as np

from .._dtypes import check_dtype, halide_type
from ._base import Algorithm, Operator, Stage, TensorSpec, input_param
from ._common import const, halide_extents, halide_vars, set_fields, shape_arg
from ._registry import factory


@dataclass(frozen=True)
class _Elementwise(Operator):
    """An operator whose output element depends on the same element of each input."""

    input_names: ClassVar[tuple[str, ...]] = ("input",)
    flops_per_element: ClassVar[int] = 1

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_fields(self, shape=shape_arg("shape", self.shape), dtype=check_dtype(self.dtype))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name, self.shape, self.dtype) for name in self.input_names)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", self.shape, self.dtype)

    @property
    def flops(self) -> int:
        return int(np.prod(self.shape)) * self.flops_per_element

    def algorithm(self) -> Algorithm:
        params = [input_param(spec) for spec in self.inputs]
        args = halide_vars(len(self.shape))
        out = hl.Func("out")
        out[args] = self._expr([p[args] for p in params], halide_type(self.dtype))
        return Algorithm(inputs=params, stages=[Stage(out, halide_extents(self.shape))],
                         output_shape=self.output.shape)

    def _expr(self, values: list[hl.Expr], t: hl.Type) -> hl.Expr:
        raise NotImplementedError

    def reference(self, *arrays: np.ndarray) -> np.ndarray:
        return np.asarray(self._numpy(*(a.astype(np.float64) for a in arrays))).astype(self.dtype)

    def _numpy(self, *arrays: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Relu(_Elementwise):
    """``max(x, 0)``."""

    family: ClassVar[str] = "relu"

    def _expr(self, values, t):
        return hl.max(values[0], const(t, 0))

    def _numpy(self, x):
        return np.maximum(x, 0)


@dataclass(frozen=True)
class Relu6(_Elementwise):
    """``min(max(x, 0), 6)``."""

    family: ClassVar[str] = "relu6"
    flops_per_element: ClassVar[int] = 2

    def _expr(self, values, t):
        return hl.clamp(values[0], const(t, 0), const(t, 6))

    def _numpy(self, x):
        return np.clip(x, 0, 6)


@dataclass(frozen=True)
class Add(_Elementwise):
    """``a + b`` for two arrays of the same shape."""

    family: ClassVar[str] = "add"
    input_names: ClassVar[tuple[str, ...]] = ("a", "b")

    def _expr(self, values, t):
        return values[0] + values[1]

    def _numpy(self, a, b):
        return a + b


@factory
def relu(shape, dtype: str = "float32") -> Relu:
    """Elementwise ``max(x, 0)`` over an array of ``shape`` (an int for rank 1).

    >>> relu((1, 64, 56, 56)).key
    'relu(shape=1x64x56x56,dtype=float32)'
    """
    return Relu(shape, dtype)


@factory
def relu6(shape, dtype: str = "float32") -> Relu6:
    """Elementwise ``min(max(x, 0), 6)``.

    >>> relu6(1000).inputs[0].shape
    (1000,)
    """
    return Relu6(shape, dtype)


@factory
def add(shape, dtype: str = "float32") -> Add:
    """Elementwise sum of two arrays of the same ``shape``.

    >>> [s.name for s in add((4, 8)).inputs]
    ['a', 'b']
    """
    return Add(shape, dtype)
