"""2-D max and average pooling (NCHW)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import halide as hl
import numpy as np

from .._dtypes import check_dtype, halide_type
from ..errors import OperatorArgumentError
from ._base import Algorithm, Operator, Stage, TensorSpec, check_positive, input_param
from ._common import check_choice, check_flag, const, conv_output_size, halide_extents, pair, padded_image, set_fields, windows
from ._registry import factory

METHODS = ("max", "avg")


@dataclass(frozen=True)
class Pool2d(Operator):
    """Max or average pooling over (h, w) windows of an NCHW input.

    Max pooling pads with -inf; average pooling pads with zeros and divides by the
    whole window area (PyTorch's default ``count_include_pad=True``). ``kernel``,
    ``stride`` (default: the kernel) and ``padding`` are stored as (h, w) pairs.
    ``ceil_mode`` (max pooling only, as PyTorch's and Caffe's: SqueezeNet uses it)
    rounds the output size up, the extra windows reaching past the far edge.

    Stages: ``padded`` (a plain copy when padding is 0), ``acc`` (max or sum over
    RDom ``r``: r.x over the window width, r.y over its height), ``out`` (acc, or
    acc times 1/area).
    """

    family: ClassVar[str] = "pool2d"

    method: str
    n: int
    c: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    dtype: str = "float32"
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        check_choice("pooling method", self.method, METHODS)
        check_flag(ceil_mode=self.ceil_mode)
        if self.ceil_mode and self.method != "max":
            raise OperatorArgumentError("ceil_mode is supported for max pooling only (frameworks disagree on the "
                                        "average's divisor at the ragged edge)")
        check_positive(n=self.n, c=self.c, h=self.h, w=self.w)
        kernel = pair("kernel", self.kernel)
        stride = kernel if self.stride is None else pair("stride", self.stride)
        set_fields(self, n=int(self.n), c=int(self.c), h=int(self.h), w=int(self.w), kernel=kernel, stride=stride,
                   padding=pair("padding", self.padding, minimum=0), dtype=check_dtype(self.dtype),
                   ceil_mode=bool(self.ceil_mode))
        for axis, k, p, size in zip("hw", kernel, self.padding, (self.h, self.w)):
            if 2 * p > k:
                raise OperatorArgumentError(f"padding {p} along {axis} is more than half the kernel size {k}")
            if k > size + 2 * p:
                raise OperatorArgumentError(f"kernel {k} along {axis} is larger than the padded input {size + 2 * p}")

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width (rounded up in ceil mode, where the last window
        must still start inside the input or its near padding, as in PyTorch)."""
        sizes = []
        for size, k, s, p in zip((self.h, self.w), self.kernel, self.stride, self.padding):
            out = conv_output_size(size, k, s, p)
            if self.ceil_mode and (size + 2 * p - k) % s and out * s < size + p:
                out += 1
            sizes.append(out)
        return tuple(sizes)

    @property
    def far_padding(self) -> tuple[int, int]:
        """Padding the windows reach past the bottom and right edges (h, w):
        ``padding``, plus what ceil mode adds."""
        return tuple((o - 1) * s + k - size - p for o, s, k, size, p in
                     zip(self.out_hw, self.stride, self.kernel, (self.h, self.w), self.padding))

    @property
    def area(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("input", (self.n, self.c, self.h, self.w), self.dtype),)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", (self.n, self.c, *self.out_hw), self.dtype)

    @property
    def reduction_length(self) -> int:
        return self.area

    @property
    def flops(self) -> int:
        """One per window element (a max or an add), plus the scaling for avg."""
        return int(np.prod(self.output.shape)) * (self.area + (self.method == "avg"))

    def algorithm(self) -> Algorithm:
        (image,) = params = [input_param(spec) for spec in self.inputs]
        t = halide_type(self.dtype)
        x, y, c, n = hl.Var("x"), hl.Var("y"), hl.Var("c"), hl.Var("n")
        (kh, kw), (sy, sx) = self.kernel, self.stride
        r = hl.RDom([hl.Range(0, kw), hl.Range(0, kh)], "r")
        is_max = self.method == "max"
        pad_value = t.min() if is_max else const(t, 0)  # t.min() is -inf for floats

        padded = padded_image("padded", image, self.inputs[0].shape, self.padding[::-1], pad_value, [x, y, c, n],
                              far_edge=self.ceil_mode)
        acc, out = hl.Func("acc"), hl.Func("out")
        window = padded[x * sx + r.x, y * sy + r.y, c, n]
        acc[x, y, c, n] = pad_value
        if is_max:
            acc[x, y, c, n] = hl.max(acc[x, y, c, n], window)
        else:
            acc[x, y, c, n] += window
        out[x, y, c, n] = acc[x, y, c, n] if is_max else acc[x, y, c, n] * const(t, 1.0 / self.area)

        out_h, out_w = self.out_hw
        needed = ((out_w - 1) * sx + kw, (out_h - 1) * sy + kh)
        out_extents = halide_extents(self.output.shape)
        stages = [Stage(padded, (*needed, self.c, self.n)), Stage(acc, out_extents, rdom=r), Stage(out, out_extents)]
        return Algorithm(inputs=params, stages=stages, output_shape=self.output.shape)

    def reference(self, x: np.ndarray) -> np.ndarray:
        (ph, pw), (fh, fw), is_max = self.padding, self.far_padding, self.method == "max"
        padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, max(ph, fh)), (pw, max(pw, fw))),
                        constant_values=-np.inf if is_max else 0.0)
        win = windows(padded, self.kernel, self.stride)
        y = win.max(axis=(-2, -1)) if is_max else win.sum(axis=(-2, -1)) / self.area
        return y.astype(self.dtype)


@factory
def max_pool2d(n: int, c: int, h: int, w: int, k, stride=None, pad=0, dtype: str = "float32",
               ceil_mode: bool = False) -> Pool2d:
    """Max pooling; ``k``, ``stride`` (default ``k``) and ``pad`` are an int or an (h, w) pair;
    ``ceil_mode`` rounds the output size up.

    >>> op = max_pool2d(1, 64, 112, 112, k=3, stride=2, pad=1)
    >>> op.output.shape, op.key
    ((1, 64, 56, 56), 'pool2d(method=max,n=1,c=64,h=112,w=112,kernel=3x3,stride=2x2,padding=1x1,dtype=float32,ceil_mode=False)')
    >>> max_pool2d(1, 96, 56, 56, k=3, stride=2, ceil_mode=True).output.shape
    (1, 96, 28, 28)
    """
    return Pool2d("max", n, c, h, w, k, stride, pad, dtype, ceil_mode)


@factory
def avg_pool2d(n: int, c: int, h: int, w: int, k, stride=None, pad=0, dtype: str = "float32") -> Pool2d:
    """Average pooling (padding counts towards the window area, as in PyTorch).

    >>> avg_pool2d(1, 512, 7, 7, k=7).output.shape
    (1, 512, 1, 1)
    """
    return Pool2d("avg", n, c, h, w, k, stride, pad, dtype)
