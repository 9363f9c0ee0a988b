"""Checks of plain arguments (counts, seeds, flags, paths) shared by the public
functions: each raises ``ArgumentError`` naming the argument and what it takes."""

from __future__ import annotations

import os

import numpy as np

from .errors import ArgumentError

#: The most threads a kernel may be given (Halide's thread pool caps lower still).
MAX_THREADS = 1024


def _integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_threads(threads, name: str = "threads") -> int | None:
    """``None`` (every core) or an int from 1 to ``MAX_THREADS``.

    >>> check_threads(4), check_threads(None)
    (4, None)
    """
    if threads is not None and (not _integer(threads) or not 1 <= threads <= MAX_THREADS):
        raise ArgumentError(f"{name} must be None (every core) or an int from 1 to {MAX_THREADS}, got {threads!r}")
    return None if threads is None else int(threads)


def check_seed(seed, name: str = "seed") -> int | None:
    """``None`` (a fresh random seed) or a non-negative int.

    >>> check_seed(0), check_seed(None)
    (0, None)
    """
    if seed is not None and (not _integer(seed) or seed < 0):
        raise ArgumentError(f"{name} must be None or a non-negative int, got {seed!r}")
    return None if seed is None else int(seed)


def check_flag(value, name: str) -> bool:
    """``True`` or ``False`` (NumPy's bools too), nothing merely truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_path(path, name: str = "path") -> str | os.PathLike:
    """A file system path: a non-empty ``str`` or an ``os.PathLike``."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ArgumentError(f"{name} must be a path (a non-empty str or os.PathLike), got {path!r}")
    return path
