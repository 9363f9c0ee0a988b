"""From genome to loop nests, in plain Python (no Halide).

``plan(space, genome)`` turns every gene into the list of scheduling directives
Halide will receive, and the loop nest they produce. Every factor is clamped to what
the loop can take here, so any gene values give a well-formed plan: the plan is the
single place where a genome acquires meaning, for decoding, printing and repairing.

The CPU planner is here; for a GPU target (``space.gpu``) the same genes are read
as GPU mappings (``_gpu``). Both build on the loop-nest primitives of ``_loops``.
"""

from __future__ import annotations

import math

from ._genome import INLINE, ROOT, Genome, StageGene
from ._gpu import plan_gpu_stage
from ._loops import (OUTERMOST, Definition, Intermediate, Loop, StagePlan, ceil_div, fit, outside_reduction,
                     plan_reduction, region, serial_loops, split, split_rvars)
from ._space import ScheduleSpace, StageSpace

#: Bumped whenever a genome decodes to another schedule than before: timings
#: recorded under another encoding are not trusted for resuming a search.
SCHEDULE_ENCODING = 8


def plan(space: ScheduleSpace, genome: Genome) -> list[StagePlan]:
    """Plan every stage, consumers before producers; returns plans in space order."""
    plan_stage = plan_gpu_stage if space.gpu else _plan_stage
    plans: dict[int, StagePlan] = {}
    for index in reversed(range(len(space.stages))):
        stage, gene = space.stages[index], genome.stages[index]
        plans[index] = plan_stage(space, stage, gene, plans)
    return [plans[i] for i in range(len(space.stages))]


def _plan_stage(space: ScheduleSpace, stage: StageSpace, gene: StageGene,
                plans: dict[int, StagePlan]) -> StagePlan:
    host = None
    if stage.is_output:
        location, at_loop, extents = ROOT, None, stage.extents
    elif gene.location == INLINE and stage.can_inline:
        return StagePlan(INLINE)
    elif gene.location <= ROOT:
        location, at_loop, extents = ROOT, None, stage.extents
    else:
        host, sites = _sites(space, stage, gene, plans)
        if not sites:
            location, at_loop, extents = ROOT, None, stage.extents
        else:
            at = min(gene.location, len(sites)) - 1
            location, at_loop = at + 1, sites[at].name
            every = plans[space.index(host)].definitions[-1].loops  # with the vector and unrolled loops
            split = next(i for i, l in enumerate(every) if l.name == at_loop) + 1
            extents = region(stage, every[split:], every[:split])
    parallel = gene.parallel if location == ROOT else 0
    tasks = space.threads * gene.tasks if parallel else 0
    exact = at_loop is None  # at root, a stage's extents are known; inside a consumer, estimated
    result = StagePlan(location, at_loop, [_plan_definition(stage, gene, extents, False, parallel, tasks, exact)],
                       at_stage=host if at_loop else None)
    if stage.vars and not stage.is_output and (not exact or math.prod(extents) == 1):
        result.definitions[0].directives[:0] = _storage(stage, gene, exact)
    if stage.has_update:
        update = _plan_definition(stage, gene, extents, True, parallel, tasks, exact)
        result.definitions.append(update)
        result.intermediate = _intermediate(stage, update)
    return result


def _storage(stage: StageSpace, gene: StageGene, exact: bool) -> list[tuple]:
    """Storage directives of a stage computed inside its consumer (or of one
    point): its vectorised dimension stored innermost (vectors along another
    dimension would be gathered and scattered element by element), and aligned."""
    innermost = stage.vars[0]
    directives = []
    if not exact and 0 < gene.vector < stage.dims and gene.width > 1:
        innermost = stage.vars[gene.vector]
        directives.append(("reorder_storage", innermost, *(v for v in stage.vars if v != innermost)))
    return directives + [("align_storage", innermost, 2)]


def _sites(space: ScheduleSpace, stage: StageSpace, gene: StageGene,
           plans: dict[int, StagePlan]) -> tuple[str | None, list[Loop]]:
    """The stage whose loops ``gene.location`` counts, and those loops: the
    consumer's; with ``gene.host``, those of the consumer's own host that enclose
    the consumer (none where the consumer is inlined or computed at root)."""
    consumer = plans[space.index(stage.consumer)]
    if consumer.location == INLINE:
        return None, []
    if not gene.host:
        return stage.consumer, consumer.loops
    if consumer.location == ROOT:
        return None, []
    outer = plans[space.index(consumer.at_stage)].loops
    names = [l.name for l in outer]
    return consumer.at_stage, outer[: names.index(consumer.at_loop) + 1]


def _intermediate(stage: StageSpace, update: Definition) -> Intermediate | None:
    """The plan of the intermediate an ``rfactor`` directive of ``update`` made:
    computed at the update's innermost pure loop outside the reduction (neither
    vectorised nor unrolled; else outside all its loops, never at root: what it
    reads may be computed inside the stage's consumer), its lanes vectorised and
    stored innermost. The update's unrolled pure loops inside that one (split
    before the ``rfactor``, so the intermediate has them too) are a block of
    sums, unrolled inside the intermediate's reduction, a vector of lanes each:
    each step loads what the block shares once (a matrix-vector product's input,
    read for several weight rows) and keeps that many sums in flight."""
    factored = next((d for d in update.directives if d[0] == "rfactor"), None)
    if factored is None:
        return None
    _, _, lanes, name = factored
    outside = [l.name for l in outside_reduction(serial_loops(update))]
    at = outside[-1] if outside else OUTERMOST
    names = [l.name for l in update.loops]
    inside = update.loops[names.index(at) + 1:] if outside else update.loops
    unrolled = {d[1] for d in update.directives if d[0] == "unroll"}
    block = [l.name for l in inside if l.name in unrolled and not l.rvar]
    order = ("reorder", lanes, *reversed(block), *stage.rvars, *(v for v in stage.vars if v not in block))
    storage = ("reorder_storage", lanes, *stage.vars)  # rfactor stores the lanes outermost
    return Intermediate(name, at, [Definition([storage, ("vectorize", lanes)]),
                                   Definition([order, ("vectorize", lanes), *(("unroll", l) for l in block)])])


def _plan_definition(stage: StageSpace, gene: StageGene, extents: tuple[int, ...],
                     update: bool, parallel: int, tasks: int = 0, exact: bool = True) -> Definition:
    """One definition's directives and loops. Where its ``extents`` are only
    estimated (``exact`` false: a stage computed inside its consumer, whose region
    also depends on stencil offsets the estimate leaves out), vector lanes and
    unrolled loops are always split off by their factor, never the whole loop
    (a conv's padded row, 33 wide where the estimate said 32, vectorised whole
    aborted LLVM; a loop of a region's symbolic extent cannot be unrolled). Where
    the estimate is right, the loop left outside has one iteration."""
    d = Definition()
    dims = stage.dims
    tiles = fit(gene.tiles, dims, (1, 1))
    unroll = fit(gene.unroll, dims, 1)
    order = gene.order if sorted(gene.order) == list(range(dims)) else tuple(reversed(range(dims)))
    vector = gene.vector if 0 <= gene.vector < dims and gene.width > 1 else -1
    if update and _rfactor_lanes(stage, gene):
        vector = -1  # it only adds up the factored lanes; vectorising that too transposes them (10 s compiles)

    # The output's bounds are exact and factors never exceed them, so its pure splits
    # may shift the last tile inwards; anything else is guarded, since rounding up
    # would read inputs past their ends.
    tail = "ShiftInwards" if stage.is_output and not update else "GuardWithIf"
    outer, middle, inner, unrolled, lanes_loop = [], [], [], [], None
    levels = {}
    for i, (var, extent) in enumerate(zip(stage.vars, extents)):
        chain = [Loop(var, extent)]
        t1, t2 = tiles[i]
        if 1 < t1 < extent:
            split(d, chain, t1, "_t", tail)
        if 1 < t2 < chain[-1].extent:
            split(d, chain, t2, "_i", tail)
        if i == vector:
            width = min(gene.width, chain[-1].extent)
            if width > 1:
                if width < chain[-1].extent or not exact:
                    split(d, chain, width, "_v", tail)
                lanes_loop = chain.pop()
                d.directives.append(("vectorize", lanes_loop.name))
        if unroll[i] > 1 and chain and chain[-1].extent > 1:
            if unroll[i] < chain[-1].extent or not exact:
                split(d, chain, min(unroll[i], chain[-1].extent), "_u", tail)
            u = chain.pop()
            d.directives.append(("unroll", u.name))
            unrolled.append((i, u))
        levels[i] = chain
    for i in order:
        chain = levels[i]
        if chain:
            outer.append(chain[0])
        if len(chain) >= 3:
            middle.append(chain[1])
            inner.extend(chain[2:])
        elif len(chain) == 2:
            inner.append(chain[1])
    for i in order:
        inner.extend(u for j, u in unrolled if j == i)
    pure = outer + middle + inner

    reduction: list[Loop] = []
    if update:
        reduction = _plan_rfactor(d, stage, gene) or plan_reduction(d, stage, gene)
        depth = max(0, min(gene.rdepth, len(pure)))
        blocks = _reduction_blocks(stage, gene, reduction)
        outside = min(parallel, len(pure) - depth)
        loops = (pure[:outside] + blocks + pure[outside: len(pure) - depth]
                 + [r for r in reduction if r not in blocks] + pure[len(pure) - depth:])
    else:
        loops = list(pure)
    if lanes_loop is not None:
        loops.append(lanes_loop)
    if len(loops) > 1:
        d.directives.append(("reorder", *[l.name for l in reversed(loops)]))
    d.loops = loops
    _plan_parallel(d, parallel, tasks)
    return d


def _reduction_blocks(stage: StageSpace, gene: StageGene, reduction: list[Loop]) -> list[Loop]:
    """With ``rblock``, the loops of ``reduction`` that are the outer loops of the
    reduction variables ``rsplit`` splits (they keep the variable's name; a
    factored reduction has none), outermost first; else none."""
    if not gene.rblock:
        return []
    names = split_rvars(stage, gene.rsplit)
    return [loop for loop in reduction if loop.name in names]


def _plan_rfactor(d: Definition, stage: StageSpace, gene: StageGene) -> list[Loop]:
    """Split the first reduction variable into ``gene.rfactor`` lanes and factor
    them out (Halide's ``rfactor``): the update then only adds up the lanes of an
    intermediate that runs the rest of the reduction with the lanes vectorised,
    loading contiguous memory where the reduction walks along it. Returns the
    update's one reduction loop left (none if the gene asks for no factoring)."""
    lanes = _rfactor_lanes(stage, gene)
    if not lanes:
        return []
    rvar = stage.rvars[0]
    chain = [Loop(rvar, stage.rextents[0], rvar=True)]
    split(d, chain, lanes, "_f", "GuardWithIf")
    lane_var = rvar.replace("$", "_") + "_l"
    d.directives.append(("rfactor", chain[1].name, lane_var, f"{stage.name}_intm"))
    return [chain[1]]


def _rfactor_lanes(stage: StageSpace, gene: StageGene) -> int:
    """The lanes the gene factors the first reduction variable into (0: none)."""
    lanes = gene.rfactor
    return lanes if stage.rvars and 1 < lanes < stage.rextents[0] else 0


def _plan_parallel(d: Definition, parallel: int, tasks: int = 0) -> None:
    """Fuse the ``parallel`` outermost loops into one parallel loop; with ``tasks``,
    cut it into that many tasks (a loop of consecutive iterations inside each), so
    a memory-bound stage streams one long stretch per thread."""
    vectorized = {x[1] for x in d.directives if x[0] == "vectorize"}
    leading = 0
    for loop in d.loops:
        if loop.rvar or loop.name in vectorized:
            break
        leading += 1
    count = min(parallel, leading)
    if count <= 0:
        return
    fused = d.loops[0]
    for nxt in d.loops[1:count]:
        name = f"{fused.name}_{nxt.name}".replace("$", "_")
        d.directives.append(("fuse", nxt.name, fused.name, name))
        fused = Loop(name, fused.extent * nxt.extent)
    chain = [fused]
    if 0 < tasks < fused.extent:
        split(d, chain, ceil_div(fused.extent, tasks), "_k", "GuardWithIf")
        chain[0].site = False
    d.directives.append(("parallel", fused.name))
    d.loops = chain + d.loops[count:]
