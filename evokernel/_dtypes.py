"""The element types evokernel generates code for, by NumPy name and as Halide types."""

from __future__ import annotations

import halide as hl
import numpy as np

from .errors import UnsupportedDtypeError

SUPPORTED_DTYPES = ("float32", "float64")


def check_dtype(dtype) -> str:
    """Return the canonical dtype name, or raise ``UnsupportedDtypeError``.

    ``None`` is refused, not read as NumPy reads it (float64): operators default to
    float32, and a ``None`` that reaches them is a mistake to report, not a choice.

    >>> check_dtype(np.float32), check_dtype("float64")
    ('float32', 'float64')
    """
    name = None
    if dtype is not None:
        try:
            name = np.dtype(dtype).name
        except (TypeError, ValueError):
            pass
    if name not in SUPPORTED_DTYPES:
        raise UnsupportedDtypeError(
            f"unsupported dtype {dtype!r}: evokernel operators support {', '.join(SUPPORTED_DTYPES)} "
            "(dtype defaults to float32)"
        )
    return name


def halide_type(dtype: str) -> hl.Type:
    return {"float32": hl.Float(32), "float64": hl.Float(64)}[check_dtype(dtype)]
