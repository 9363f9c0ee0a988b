"""Matrix multiplication and the fully connected layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import halide as hl
import numpy as np

from .._dtypes import check_dtype, halide_type
from ._base import Algorithm, Operator, Stage, TensorSpec, check_positive, input_param
from ._common import check_flag, const, set_fields
from ._registry import factory


@dataclass(frozen=True)
class MatMul(Operator):
    """``C[m, n] = A[m, k] @ B[k, n]``.

    Stages: ``Bc`` (optional packed copy of B, consumed by ``acc``), ``acc``
    (the reduction over k, RDom ``r``), ``out``.
    """

    family: ClassVar[str] = "matmul"

    m: int
    n: int
    k: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check_positive(m=self.m, n=self.n, k=self.k)
        set_fields(self, m=int(self.m), n=int(self.n), k=int(self.k), dtype=check_dtype(self.dtype))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("A", (self.m, self.k), self.dtype), TensorSpec("B", (self.k, self.n), self.dtype))

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", (self.m, self.n), self.dtype)

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def reduction_length(self) -> int:
        return self.k

    def algorithm(self) -> Algorithm:
        a, b = (input_param(spec) for spec in self.inputs)
        x, y, k = hl.Var("x"), hl.Var("y"), hl.Var("k")
        r = hl.RDom([hl.Range(0, self.k)], "r")
        bc, acc, out = hl.Func("Bc"), hl.Func("acc"), hl.Func("out")
        bc[x, k] = b[x, k]
        acc[x, y] = const(halide_type(self.dtype), 0)
        acc[x, y] += a[r.x, y] * bc[x, r.x]
        out[x, y] = acc[x, y]
        stages = [
            Stage(bc, (self.n, self.k), consumer="acc", optional=True),
            Stage(acc, (self.n, self.m), rdom=r),
            Stage(out, (self.n, self.m)),
        ]
        return Algorithm(inputs=[a, b], stages=stages, output_shape=self.output.shape)

    def reference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(self.dtype)


@factory
def matmul(m: int, n: int, k: int, dtype: str = "float32") -> MatMul:
    """``C[m, n] = A[m, k] @ B[k, n]``.

    >>> op = matmul(64, 32, 128)
    >>> op.key, op.output.shape, op.flops
    ('matmul(m=64,n=32,k=128,dtype=float32)', (64, 32), 524288)
    """
    return MatMul(m, n, k, dtype)


@dataclass(frozen=True)
class FullyConnected(Operator):
    """``y = x @ W.T + b`` with x ``[batch, in_features]``, W ``[out_features,
    in_features]`` (PyTorch's layout) and b ``[out_features]``.

    Stages: ``Wt`` (optional packed transpose of W, consumed by ``acc``), ``acc``
    (starts at the bias, reduces over in_features with RDom ``r``), ``out``.
    """

    family: ClassVar[str] = "fc"

    batch: int
    in_features: int
    out_features: int
    bias: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check_positive(batch=self.batch, in_features=self.in_features, out_features=self.out_features)
        check_flag(bias=self.bias)
        set_fields(self, batch=int(self.batch), in_features=int(self.in_features),
                   out_features=int(self.out_features), bias=bool(self.bias), dtype=check_dtype(self.dtype))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        specs = (TensorSpec("input", (self.batch, self.in_features), self.dtype),
                 TensorSpec("weight", (self.out_features, self.in_features), self.dtype))
        return specs + ((TensorSpec("bias", (self.out_features,), self.dtype),) if self.bias else ())

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", (self.batch, self.out_features), self.dtype)

    @property
    def flops(self) -> int:
        return self.batch * self.out_features * (2 * self.in_features + self.bias)

    @property
    def reduction_length(self) -> int:
        return self.in_features + self.bias

    def algorithm(self) -> Algorithm:
        params = [input_param(spec) for spec in self.inputs]
        inp, weight = params[:2]
        o, b, i = hl.Var("o"), hl.Var("b"), hl.Var("i")
        r = hl.RDom([hl.Range(0, self.in_features)], "r")
        wt, acc, out = hl.Func("Wt"), hl.Func("acc"), hl.Func("out")
        wt[o, i] = weight[i, o]
        acc[o, b] = params[2][o] if self.bias else const(halide_type(self.dtype), 0)
        acc[o, b] += inp[r.x, b] * wt[o, r.x]
        out[o, b] = acc[o, b]
        stages = [
            Stage(wt, (self.out_features, self.in_features), consumer="acc", optional=True),
            Stage(acc, (self.out_features, self.batch), rdom=r),
            Stage(out, (self.out_features, self.batch)),
        ]
        return Algorithm(inputs=params, stages=stages, output_shape=self.output.shape)

    def reference(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        y = x.astype(np.float64) @ weight.astype(np.float64).T
        if self.bias:
            y += bias.astype(np.float64)
        return y.astype(self.dtype)


@factory
def fc(batch: int, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32") -> FullyConnected:
    """A fully connected (linear) layer, ``y = x @ W.T + b``.

    >>> op = fc(8, 512, 10)
    >>> [s.shape for s in op.inputs], op.output.shape
    ([(8, 512), (10, 512), (10,)], (8, 10))
    """
    return FullyConnected(batch, in_features, out_features, bias, dtype)
