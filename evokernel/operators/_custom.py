"""User-defined operators: your Halide algorithm and NumPy reference, tuned like ours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import halide as hl
import numpy as np

from .._dtypes import check_dtype
from ..errors import OperatorArgumentError
from ._base import Algorithm, Operator, Stage, TensorSpec, check_non_negative, check_positive, input_param
from ._common import halide_extents, set_fields, shape_arg

AlgorithmFn = Callable[[list[hl.ImageParam]], "hl.Func | list[Stage]"]


@dataclass(frozen=True)
class CustomOperator(Operator):
    """An operator defined by two functions. It is a value like the others: equal
    name, shapes and dtype make equal operators and an equal ``key``; the functions
    (and ``flops``) are not compared, so give different algorithms different names.

    ``algorithm_fn`` receives the input ImageParams (bounds and strides already
    fixed) and returns either the output ``hl.Func`` (one stage over the output
    shape) or a list of ``Stage`` in producer-to-consumer order, output last.
    ``reference_fn`` computes the same from NumPy arrays.
    """

    family: ClassVar[str] = "custom"
    rebuildable: ClassVar[bool] = False

    name: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    output_shape: tuple[int, ...]
    algorithm_fn: AlgorithmFn = field(compare=False, repr=False)
    reference_fn: Callable[..., np.ndarray] = field(compare=False, repr=False)
    flops: int = field(default=0, compare=False)
    reduction_length: int = field(default=1, compare=False)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_identifier("operator name", self.name)
        if isinstance(self.input_shapes, (str, bytes)) or not isinstance(self.input_shapes, Sequence) or \
                not self.input_shapes:
            raise OperatorArgumentError(f"inputs must be a non-empty list of (name, shape) pairs, "
                                        f"got {self.input_shapes!r}")
        inputs = tuple(_input_pair(item) for item in self.input_shapes)
        names = [n for n, _ in inputs]
        if len(set(names)) != len(names):
            raise OperatorArgumentError(f"input names must be distinct, got {names}")
        for label, fn in (("algorithm", self.algorithm_fn), ("reference", self.reference_fn)):
            if not callable(fn):
                raise OperatorArgumentError(f"{label} must be a function, got {fn!r}")
        check_non_negative(flops=self.flops)
        check_positive(reduction_length=self.reduction_length)
        set_fields(self, input_shapes=inputs, output_shape=shape_arg("output_shape", self.output_shape),
                   flops=int(self.flops), reduction_length=int(self.reduction_length), dtype=check_dtype(self.dtype))

    @property
    def key(self) -> str:
        shapes = ",".join(f"{n}={'x'.join(map(str, s))}" for n, s in self.input_shapes)
        return f"custom:{self.name}({shapes},out={'x'.join(map(str, self.output_shape))},dtype={self.dtype})"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(n, s, self.dtype) for n, s in self.input_shapes)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", self.output_shape, self.dtype)

    def algorithm(self) -> Algorithm:
        params = [input_param(spec) for spec in self.inputs]
        result = self.algorithm_fn(params)
        if isinstance(result, hl.Func):
            stages = [Stage(result, halide_extents(self.output_shape))]
        elif isinstance(result, (list, tuple)) and result and all(isinstance(s, Stage) for s in result):
            stages = list(result)
        else:
            raise OperatorArgumentError(
                f"custom operator {self.name!r}: algorithm must return an hl.Func or a list of Stage, got {result!r}")
        if stages[-1].func.dimensions() != len(self.output_shape):
            raise OperatorArgumentError(
                f"custom operator {self.name!r}: the output Func has {stages[-1].func.dimensions()} dimensions, "
                f"output_shape {self.output_shape} has {len(self.output_shape)}")
        return Algorithm(inputs=params, stages=stages, output_shape=self.output_shape)

    def reference(self, *arrays: np.ndarray) -> np.ndarray:
        result = np.asarray(self.reference_fn(*arrays))
        if result.shape != self.output_shape:
            raise OperatorArgumentError(
                f"custom operator {self.name!r}: reference returned shape {result.shape}, "
                f"expected {self.output_shape}")
        return result.astype(self.dtype)


def _check_identifier(label: str, name) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise OperatorArgumentError(f"{label} must be a Python identifier, got {name!r}")


def _input_pair(item) -> tuple[str, tuple[int, ...]]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise OperatorArgumentError(f"each input must be a (name, shape) pair, got {item!r}")
    name, shape = item
    _check_identifier("input name", name)
    return name, shape_arg(f"shape of input {name!r}", shape)


def custom(name: str, inputs, output_shape, algorithm: AlgorithmFn, reference: Callable[..., np.ndarray],
           flops: int = 0, dtype: str = "float32", reduction_length: int = 1) -> CustomOperator:
    """A user-defined operator. ``inputs`` lists (name, shape) pairs in call order;
    ``algorithm(params)`` returns the output Func (or a list of Stages);
    ``reference(*arrays)`` the expected result. ``reduction_length`` (terms summed
    into one output element) widens the check tolerance.

    >>> import halide as hl
    >>> def blur(params):
    ...     (src,), i, out = params, hl.Var("i"), hl.Func("blur3")
    ...     out[i] = (src[i] + src[i + 1] + src[i + 2]) * hl.f32(1 / 3)
    ...     return out
    >>> op = custom("blur3", [("x", 1000)], 998, blur,
    ...             lambda a: (a[:-2] + a[1:-1] + a[2:]) / 3, flops=3 * 998, reduction_length=3)
    >>> op.key
    'custom:blur3(x=1000,out=998,dtype=float32)'
    >>> [s.name for s in op.algorithm().stages]
    ['blur3']
    """
    return CustomOperator(name, inputs, output_shape, algorithm, reference, flops, reduction_length, dtype)
