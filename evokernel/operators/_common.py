"""Small helpers the operator modules share: argument checks and Halide idioms."""

from __future__ import annotations

from typing import Sequence

import halide as hl
import numpy as np

from ..errors import OperatorArgumentError

HALIDE_DIM_NAMES = ("x", "y", "z", "w")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``, as a pair of Python ints.

    >>> pair("kernel", 3), pair("stride", (2, 1))
    ((3, 3), (2, 1))
    """
    values = (value, value) if _is_int(value) else value
    if not isinstance(values, (tuple, list)) or len(values) != 2 or not all(_is_int(v) for v in values):
        raise OperatorArgumentError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise OperatorArgumentError(f"{name} must be >= {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def shape_arg(name: str, shape, max_rank: int = 4) -> tuple[int, ...]:
    """An int or a tuple of 1..``max_rank`` positive ints, as a tuple of Python ints.

    >>> shape_arg("shape", 5), shape_arg("shape", [2, 3])
    ((5,), (2, 3))
    """
    dims = (shape,) if _is_int(shape) else shape
    if not isinstance(dims, (tuple, list)) or not all(_is_int(d) for d in dims):
        raise OperatorArgumentError(f"{name} must be an int or a tuple of ints, got {shape!r}")
    if not 1 <= len(dims) <= max_rank:
        raise OperatorArgumentError(f"{name} must have rank 1 to {max_rank}, got rank {len(dims)}: {shape!r}")
    if min(dims) <= 0:
        raise OperatorArgumentError(f"{name} must have positive sizes, got {shape!r}")
    return tuple(int(d) for d in dims)


def check_flag(**flags) -> None:
    """Raise ``OperatorArgumentError`` unless every value is a bool."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise OperatorArgumentError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``OperatorArgumentError`` unless ``value`` is one of ``choices``."""
    if not (value is None or isinstance(value, str)) or value not in choices:
        raise OperatorArgumentError(f"unknown {name} {value!r}: expected one of {', '.join(map(repr, choices))}")


def set_fields(obj, **values) -> None:
    """Assign canonical values to fields of a frozen dataclass in ``__post_init__``."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def halide_vars(rank: int) -> list[hl.Var]:
    """Pure Vars for an array of ``rank`` dims, in Halide order: x, y, z, w."""
    return [hl.Var(name) for name in HALIDE_DIM_NAMES[:rank]]


def halide_extents(shape: Sequence[int]) -> tuple[int, ...]:
    """A NumPy shape as Halide loop extents (dim 0 first)."""
    return tuple(int(s) for s in reversed(tuple(shape)))


def const(t: hl.Type, value: float) -> hl.Expr:
    """A constant of type ``t``: Halide reads a bare Python float as float32."""
    return hl.cast(t, hl.f64(value))


def padded_image(name: str, image: hl.ImageParam, shape: Sequence[int], pads: tuple[int, int],
                 value: hl.Expr, args: Sequence[hl.Var], far_edge: bool = False) -> hl.Func:
    """``name(x, y, ...)``: ``image`` shifted by ``pads`` (on x, y) with ``value`` outside.

    ``shape`` is the NumPy shape of ``image``; x and y are its last two axes. With no
    padding (and no reads past the far edge: ``far_edge``) the Func is a plain copy,
    still a Func a schedule may inline.
    """
    func = hl.Func(name)
    width, height = int(shape[-1]), int(shape[-2])
    (px, py), (x, y, *rest) = pads, args
    if px == 0 and py == 0 and not far_edge:
        func[args] = image[args]
        return func
    inside = (x >= px) & (x < width + px) & (y >= py) & (y < height + py)
    clamped = image[(hl.clamp(x - px, 0, width - 1), hl.clamp(y - py, 0, height - 1), *rest)]
    func[args] = hl.select(inside, clamped, value)
    return func


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a strided, dilated, padded window along one axis.

    >>> conv_output_size(56, 3, 1, 1), conv_output_size(7, 3, 2, 0), conv_output_size(10, 3, 1, 0, 2)
    (56, 3, 6)
    """
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """A read-only view ``[..., out_h, out_w, kh, kw]`` of the windows over the last
    two axes of an (already padded) array."""
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    view = np.lib.stride_tricks.sliding_window_view(x, span, axis=(-2, -1))
    return view[..., :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]
