"""The schedule space of an algorithm: its stages, loops and extents, as plain data.

Derived once per tuning run from a freshly built ``Algorithm``; genomes are sampled,
varied and repaired against it, and decoded onto other fresh copies of the algorithm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import halide as hl

from ..operators._base import Algorithm

_CONSTANT = re.compile(r":\s*(-?\d+)>$")


@dataclass(frozen=True)
class StageSpace:
    """One stage: pure variables (Halide order) with extents, reduction variables of
    its update with extents, and where it may be computed. ``readers`` are the
    stages other than ``consumer`` that read it too (softmax's ``exps`` feeds both
    the row sums and the output): it must exist wherever they are computed."""

    name: str
    vars: tuple[str, ...]
    extents: tuple[int, ...]
    rvars: tuple[str, ...] = ()
    rextents: tuple[int, ...] = ()
    consumer: str | None = None
    is_output: bool = False
    optional: bool = False
    readers: tuple[str, ...] = ()

    @property
    def has_update(self) -> bool:
        return bool(self.rvars)

    @property
    def can_inline(self) -> bool:
        return not self.is_output and not self.has_update

    @property
    def dims(self) -> int:
        return len(self.vars)


@dataclass(frozen=True)
class ScheduleSpace:
    """Every stage of an algorithm, producers first, plus the machine facts a
    schedule depends on (vector lanes of the dtype, threads, whether the target is
    a GPU: then the same genes decode onto GPU blocks and threads, and the vector
    registers its templates' register tiles fill)."""

    stages: tuple[StageSpace, ...]
    lanes: int
    threads: int
    gpu: bool = False
    registers: int = 16

    @classmethod
    def from_algorithm(cls, algorithm: Algorithm, lanes: int, threads: int, gpu: bool = False,
                       registers: int = 16) -> "ScheduleSpace":
        names = [s.name for s in algorithm.stages]
        stages = []
        for i, stage in enumerate(algorithm.stages):
            is_output = i == len(names) - 1
            consumer = None if is_output else (stage.consumer or names[i + 1])
            rvars, rextents = _reduction(stage.rdom)
            stages.append(StageSpace(
                name=stage.name,
                vars=tuple(a.name() for a in stage.func.args()),
                extents=tuple(int(e) for e in stage.extents),
                rvars=rvars, rextents=rextents, consumer=consumer,
                is_output=is_output, optional=stage.optional,
                readers=tuple(r for r in _readers(stage, algorithm.stages) if r != consumer)))
        return cls(tuple(stages), max(1, int(lanes)), max(1, int(threads)), bool(gpu), max(1, int(registers)))

    @classmethod
    def of(cls, operator, target, threads: int) -> "ScheduleSpace":
        """The space of ``operator`` (a fresh algorithm) on ``target`` (a ``Target``):
        its vector lanes for the operator's dtype and vector registers, and GPU
        mappings on a GPU."""
        return cls.from_algorithm(operator.algorithm(), target.natural_vector_size(operator.dtype), threads,
                                  gpu=target.is_gpu, registers=target.vector_registers)

    def stage(self, name: str) -> StageSpace:
        return next(s for s in self.stages if s.name == name)

    def index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.stages) if s.name == name)


def _readers(producer, stages) -> list[str]:
    """Names of the stages whose definitions call ``producer``'s Func."""
    call = re.compile(r"(?<![\w$])" + re.escape(producer.func.name()) + r"\(")
    return [s.name for s in stages if s is not producer and any(call.search(text) for text in _definitions(s.func))]


def _definitions(func: hl.Func) -> list[str]:
    texts = [repr(v) for v in func.values()]
    for i in range(func.num_update_definitions()):
        texts += [repr(v) for v in (*func.update_values(i), *func.update_args(i))]
    return texts


def _reduction(rdom: hl.RDom | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if rdom is None:
        return (), ()
    dims = [rdom[i] for i in range(rdom.dimensions())]
    return tuple(r.name() for r in dims), tuple(_constant(r.extent()) for r in dims)


def _constant(expr: hl.Expr) -> int:
    match = _CONSTANT.search(repr(expr))
    if not match:
        raise ValueError(f"reduction extents must be constants, got {expr!r}")
    return int(match.group(1))
