"""2-D convolution (NCHW), grouped and depthwise, with optional bias and activation;
and the 1x1 convolution over flattened positions, a matrix product."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import halide as hl
import numpy as np

from .._dtypes import check_dtype, halide_type
from ..errors import OperatorArgumentError
from ._base import Algorithm, Operator, Stage, TensorSpec, check_positive, input_param
from ._common import (check_choice, check_flag, const, conv_output_size, halide_extents, pair, padded_image,
                      set_fields, windows)
from ._registry import factory

ACTIVATIONS = (None, "relu", "relu6")
ACTIVATION_FLOPS = {None: 0, "relu": 1, "relu6": 2}  # per output element


@dataclass(frozen=True)
class Conv2d(Operator):
    """``out[n, co, y, x] = act(bias[co] + sum W[co, ci, ky, kx] * in[n, g*cpg + ci,
    y*sy + ky*dy - py, x*sx + kx*dx - px])`` with zero padding, where ``cpg = c_in /
    groups`` and ``g`` is the group of ``co``. Weights are ``[c_out, c_in/groups, kh, kw]``.

    ``kernel``, ``stride``, ``padding`` and ``dilation`` are stored as (h, w) pairs.
    With ``residual``, an array of the output's shape is added before the activation
    (a residual network's shortcut: ``act(conv(x) + r)``, as engines fuse it).

    Stages: ``Wp`` (optional copy of the weights with c_out innermost, consumed by
    ``acc``), ``padded`` (zero-padded input; a plain copy when padding is 0),
    ``acc`` (reduction with RDom ``r``: r.x over kw, r.y over kh, r.z over c_in/groups),
    ``out`` (acc, plus the residual, through the activation).
    """

    family: ClassVar[str] = "conv2d"
    added_later: ClassVar[tuple[str, ...]] = ("residual",)

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    activation: str | None = None
    dtype: str = "float32"
    residual: bool = False

    def __post_init__(self) -> None:
        check_positive(n=self.n, c_in=self.c_in, h=self.h, w=self.w, c_out=self.c_out, groups=self.groups)
        check_flag(bias=self.bias, residual=self.residual)
        check_choice("activation", self.activation, ACTIVATIONS)
        set_fields(self, n=int(self.n), c_in=int(self.c_in), h=int(self.h), w=int(self.w), c_out=int(self.c_out),
                   kernel=pair("kernel", self.kernel), stride=pair("stride", self.stride),
                   padding=pair("padding", self.padding, minimum=0), dilation=pair("dilation", self.dilation),
                   groups=int(self.groups), bias=bool(self.bias), dtype=check_dtype(self.dtype),
                   residual=bool(self.residual))
        for name, channels in (("c_in", self.c_in), ("c_out", self.c_out)):
            if channels % self.groups:
                raise OperatorArgumentError(f"{name}={channels} is not divisible by groups={self.groups}")
        span = [d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation)]
        padded = [s + 2 * p for s, p in zip((self.h, self.w), self.padding)]
        if span[0] > padded[0] or span[1] > padded[1]:
            raise OperatorArgumentError(
                f"the (dilated) kernel {span[0]}x{span[1]} is larger than the padded input {padded[0]}x{padded[1]}")

    # -- shapes -----------------------------------------------------------------------
    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width."""
        return tuple(conv_output_size(*args) for args in zip((self.h, self.w), self.kernel, self.stride,
                                                                  self.padding, self.dilation))

    @property
    def channels_per_group(self) -> int:
        return self.c_in // self.groups

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        specs = (TensorSpec("input", (self.n, self.c_in, self.h, self.w), self.dtype),
                 TensorSpec("weight", (self.c_out, self.channels_per_group, *self.kernel), self.dtype))
        return specs + _extra_inputs(self)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", (self.n, self.c_out, *self.out_hw), self.dtype)

    @property
    def reduction_length(self) -> int:
        return self.channels_per_group * self.kernel[0] * self.kernel[1] + self.bias + self.residual

    @property
    def flops(self) -> int:
        """Two per multiply-add, one per bias and residual add, one per relu and two per relu6."""
        per_output = 2 * self.channels_per_group * self.kernel[0] * self.kernel[1] + self.bias + self.residual
        per_output += ACTIVATION_FLOPS[self.activation]
        return int(np.prod(self.output.shape)) * per_output

    # -- Halide -----------------------------------------------------------------------
    def algorithm(self) -> Algorithm:
        params = [input_param(spec) for spec in self.inputs]
        image, weight = params[:2]
        t = halide_type(self.dtype)
        x, y, c, n = hl.Var("x"), hl.Var("y"), hl.Var("c"), hl.Var("n")
        # not "ci": Adams2019 names the inner loop of a split of c "ci", and fails on a clash
        kx, ky, ci = hl.Var("kx"), hl.Var("ky"), hl.Var("cin")
        (kh, kw), (sy, sx), (dy, dx) = self.kernel, self.stride, self.dilation
        cpg, out_h, out_w = self.channels_per_group, *self.out_hw
        r = hl.RDom([hl.Range(0, kw), hl.Range(0, kh), hl.Range(0, cpg)], "r")

        padded = padded_image("padded", image, self.inputs[0].shape, self.padding[::-1], const(t, 0), [x, y, c, n])
        wp = hl.Func("Wp")
        wp[c, kx, ky, ci] = weight[kx, ky, ci, c]
        group_base = 0 if self.groups == 1 else (c // (self.c_out // self.groups)) * cpg
        acc = hl.Func("acc")
        acc[x, y, c, n] = params[2][c] if self.bias else const(t, 0)
        acc[x, y, c, n] += wp[c, r.x, r.y, r.z] * padded[x * sx + r.x * dx, y * sy + r.y * dy, group_base + r.z, n]
        out = hl.Func("out")
        out[x, y, c, n] = activate(_plus_residual(self, params, acc[x, y, c, n], [x, y, c, n]), self.activation, t)

        needed = ((out_w - 1) * sx + (kw - 1) * dx + 1, (out_h - 1) * sy + (kh - 1) * dy + 1)
        out_extents = halide_extents(self.output.shape)
        stages = [
            Stage(wp, (self.c_out, kw, kh, cpg), consumer="acc", optional=True),
            Stage(padded, (*needed, self.c_in, self.n)),
            Stage(acc, out_extents, rdom=r),
            Stage(out, out_extents),
        ]
        return Algorithm(inputs=params, stages=stages, output_shape=self.output.shape)

    # -- NumPy ------------------------------------------------------------------------
    def reference(self, x: np.ndarray, weight: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        (ph, pw), g = self.padding, self.groups
        padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = windows(padded, self.kernel, self.stride, self.dilation)  # [n, c_in, oh, ow, kh, kw]
        win = win.reshape(self.n, g, self.channels_per_group, *win.shape[2:])
        wg = weight.astype(np.float64).reshape(g, self.c_out // g, *weight.shape[1:])
        y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(self.output.shape)
        return _finish(self, y, extra)

    def pointwise(self) -> "Conv1x1 | None":
        """The ``Conv1x1`` computing this convolution where it is one (a 1x1 kernel,
        stride 1, no padding, one group: a matrix product over the image's positions,
        whose rows need not be whole vectors), else None. Its arrays are this
        convolution's, reshaped.

        >>> conv2d(1, 64, 13, 13, 1000, k=1, bias=True).pointwise().key
        'conv1x1(n=1,c_in=64,c_out=1000,positions=169,bias=True,activation=None,dtype=float32)'
        """
        if self.kernel != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0) or self.groups != 1:
            return None
        return Conv1x1(self.n, self.c_in, self.c_out, self.h * self.w, self.bias, self.activation, self.dtype,
                       self.residual)


def activate(value: hl.Expr, activation: str | None, t: hl.Type) -> hl.Expr:
    """``value`` through ``activation`` (None, ``"relu"`` or ``"relu6"``), in Halide."""
    if activation == "relu":
        return hl.max(value, const(t, 0))
    if activation == "relu6":
        return hl.clamp(value, const(t, 0), const(t, 6))
    return value


def activated(y: np.ndarray, activation: str | None) -> np.ndarray:
    """``y`` through ``activation``, in NumPy."""
    return y if activation is None else np.clip(y, 0, 6 if activation == "relu6" else None)


def _extra_inputs(op) -> tuple[TensorSpec, ...]:
    """A convolution's optional inputs after its weights: the bias, then the residual."""
    bias = (TensorSpec("bias", (op.c_out,), op.dtype),) if op.bias else ()
    return bias + ((TensorSpec("residual", op.output.shape, op.dtype),) if op.residual else ())


def _plus_residual(op, params: list, value: hl.Expr, at: list) -> hl.Expr:
    """``value``, plus the residual at ``at`` where ``op`` has one (its last input)."""
    return value + params[-1][at] if op.residual else value


def _finish(op, y: np.ndarray, extra: tuple) -> np.ndarray:
    """NumPy: a convolution's sums ``y`` (float64, output shape) with the bias and the
    residual in ``extra`` added, through the activation, in the operator's dtype."""
    extra = list(extra)
    if op.bias:
        y = y + extra.pop(0).astype(np.float64).reshape(op.c_out, *[1] * (y.ndim - 2))
    if op.residual:
        y = y + extra.pop(0).astype(np.float64)
    return activated(y, op.activation).astype(op.dtype)


@dataclass(frozen=True)
class Conv1x1(Operator):
    """``out[n, co, p] = act(bias[co] + sum W[co, ci] * in[n, ci, p])``: a 1x1
    convolution (stride 1, no padding) of an NCHW input viewed as ``[n, c_in, h*w]``,
    so a matrix product per image, ``W @ in[n]``. Weights are ``[c_out, c_in]``.

    Stages: ``Xc`` (optional packed copy of the input, consumed by ``acc``, as
    ``matmul``'s ``Bc``), ``acc`` (from the bias, reduces over c_in with RDom
    ``r``), ``out`` (acc, plus the residual, through the activation). ``residual``
    adds an array of the output's shape before the activation, as ``Conv2d``'s.
    """

    family: ClassVar[str] = "conv1x1"
    added_later: ClassVar[tuple[str, ...]] = ("residual",)

    n: int
    c_in: int
    c_out: int
    positions: int
    bias: bool = False
    activation: str | None = None
    dtype: str = "float32"
    residual: bool = False

    def __post_init__(self) -> None:
        check_positive(n=self.n, c_in=self.c_in, c_out=self.c_out, positions=self.positions)
        check_flag(bias=self.bias, residual=self.residual)
        check_choice("activation", self.activation, ACTIVATIONS)
        set_fields(self, n=int(self.n), c_in=int(self.c_in), c_out=int(self.c_out), positions=int(self.positions),
                   bias=bool(self.bias), dtype=check_dtype(self.dtype), residual=bool(self.residual))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        specs = (TensorSpec("input", (self.n, self.c_in, self.positions), self.dtype),
                 TensorSpec("weight", (self.c_out, self.c_in), self.dtype))
        return specs + _extra_inputs(self)

    @property
    def output(self) -> TensorSpec:
        return TensorSpec("out", (self.n, self.c_out, self.positions), self.dtype)

    @property
    def reduction_length(self) -> int:
        return self.c_in + self.bias + self.residual

    @property
    def flops(self) -> int:
        """As ``Conv2d``'s: two per multiply-add, one per bias and residual add and relu, two per relu6."""
        per_output = 2 * self.c_in + self.bias + self.residual + ACTIVATION_FLOPS[self.activation]
        return self.n * self.c_out * self.positions * per_output

    def algorithm(self) -> Algorithm:
        params = [input_param(spec) for spec in self.inputs]
        image, weight = params[:2]
        t = halide_type(self.dtype)
        p, c, n = hl.Var("p"), hl.Var("c"), hl.Var("n")
        r = hl.RDom([hl.Range(0, self.c_in)], "r")
        xc, acc, out = hl.Func("Xc"), hl.Func("acc"), hl.Func("out")
        xc[p, c, n] = image[p, c, n]
        acc[p, c, n] = params[2][c] if self.bias else const(t, 0)
        acc[p, c, n] += weight[r.x, c] * xc[p, r.x, n]
        out[p, c, n] = activate(_plus_residual(self, params, acc[p, c, n], [p, c, n]), self.activation, t)
        out_extents = halide_extents(self.output.shape)
        stages = [
            Stage(xc, halide_extents(self.inputs[0].shape), consumer="acc", optional=True),
            Stage(acc, out_extents, rdom=r),
            Stage(out, out_extents),
        ]
        return Algorithm(inputs=params, stages=stages, output_shape=self.output.shape)

    def reference(self, x: np.ndarray, weight: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        y = np.einsum("oc,ncp->nop", weight.astype(np.float64), x.astype(np.float64), optimize=True)
        return _finish(self, y, extra)


@factory
def conv2d(n: int, c_in: int, h: int, w: int, c_out: int, k, stride=1, pad=0, dilation=1, groups: int = 1,
           bias: bool = False, activation: str | None = None, dtype: str = "float32",
           residual: bool = False) -> Conv2d:
    """A 2-D convolution over an NCHW input; ``k``, ``stride``, ``pad`` and
    ``dilation`` are an int or an (h, w) pair. ``residual=True`` adds an input of the
    output's shape (after the bias) to the sums before the activation.

    >>> op = conv2d(n=1, c_in=64, h=56, w=56, c_out=64, k=3, pad=1, activation="relu")
    >>> op.output.shape, op.inputs[1].shape
    ((1, 64, 56, 56), (64, 64, 3, 3))
    >>> op == conv2d(1, 64, 56, 56, 64, k=(3, 3), pad=(1, 1), activation="relu")
    True
    """
    return Conv2d(n, c_in, h, w, c_out, k, stride, pad, dilation, groups, bias, activation, dtype, residual)


@factory
def depthwise_conv2d(n: int, c: int, h: int, w: int, k, stride=1, pad=0, dilation=1, bias: bool = False,
                     activation: str | None = None, dtype: str = "float32") -> Conv2d:
    """A depthwise convolution: one filter per channel (groups = c_in = c_out = c).

    >>> op = depthwise_conv2d(1, 32, 112, 112, k=3, stride=2, pad=1)
    >>> op.groups, op.inputs[1].shape, op.output.shape
    (32, (32, 1, 3, 3), (1, 32, 56, 56))
    """
    check_positive(c=c)
    return Conv2d(n, c, h, w, c, k, stride, pad, dilation, c, bias, activation, dtype)


@factory
def conv1x1(n: int, c_in: int, c_out: int, positions: int, bias: bool = False, activation: str | None = None,
            dtype: str = "float32", residual: bool = False) -> Conv1x1:
    """A 1x1 convolution (stride 1, no padding) over ``positions`` flattened image
    positions: ``conv2d(n, c_in, h, w, c_out, k=1)`` on arrays reshaped to
    ``[n, c_in, h*w]`` and ``[c_out, c_in]``, computed as a matrix product.

    >>> op = conv1x1(1, 64, 16, 55 * 55, bias=True, activation="relu")
    >>> [s.shape for s in op.inputs], op.output.shape
    ([(1, 64, 3025), (16, 64), (16,)], (1, 16, 3025))
    """
    return Conv1x1(n, c_in, c_out, positions, bias, activation, dtype, residual)
