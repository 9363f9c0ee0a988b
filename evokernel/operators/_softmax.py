"""Softmax over the last axis, numerically stable."""

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
class Softmax(Operator):
    """``exp(x - max(x)) / sum(exp(x - max(x)))`` along the last axis.

    Stages: ``row_max`` (max over RDom ``r_max``), ``exps`` (``exp(x - row_max)``,
    read by both ``row_sum`` and ``out``, so its consumer is ``out``), ``row_sum``
    (sum over RDom ``r_sum``), ``out`` (``exps / row_sum``). The row stages have
    one Var fewer than the input (none at all for a rank-1 input).
    """

    family: ClassVar[str] = "softmax"

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_fields(self, shape=shape_arg("shape", self.shape), dtype=check_dtype(self.dtype))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("input", self.shape, self.dtype),)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", self.shape, self.dtype)

    @property
    def reduction_length(self) -> int:
        return self.shape[-1]

    @property
    def flops(self) -> int:
        """Five per element: max, subtract, exp, add, divide."""
        return 5 * int(np.prod(self.shape))

    def algorithm(self) -> Algorithm:
        (image,) = params = [input_param(spec) for spec in self.inputs]
        t = halide_type(self.dtype)
        x, *rows = args = halide_vars(len(self.shape))
        length = self.shape[-1]
        r_max, r_sum = hl.RDom([hl.Range(0, length)], "r_max"), hl.RDom([hl.Range(0, length)], "r_sum")
        row_max, exps, row_sum, out = hl.Func("row_max"), hl.Func("exps"), hl.Func("row_sum"), hl.Func("out")

        row_max[rows] = t.min()  # -inf
        row_max[rows] = hl.max(row_max[rows], image[(r_max.x, *rows)])
        exps[args] = hl.exp(image[args] - row_max[rows])
        row_sum[rows] = const(t, 0)
        row_sum[rows] += exps[(r_sum.x, *rows)]
        out[args] = exps[args] / row_sum[rows]

        extents = halide_extents(self.shape)
        stages = [
            Stage(row_max, extents[1:], rdom=r_max),
            Stage(exps, extents, consumer="out"),
            Stage(row_sum, extents[1:], rdom=r_sum),
            Stage(out, extents),
        ]
        return Algorithm(inputs=params, stages=stages, output_shape=self.output.shape)

    def reference(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(self.dtype)


@factory
def softmax(shape, dtype: str = "float32") -> Softmax:
    """Softmax over the last axis of an array of ``shape`` (rank 1 to 4).

    >>> op = softmax((8, 1000))
    >>> [s.name for s in op.algorithm().stages]
    ['row_max', 'exps', 'row_sum', 'out']
    """
    return Softmax(shape, dtype)
