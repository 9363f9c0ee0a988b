"""Loop-nest primitives shared by the CPU and the GPU planners (no Halide here).

A plan is plain data: per stage, where it is computed and, per definition, the
directives Halide will receive and the loop nest they make. Loop names keep Halide's
idiom ``split(x, x, x_t, 64)``: the outer loop keeps the old name, the inner one gets
a suffix (``_t`` tile, ``_i`` inner tile, ``_u`` unrolled, ``_v`` vector lanes,
``_r`` inner reduction split, ``_k`` parallel tasks).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ._genome import StageGene
from ._space import StageSpace


@dataclass(frozen=True)
class TailStrategy:
    """Name of a Halide ``TailStrategy`` (kept as data so plans stay Halide-free)."""

    name: str


@dataclass(frozen=True)
class MemoryType:
    """Name of a Halide ``MemoryType`` (GPU shared memory, for staged producers)."""

    name: str


@dataclass
class Loop:
    name: str
    extent: int
    rvar: bool = False
    site: bool = True  # other stages may be computed at it (not at a loop over parallel tasks)


@dataclass
class Definition:
    """Directives for one definition (pure or update) and its final loop nest."""

    directives: list[tuple] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)  # outermost first


@dataclass
class StagePlan:
    location: int                  # INLINE, ROOT, or an index into the consumer's loops
    at_loop: str | None = None     # the consumer loop named by ``location``
    definitions: list[Definition] = field(default_factory=list)
    gpu: str = ""                  # GPU targets: "kernel", "shared" or "serial" (see ``_gpu``)
    sites: list[Loop] | None = None  # GPU targets: the loops producers may be computed at
    intermediate: "Intermediate | None" = None  # the update's rfactor intermediate, if any
    at_stage: str | None = None    # the stage owning ``at_loop``: the consumer, or its consumer (``host``)

    @property
    def loops(self) -> list[Loop]:
        """The loops other stages may be computed at: those of the last definition,
        less its vector lanes (Halide code computed inside a vectorised loop crashes),
        unrolled loops (the producer's code would be copied once per unrolled
        iteration: compiles of half a minute, for no gain) and the loop over
        parallel tasks (a producer computed per task would span many tiles of the
        loop inside it, fully unrolled where the gene unrolls: builds past the
        compile timeout), and none inside an ``rfactor`` intermediate's loop (the
        intermediate reads the producers there)."""
        if self.sites is not None:
            return self.sites
        if not self.definitions:
            return []
        loops = serial_loops(self.definitions[-1])
        return outside_reduction(loops) if self.intermediate is not None else loops


def serial_loops(d: Definition) -> list[Loop]:
    """``d``'s loops less its vectorised and unrolled ones and its loop over tasks."""
    excluded = {x[1] for x in d.directives if x[0] in ("vectorize", "unroll")}
    return [l for l in d.loops if l.name not in excluded and l.site]


def outside_reduction(loops: list[Loop]) -> list[Loop]:
    return list(itertools.takewhile(lambda l: not l.rvar, loops))


OUTERMOST = "__outermost"  # Halide's name of ``Var.outermost()``, outside a Func's every loop


@dataclass
class Intermediate:
    """The partial reduction ``name = stage.update(0).rfactor([(rvar, lanes)])``:
    computed at the stage's loop ``at_loop`` (``OUTERMOST``: once per realization
    of the stage), its ``lanes`` vectorised, looping over the rest of the
    reduction inside them."""

    name: str
    at_loop: str
    definitions: list[Definition]


def region(stage: StageSpace, inner_loops: list[Loop], outer_loops: list[Loop] = ()) -> tuple[int, ...]:
    """Estimated extents of a stage computed inside ``inner_loops`` of its consumer:
    a variable named like a consumer variable spans the loops of that variable
    inside, or one point if the consumer only loops over it outside (a row's
    statistics computed per row); other variables span their full extent."""
    out = []
    for var, full in zip(stage.vars, stage.extents):
        mine = [l.extent for l in inner_loops if not l.rvar and base_name(l.name) == var]
        if mine:
            out.append(min(full, math.prod(mine)))
        elif any(not l.rvar and base_name(l.name) == var for l in outer_loops):
            out.append(1)
        else:
            out.append(full)
    return tuple(out)


def base_name(loop_name: str) -> str:
    for suffix in ("_t", "_i", "_u", "_v"):
        if loop_name.endswith(suffix):
            return base_name(loop_name[: -len(suffix)])
    return loop_name


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def split_rvars(stage: StageSpace, rsplit: tuple[int, ...]) -> set[str]:
    """The reduction variables ``rsplit`` splits (a factor between 1 and the extent)."""
    factors = fit(rsplit, len(stage.rvars), 1)
    return {name for name, extent, factor in zip(stage.rvars, stage.rextents, factors) if 1 < factor < extent}


def plan_reduction(d: Definition, stage: StageSpace, gene: StageGene) -> list[Loop]:
    splits, split_names = fit(gene.rsplit, len(stage.rvars), 1), split_rvars(stage, gene.rsplit)
    outer, inner = [], []
    for name, extent, factor in zip(stage.rvars, stage.rextents, splits):
        chain = [Loop(name, extent, rvar=True)]
        if name in split_names:
            split(d, chain, factor, "_r", "GuardWithIf")
            inner.append(chain[1])
            if gene.runroll:
                d.directives.append(("unroll", chain[1].name))
        outer.append(chain[0])
    return list(reversed(outer)) + list(reversed(inner))


def split(d: Definition, chain: list[Loop], factor: int, suffix: str, tail: str) -> None:
    old = chain[-1]
    inner = Loop(old.name.replace("$", "_") + suffix, factor, old.rvar)
    d.directives.append(("split", old.name, old.name, inner.name, factor, TailStrategy(tail)))
    chain[-1] = Loop(old.name, ceil_div(old.extent, factor), old.rvar)
    chain.append(inner)


def fit(values: tuple, length: int, default) -> tuple:
    values = tuple(values)[:length]
    return values + (default,) * (length - len(values))
