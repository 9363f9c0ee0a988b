"""Evaluators by name: the string factory of ``tune(evaluator=...)``."""

from __future__ import annotations

from ..errors import EvokernelError
from ._evaluator import Evaluator, InlineEvaluator, LocalEvaluator
from ._ray import RayEvaluator

#: Name -> a callable making a fresh evaluator. Registering one is one line.
EVALUATORS = {"ray": RayEvaluator, "local": LocalEvaluator, "inline": InlineEvaluator}


def create_evaluator(kind: "str | Evaluator") -> Evaluator:
    """``"ray"`` (parallel builds on the local Ray instance or ``$RAY_ADDRESS``),
    ``"local"``, ``"inline"`` or any registered name; an ``Evaluator`` instance is
    returned as is.

    >>> type(create_evaluator("local")).__name__
    'LocalEvaluator'
    """
    if isinstance(kind, Evaluator):
        return kind
    if not isinstance(kind, str) or kind not in EVALUATORS:
        raise EvokernelError(f"unknown evaluator {kind!r}: choose one of {', '.join(map(repr, EVALUATORS))}, "
                             "or pass an ek.evaluators.Evaluator")
    return EVALUATORS[kind]()
