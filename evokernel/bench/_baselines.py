"""NumPy and PyTorch versions of the operators, the library baselines.

A baseline is a factory ``(op, inputs, threads) -> call``: ``call()`` computes the
operator's output on the bound ``inputs`` (writing into a preallocated array where
the library allows it) and returns it as an array or tensor; the factory returns
``None`` when the library has no equivalent. PyTorch is optional: without it,
``torch_baseline`` returns ``None``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..operators import Add, Conv1x1, Conv2d, FullyConnected, MatMul, Operator, Pool2d, Relu, Relu6, Softmax

Call = Callable[[], object]


def numpy_baseline(op: Operator, inputs: Sequence[np.ndarray], threads: int) -> Call | None:
    """The operator in NumPy (BLAS for the products; NumPy picks its own threads).

    >>> from evokernel import operators
    >>> op = operators.conv2d(1, 3, 8, 8, 4, 3, pad=1, bias=True, activation="relu")
    >>> x = op.random_inputs(np.random.default_rng(0))
    >>> bool(np.allclose(numpy_baseline(op, x, 1)(), op.reference(*x), atol=1e-5))
    True
    """
    fn = _numpy_function(op)
    return None if fn is None else lambda: fn(*inputs)


def _plus_residual(op: Operator, make: Callable, activate: Callable) -> Callable | None:
    """A convolution with a residual input (its last) as ``make`` builds the same
    convolution without it and without its activation, then the residual added and
    ``activate(y, activation)``; None where ``make`` has no such convolution."""
    base = make(replace(op, residual=False, activation=None))
    if base is None:
        return None

    def call(*args):
        y = base(*args[:-1])
        y += args[-1]
        return activate(y, op.activation)
    return call


def _numpy_function(op: Operator) -> Callable[..., np.ndarray] | None:
    if getattr(op, "residual", False):
        return _plus_residual(op, _numpy_function, lambda y, activation: _numpy_epilogue(y, None, activation))
    out = np.empty(op.output.shape, op.output.dtype)
    if isinstance(op, MatMul):
        return lambda a, b: np.matmul(a, b, out=out)
    if isinstance(op, FullyConnected):
        return lambda x, w, b=None: np.matmul(x, w.T, out=out) if b is None else np.add(
            np.matmul(x, w.T, out=out), b, out=out)
    if isinstance(op, Conv2d):
        return _numpy_conv(op)
    if isinstance(op, Conv1x1):
        return lambda x, w, b=None: _numpy_epilogue(np.matmul(w, x, out=out), b, op.activation)
    if isinstance(op, Pool2d):
        return _numpy_pool(op)
    if isinstance(op, Relu):
        return lambda x: np.maximum(x, 0, out=out)
    if isinstance(op, Relu6):
        return lambda x: np.clip(x, 0, 6, out=out)
    if isinstance(op, Add):
        return lambda a, b: np.add(a, b, out=out)
    if isinstance(op, Softmax):
        def softmax(x):
            np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
            np.exp(out, out=out)
            return np.divide(out, out.sum(axis=-1, keepdims=True), out=out)
        return softmax
    return None


def _windows(op, x: np.ndarray, pad_value: float) -> np.ndarray:
    """[n, c, oh, ow, kh, kw] windows of the padded input (a view of it). Max
    pooling in ceil mode may reach further past the far edges (``far_padding``)."""
    (ph, pw), (sy, sx) = op.padding, op.stride
    (fh, fw) = getattr(op, "far_padding", op.padding)
    (dy, dx) = getattr(op, "dilation", (1, 1))
    span = [d * (k - 1) + 1 for k, d in zip(op.kernel, (dy, dx))]
    pads = ((0, 0), (0, 0), (ph, max(ph, fh)), (pw, max(pw, fw)))
    padded = np.pad(x, pads, constant_values=pad_value) if any(map(any, pads)) else x
    win = sliding_window_view(padded, span, axis=(2, 3))
    oh, ow = op.out_hw
    return win[:, :, : (oh - 1) * sy + 1 : sy, : (ow - 1) * sx + 1 : sx, ::dy, ::dx]


def _numpy_conv(op: Conv2d) -> Callable[..., np.ndarray] | None:
    depthwise = op.channels_per_group == 1 and op.c_out == op.c_in
    if op.groups != 1 and not depthwise:
        return None

    def conv(x, w, b=None):
        win = _windows(op, x, 0.0)
        if depthwise:  # one 3x3 (say) filter per channel: a sum of shifted, scaled views
            y = np.zeros(op.output.shape, op.dtype)
            for i in range(op.kernel[0]):
                for j in range(op.kernel[1]):
                    y += win[..., i, j] * w[None, :, 0, i, j, None, None]
        else:  # im2col by tensordot: one BLAS product
            y = np.tensordot(w, win, axes=([1, 2, 3], [1, 4, 5])).transpose(1, 0, 2, 3)
        return _numpy_epilogue(y, b, op.activation)
    return conv


def _numpy_epilogue(y: np.ndarray, bias: np.ndarray | None, activation: str | None) -> np.ndarray:
    """``y`` (channels at axis 1, any rank), plus ``bias`` per channel, through ``activation``, in place."""
    if bias is not None:
        y += bias.reshape(-1, *[1] * (y.ndim - 2))
    if activation == "relu":
        np.maximum(y, 0, out=y)
    elif activation == "relu6":
        np.clip(y, 0, 6, out=y)
    return y


def _numpy_pool(op: Pool2d) -> Callable[..., np.ndarray]:
    """Elementwise max (or sum) of the kernel's shifted, strided views: far faster
    in NumPy than reducing a window view over two strided axes."""
    is_max = op.method == "max"

    def pool(x):
        win = _windows(op, x, -np.inf if is_max else 0.0)
        y = win[..., 0, 0].copy()
        for i in range(op.kernel[0]):
            for j in range(op.kernel[1]):
                if i or j:
                    (np.maximum if is_max else np.add)(y, win[..., i, j], out=y)
        return y if is_max else np.multiply(y, 1.0 / op.area, out=y)
    return pool


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_baseline(op: Operator, inputs: Sequence[np.ndarray], threads: int) -> Call | None:
    """The operator in PyTorch (CPU, ``threads`` threads), on tensors that share
    the input arrays' memory; ``None`` without PyTorch or an equivalent.

    >>> from evokernel import operators
    >>> op = operators.max_pool2d(1, 2, 4, 4, 2)
    >>> x = op.random_inputs(np.random.default_rng(0))
    >>> f = torch_baseline(op, x, 1)
    >>> f is None or bool(np.array_equal(np.asarray(f()), op.reference(*x)))
    True
    """
    if not torch_available():
        return None
    import torch

    torch.set_num_threads(threads)
    fn = _torch_function(op, torch.from_numpy(np.empty(op.output.shape, op.output.dtype)))
    if fn is None:
        return None
    tensors = [torch.from_numpy(a) for a in inputs]
    return lambda: fn(*tensors)


def _torch_function(op: Operator, out) -> Callable | None:
    import torch
    import torch.nn.functional as F

    if getattr(op, "residual", False):
        return _plus_residual(op, lambda base: _torch_function(base, out),
                              lambda y, activation: _activate(y, activation, 6.0 if activation == "relu6" else None))

    if isinstance(op, MatMul):
        return lambda a, b: torch.matmul(a, b, out=out)
    if isinstance(op, FullyConnected):
        return lambda x, w, b=None: torch.matmul(x, w.t(), out=out) if b is None else torch.addmm(
            b, x, w.t(), out=out)
    if isinstance(op, Conv2d):
        top = 6.0 if op.activation == "relu6" else None
        return lambda x, w, b=None: _activate(F.conv2d(x, w, b, op.stride, op.padding, op.dilation, op.groups),
                                              op.activation, top)
    if isinstance(op, Conv1x1):
        top = 6.0 if op.activation == "relu6" else None

        def conv1x1(x, w, b=None):  # W @ x[n] for every image, the bias added in the same call
            if b is None:
                return _activate(torch.matmul(w, x, out=out), op.activation, top)
            n = x.shape[0]
            return _activate(torch.baddbmm(b[:, None].expand(n, -1, -1), w.expand(n, -1, -1), x, out=out),
                             op.activation, top)
        return conv1x1
    if isinstance(op, Pool2d) and op.method == "max":
        return lambda x: F.max_pool2d(x, op.kernel, op.stride, op.padding, ceil_mode=op.ceil_mode)
    if isinstance(op, Pool2d):
        return lambda x: F.avg_pool2d(x, op.kernel, op.stride, op.padding, count_include_pad=True)
    if isinstance(op, (Relu, Relu6)):
        return lambda x: torch.clamp(x, 0.0, 6.0 if isinstance(op, Relu6) else None, out=out)
    if isinstance(op, Add):
        return lambda a, b: torch.add(a, b, out=out)
    if isinstance(op, Softmax):
        return lambda x: torch.softmax(x, dim=-1)
    return None


def _activate(y, activation: str | None, top: float | None):
    return y if activation is None else y.clamp_(0.0, top)
