"""GPU plans: the same genes, read as block and thread mappings.

A stage is planned in one of three modes:

- ``kernel`` (the output, and stages computed at root): its own GPU kernel. Up to
  two variables (the ``vector`` gene's first, then innermost first by ``order``)
  are split into a block tile (``tiles[i][0]``, 16 when unsplit) and a thread tile
  (``tiles[i][1]`` elements per thread): ``x`` blocks, ``x_t`` threads, ``x_t_i`` serial
  per thread (unrolled when ``unroll[i] > 1``). The other variables are fused into
  one more block dimension when ``parallel > 0``, else they stay host loops around
  the kernel. Reductions run serially in each thread (``rsplit``/``runroll`` split
  and unroll them); ``rdepth`` per-thread loops go inside them (register tiles).
- ``shared`` (computed at a consumer's innermost block loop): staged in GPU shared
  memory, computed cooperatively by the block's threads (``gpu_threads``).
- ``serial`` (computed at a consumer's thread loop or inside it; a scalar stage
  at any of its loops): each thread computes its own region, in order, serially.

Producers may be computed at a kernel's innermost block loop (``shared``), its
innermost thread loop or its per-thread serial loops (``serial``): the ``location``
gene indexes that list.
"""

from __future__ import annotations

import math

from ._genome import INLINE, ROOT, StageGene
from ._loops import Definition, Loop, MemoryType, StagePlan, ceil_div, fit, plan_reduction, region, split
from ._space import ScheduleSpace, StageSpace

MAX_THREADS = 256     # threads per block: every CUDA GPU and OpenCL device takes this many
DEFAULT_BLOCK = 16    # block tile of a variable whose tile gene does not split it
THREAD_DIMS = 2       # variables mapped onto thread dimensions


def plan_gpu_stage(space: ScheduleSpace, stage: StageSpace, gene: StageGene,
                   plans: dict[int, StagePlan]) -> StagePlan:
    """Plan one stage for a GPU target (consumers are planned before producers)."""
    if gene.location == INLINE and stage.can_inline and not stage.is_output:
        return StagePlan(INLINE)
    consumer = None if stage.is_output or gene.location <= ROOT else plans[space.index(stage.consumer)]
    if consumer is None or consumer.location == INLINE or not consumer.loops:
        return _kernel(stage, gene)
    at = min(gene.location, len(consumer.loops)) - 1
    site = consumer.loops[at]
    nest = consumer.definitions[-1].loops
    inside = nest[[l.name for l in nest].index(site.name) + 1:]
    extents = region(stage, inside)
    if consumer.gpu == "kernel" and at == 0 and stage.dims:
        result = _staged(stage, gene, extents)
    else:
        result = _serial(stage, gene)
    result.location, result.at_loop = at + 1, site.name
    return result


def _kernel(stage: StageSpace, gene: StageGene) -> StagePlan:
    result = StagePlan(ROOT, gpu="kernel", sites=[])
    if stage.dims == 0:  # a scalar: nothing to map, Halide runs it on the host
        result.definitions = [Definition() for _ in range(1 + stage.has_update)]
        return result
    for update in (False, True)[: 1 + stage.has_update]:
        d, block, thread = _kernel_definition(stage, gene, update)
        result.definitions.append(d)
    unrolled = {x[1] for x in d.directives if x[0] == "unroll"}
    inner = d.loops[d.loops.index(thread) + 1:]
    result.sites = [block, thread] + [l for l in inner if l.name not in unrolled]
    return result


def _thread_vars(stage: StageSpace, gene: StageGene, extents: tuple[int, ...], order: tuple[int, ...]) -> list[int]:
    """The variables mapped onto threads, innermost first."""
    first = [gene.vector] if 0 <= gene.vector < stage.dims else []
    chosen: list[int] = []
    for i in first + list(reversed(order)):
        if extents[i] > 1 and i not in chosen and len(chosen) < THREAD_DIMS:
            chosen.append(i)
    return chosen or [order[-1]]


def _order(stage: StageSpace, gene: StageGene) -> tuple[int, ...]:
    dims = stage.dims
    return gene.order if sorted(gene.order) == list(range(dims)) else tuple(reversed(range(dims)))


def _tile_sizes(stage: StageSpace, gene: StageGene, tiled: list[int]) -> dict[int, list[int]]:
    """Block tile and elements per thread of each tiled variable, at most
    ``MAX_THREADS`` threads per block."""
    tiles = fit(gene.tiles, stage.dims, (1, 1))
    sizes = {}
    for i in tiled:
        extent, (t1, t2) = stage.extents[i], tiles[i]
        block = t1 if 1 < t1 <= extent else min(extent, DEFAULT_BLOCK)
        sizes[i] = [block, t2 if 1 < t2 < block else 1]

    def threads(i: int) -> int:
        return ceil_div(sizes[i][0], sizes[i][1])

    while math.prod(threads(i) for i in tiled) > MAX_THREADS:
        widest = max(tiled, key=threads)
        sizes[widest][1] = min(2 * sizes[widest][1], sizes[widest][0])
    return sizes


def _kernel_definition(stage: StageSpace, gene: StageGene, update: bool) -> tuple[Definition, Loop, Loop]:
    """One definition as a kernel; also returns its innermost block and thread loops."""
    d = Definition()
    order = _order(stage, gene)
    tiled = _thread_vars(stage, gene, stage.extents, order)
    sizes = _tile_sizes(stage, gene, tiled)
    unroll = fit(gene.unroll, stage.dims, 1)
    tail = "ShiftInwards" if stage.is_output and not update else "GuardWithIf"
    blocks, threads, serial = [], [], []
    for i in tiled:  # innermost first
        chain = [Loop(stage.vars[i], stage.extents[i])]
        block, per_thread = sizes[i]
        split(d, chain, block, "_t", tail)
        if per_thread > 1:
            split(d, chain, per_thread, "_i", tail)
            serial.append(chain[2])
            if unroll[i] > 1 and per_thread <= 16:
                d.directives.append(("unroll", chain[2].name))
        blocks.insert(0, chain[0])
        threads.insert(0, chain[1])
    rest = [Loop(stage.vars[i], stage.extents[i]) for i in order if i not in tiled]
    serial.reverse()  # outermost first
    reduction: list[Loop] = []
    if update:
        reduction = plan_reduction(d, stage, gene)
    depth = max(0, min(gene.rdepth, len(serial))) if update else 0
    loops = rest + blocks + threads + serial[: len(serial) - depth] + reduction + serial[len(serial) - depth:]
    if len(loops) > 1:
        d.directives.append(("reorder", *[l.name for l in reversed(loops)]))
    if rest and gene.parallel > 0:
        fused = rest[0]
        for nxt in rest[1:]:
            name = f"{fused.name}_{nxt.name}".replace("$", "_")
            d.directives.append(("fuse", nxt.name, fused.name, name))
            fused = Loop(name, fused.extent * nxt.extent)
        loops = [fused] + loops[len(rest):]
        blocks.insert(0, fused)
    d.directives.append(("gpu_blocks", *[l.name for l in reversed(blocks)]))
    d.directives.append(("gpu_threads", *[l.name for l in reversed(threads)]))
    d.loops = loops
    return d, blocks[-1], threads[-1]


def _staged(stage: StageSpace, gene: StageGene, extents: tuple[int, ...]) -> StagePlan:
    """A stage computed at its consumer's block loop: kept in shared memory, each
    definition computed by the block's threads (outer chunks serially)."""
    result = StagePlan(ROOT, gpu="shared")
    order = _order(stage, gene)
    tiled = _thread_vars(stage, gene, extents, order)
    per_dim = MAX_THREADS if len(tiled) == 1 else DEFAULT_BLOCK
    for update in (False, True)[: 1 + stage.has_update]:
        d = Definition()
        threads, outer = [], []
        for i in tiled:
            chain = [Loop(stage.vars[i], extents[i])]
            count = min(extents[i], per_dim)
            if count < extents[i]:
                split(d, chain, count, "_t", "GuardWithIf")
                outer.insert(0, chain[0])
            threads.insert(0, chain[-1])
        rest = [Loop(stage.vars[i], extents[i]) for i in order if i not in tiled]
        d.loops = threads + rest + outer + (_reduction_loops(stage) if update else [])
        if len(d.loops) > 1:
            d.directives.append(("reorder", *[l.name for l in reversed(d.loops)]))
        d.directives.append(("gpu_threads", *[l.name for l in reversed(threads)]))
        result.definitions.append(d)
    result.definitions[0].directives.insert(0, ("store_in", MemoryType("GPUShared")))
    result.sites = result.definitions[-1].loops[len(tiled) - 1:]
    return result


def _serial(stage: StageSpace, gene: StageGene) -> StagePlan:
    """A stage computed inside a thread: every definition serial, in ``order``."""
    result = StagePlan(ROOT, gpu="serial")
    order = _order(stage, gene)
    for update in (False, True)[: 1 + stage.has_update]:
        d = Definition()
        d.loops = [Loop(stage.vars[i], stage.extents[i]) for i in order] + (_reduction_loops(stage) if update else [])
        if len(d.loops) > 1:
            d.directives.append(("reorder", *[l.name for l in reversed(d.loops)]))
        result.definitions.append(d)
    result.sites = list(result.definitions[-1].loops)
    return result


def _reduction_loops(stage: StageSpace) -> list[Loop]:
    """The reduction loops in Halide's default order (the first variable innermost)."""
    return [Loop(r, e, rvar=True) for r, e in zip(reversed(stage.rvars), reversed(stage.rextents))]
