"""What a search may learn from before it starts: the task, and the evaluations
recorded before it (the seam between the records, kept by ``evokernel.store``
one floor up, and the strategies here, which never import them).

``tune()`` hands every strategy an ``Experience`` before ``start``; a strategy
that learns (``"ga+model"``) reads ``past()``, the others ignore it. Like TVM
meta_schedule's database seam, the strategy sees rows, not the store: any
object with an operator key, a genome and a result is an ``Evaluation``
(``ek.store.Record`` is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from ..evaluators import Result
from ..genome import Genome
from ..operators import Operator
from ..target import Target


class Evaluation(Protocol):
    """One recorded evaluation: the operator's key, the genome, its result."""

    operator: str
    genome: Genome
    result: Result


def _nothing() -> Iterable[Evaluation]:
    return ()


@dataclass(frozen=True)
class Experience:
    """The operator and target being tuned, and ``past``: a callable returning the
    evaluations recorded before this run that a model may learn from (every
    operator of the family, on this target, measured on this machine with these
    versions), read only by a strategy that wants them.

    >>> import evokernel as ek
    >>> e = Experience(ek.operators.relu(8), ek.Target.parse("host"))
    >>> list(e.past())
    []
    """

    operator: Operator
    target: Target
    past: Callable[[], Iterable[Evaluation]] = field(default=_nothing, compare=False)
