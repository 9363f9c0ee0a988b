"""Builders turn genomes into artifacts (compiled objects), as many at once as they can."""

from __future__ import annotations

import abc

from ..codegen import Artifact, build
from ..errors import BuildError
from ..genome import Genome
from ._context import Context
from ._result import Outcome, Result


class Builder(abc.ABC):
    """Compiles candidates. ``parallelism`` builds run at once; the evaluator hands
    over ``parallelism * batch_per_slot`` genomes between two rounds of timing
    (builds differ in length, and a longer batch keeps every slot busy to its end,
    at the price of noticing a passed deadline one batch later)."""

    parallelism: int = 1
    batch_per_slot: int = 1

    def prepare(self, context: Context) -> None:
        """Get ready to build for ``context`` (called before every tuning run, and
        again, without ``close``, when a scheduler moves to another operator)."""
        self.context = context

    @abc.abstractmethod
    def build(self, genomes: list[Genome]) -> list["Artifact | Result"]:
        """Build each genome; a failed build is a ``Result`` (``compile_error`` or
        ``compile_timeout``), never an exception."""

    def close(self) -> None:
        """Release workers; the builder may be prepared again afterwards."""


def build_here(context: Context, genome: Genome) -> "Artifact | Result":
    """Build in this process; a rejected schedule becomes a compile_error Result."""
    try:
        return build(context.operator, context.space, genome, context.target)
    except BuildError as error:
        return Result(genome.key, Outcome.COMPILE_ERROR, message=str(error))


class LocalBuilder(Builder):
    """Builds in this process, one genome at a time."""

    def build(self, genomes):
        return [build_here(self.context, g) for g in genomes]
