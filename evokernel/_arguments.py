"""The door of ``tune()``: its arguments checked before anything starts (no cache
lookup, no evaluator), so nonsense is refused at once, naming the argument."""

from __future__ import annotations

import math

import numpy as np
import psutil

from ._checks import check_flag, check_seed, check_threads
from ._format import format_bytes
from .errors import ArgumentError, OperatorArgumentError
from .evaluators import EVALUATORS, Evaluator
from .operators import Operator
from .operators._base import check_addressable
from .store import RECORDS, Records


def check_tune_arguments(operator, *, seed, retune, evaluator, records, threads, progress) -> None:
    """Raise an ``EvokernelError`` naming the first argument of ``tune()`` that
    cannot work (the target, budget and strategy are checked as they are parsed)."""
    if not isinstance(operator, Operator):
        raise ArgumentError(f"operator must be an operator such as ek.operators.matmul(...), "
                            f"got {type(operator).__name__}")
    check_addressable(operator)
    check_memory(operator)
    check_seed(seed)
    check_flag(retune, "retune")
    check_threads(threads)
    if not isinstance(evaluator, Evaluator) and not (isinstance(evaluator, str) and evaluator in EVALUATORS):
        raise ArgumentError(f"evaluator must be one of {', '.join(map(repr, EVALUATORS))} or an "
                            f"ek.evaluators.Evaluator, got {evaluator!r}")
    if not isinstance(records, Records) and not (isinstance(records, str) and records in RECORDS):
        raise ArgumentError(f"records must be one of {', '.join(map(repr, RECORDS))} or an ek.store.Records, "
                            f"got {records!r}")
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise ArgumentError(f"progress must be None, True, False or a callable, got {type(progress).__name__}")


def tuning_footprint(operator: Operator) -> int:
    """Bytes that tuning ``operator`` holds at least: its arrays and the float64
    reference output, in this process and again in the runner's."""
    specs = (*operator.inputs, operator.output)
    arrays = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in specs)
    return 2 * (arrays + 8 * math.prod(operator.output.shape))


def check_memory(operator: Operator) -> None:
    """Raise ``OperatorArgumentError`` if tuning ``operator`` needs more memory than
    this machine has."""
    need, total = tuning_footprint(operator), psutil.virtual_memory().total
    if need > total:
        raise OperatorArgumentError(
            f"{operator.key}: tuning it holds its arrays and a float64 reference in this process and in the "
            f"runner's, {format_bytes(need)}, more than this machine's memory ({format_bytes(total)})")
