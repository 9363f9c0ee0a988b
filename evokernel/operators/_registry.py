"""The registry of built-in operators: families by name (to rebuild an operator from
its stored arguments) and factories by name (the command line's operators).

A class that sets its own ``family`` registers itself when it is defined; a factory
registers with ``@factory``. Adding a built-in operator is one module and its import
in ``operators/__init__.py``: nothing else lists operators.
"""

from __future__ import annotations

from typing import Callable

_FAMILIES: dict[str, type] = {}
_FACTORIES: dict[str, Callable] = {}


def register_family(cls: type) -> None:
    """Register ``cls`` under its ``family`` (called by ``Operator.__init_subclass__``)."""
    existing = _FAMILIES.get(cls.family)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"operator family {cls.family!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _FAMILIES[cls.family] = cls


def factory(fn: Callable) -> Callable:
    """Register a built-in operator's factory function under its name."""
    _FACTORIES[fn.__name__] = fn
    return fn


def factories() -> dict[str, Callable]:
    """The built-in operators' factories by name (``"conv2d"``, ``"fc"``...)."""
    return dict(_FACTORIES)


def from_dict(data: dict):
    """Rebuild a built-in operator from ``Operator.to_dict()`` data.

    >>> from evokernel.operators import matmul
    >>> from_dict(matmul(4, 5, 6).to_dict()) == matmul(4, 5, 6)
    True
    """
    family = data.get("family") if isinstance(data, dict) else None
    if family not in _FAMILIES:
        raise ValueError(f"cannot rebuild operator family {family!r} (custom operators carry code, not data)")
    args = {k: _tuple(v) for k, v in data.get("args", {}).items()}
    return _FAMILIES[family](**args)


def _tuple(value):
    """JSON lists back to the tuples operators hold."""
    return tuple(_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
