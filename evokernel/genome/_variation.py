"""Variation of genomes, as free functions in DEAP's manner.

``random_genome``, ``mutate`` and ``crossover`` take a ``random.Random`` so a search is
reproducible from its seed; every result goes through ``repair``, which keeps each
gene inside the ranges its stage allows. ``templates`` are the sensible schedules a
population starts from: vectorised and parallel loops, and register-tiled reductions.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from ._genome import INLINE, ROOT, Genome, StageGene
from ._loops import split_rvars
from ._plan import plan
from ._space import ScheduleSpace, StageSpace

MAX_UNROLLED_LANES = 512  # unroll factors x vector width (or rfactor lanes), bounds code size


def factors(extent: int, limit: int = 256) -> list[int]:
    """Split factors worth trying for a loop of ``extent``: powers of two and
    small divisors, all below ``extent`` (1 means no split)."""
    out = {1}
    p = 2
    while p < extent and p <= limit:
        out.add(p)
        p *= 2
    out.update(d for d in range(3, min(extent, limit + 1)) if extent % d == 0 and d <= 64)
    return sorted(out)


def _max_location(space: ScheduleSpace, stage: StageSpace) -> int:
    if stage.consumer is None:
        return 0
    consumer = space.stage(stage.consumer)
    return 4 * consumer.dims + 2 * len(consumer.rvars)


def _widths(space: ScheduleSpace) -> list[int]:
    return [w for w in (space.lanes // 2, space.lanes, 2 * space.lanes, 4 * space.lanes) if w > 1]


#: Choices of ``StageGene.tasks`` (0: a task per iteration of the parallel loop).
_TASKS = [0, 0, 1, 2, 4, 8]


# -- sampling -----------------------------------------------------------------------

def random_stage_gene(space: ScheduleSpace, stage: StageSpace, rng: random.Random) -> StageGene:
    """A random gene for ``stage`` (repaired)."""
    locations = ([INLINE] * 2 if stage.can_inline else []) + [ROOT] * 2 + list(
        range(1, _max_location(space, stage) + 1))
    tiles = []
    for extent in stage.extents:
        if rng.random() < 0.4:
            tiles.append((1, 1))
        else:
            t1 = rng.choice(factors(extent) + [extent])
            tiles.append((t1, rng.choice([f for f in factors(extent) if f <= t1] or [1])))
    order = list(reversed(range(stage.dims)))
    if rng.random() < 0.4:
        rng.shuffle(order)
    vector = -1 if rng.random() < 0.1 else (0 if rng.random() < 0.8 else rng.randrange(max(1, stage.dims)))
    gene = StageGene(
        location=0 if stage.is_output else rng.choice(locations),
        tiles=tuple(tiles),
        order=tuple(order),
        vector=vector,
        width=rng.choice(_widths(space)) if vector >= 0 else 1,
        parallel=rng.choice([0, 1, 1, 2, 2, 3]),
        unroll=tuple(rng.choice([1, 1, 1, 2, 4, 8]) for _ in stage.extents),
        rsplit=tuple(rng.choice(factors(e, 64)) for e in stage.rextents),
        rdepth=rng.randrange(0, 2 * stage.dims + 2),
        runroll=int(rng.random() < 0.3),
        rfactor=rng.choice(_widths(space)) if stage.has_update and rng.random() < 0.25 else 1,
        tasks=rng.choice(_TASKS),
        host=int(rng.random() < 0.3),
        rblock=int(rng.random() < 0.2),
    )
    return repair_stage(space, stage, gene)


def random_genome(space: ScheduleSpace, rng: random.Random) -> Genome:
    """A random genome for ``space`` (repaired)."""
    return repair(space, Genome(tuple(random_stage_gene(space, s, rng) for s in space.stages)))


# -- repair -------------------------------------------------------------------------

def repair_stage(space: ScheduleSpace, stage: StageSpace, gene: StageGene) -> StageGene:
    """Bring every field of ``gene`` inside the ranges ``stage`` allows."""
    dims = stage.dims
    location = max(INLINE, min(gene.location, _max_location(space, stage)))
    if stage.is_output:
        location = ROOT
    elif location == INLINE and not stage.can_inline:
        location = ROOT

    tiles = []
    for i, extent in enumerate(stage.extents):
        t1, t2 = (tuple(gene.tiles[i]) + (1, 1))[:2] if i < len(gene.tiles) else (1, 1)
        t1 = max(1, min(int(t1), extent))
        t2 = max(1, min(int(t2), t1))
        tiles.append((t1, t2))
    order = tuple(gene.order) if sorted(gene.order) == list(range(dims)) else tuple(reversed(range(dims)))
    vector = gene.vector if -1 <= gene.vector < dims else (0 if dims else -1)  # a 0-d stage has no loop
    width = _power_of_two_at_most(min(max(1, gene.width), max(_widths(space), default=1))) if vector >= 0 else 1
    rfactor = 1
    if stage.has_update and 1 < gene.rfactor < stage.rextents[0]:
        rfactor = _power_of_two_at_most(min(gene.rfactor, max(_widths(space), default=1)))
    unroll = [max(1, min(int(u), 16)) for u in (tuple(gene.unroll) + (1,) * dims)[:dims]]
    while max(width, rfactor) * _product(unroll) > MAX_UNROLLED_LANES and max(unroll) > 1:
        unroll[unroll.index(max(unroll))] //= 2
    rsplit = tuple(max(1, min(int(f), e)) for f, e in zip((tuple(gene.rsplit) + (1,) * len(stage.rextents)),
                                                          stage.rextents))
    runroll = int(bool(gene.runroll) and bool(rsplit) and max(rsplit) <= 16)
    parallel = max(0, min(gene.parallel, dims))
    return StageGene(
        location=location, tiles=tuple(tiles), order=order, vector=vector, width=width,
        parallel=parallel, unroll=tuple(unroll), rsplit=rsplit,
        rdepth=max(0, min(gene.rdepth, 4 * dims)), runroll=runroll, rfactor=rfactor,
        tasks=max(0, min(gene.tasks, _TASKS[-1])) if parallel else 0,
        host=int(bool(gene.host) and location > ROOT and _can_lift(space, stage)),
        rblock=int(bool(gene.rblock) and not space.gpu and rfactor == 1 and bool(split_rvars(stage, rsplit))))


def _can_lift(space: ScheduleSpace, stage: StageSpace) -> bool:
    """Whether ``stage`` may be computed at its consumer's consumer's loops (``host``):
    on a CPU, for a stage only its consumer reads, whose consumer is not the output."""
    return (not space.gpu and not stage.readers and stage.consumer is not None
            and not space.stage(stage.consumer).is_output)


def repair(space: ScheduleSpace, genome: Genome) -> Genome:
    """A genome of the right shape for ``space`` whose genes are all in range."""
    genes = list(genome.stages[: len(space.stages)])
    genes += [StageGene()] * (len(space.stages) - len(genes))
    genes = [repair_stage(space, s, g) for s, g in zip(space.stages, genes)]
    for i, stage in enumerate(space.stages):
        if stage.readers and genes[i].location > ROOT:
            genes[i] = replace(genes[i], location=_shared_location(space, stage, genes))
    return Genome(tuple(genes))


def _shared_location(space: ScheduleSpace, stage: StageSpace, genes: list[StageGene]) -> int:
    """Where a stage that other stages read besides its consumer may be computed:
    no deeper in its consumer's loops than any of them (each must find it
    computed), or at root if one of them is computed elsewhere."""
    location = genes[space.index(stage.name)].location
    for name in stage.readers:
        reader, gene = space.stage(name), genes[space.index(name)]
        if reader.consumer != stage.consumer or gene.location == ROOT:
            return ROOT
        if gene.location != INLINE:  # an inlined reader reads it inside the consumer: anywhere will do
            location = min(location, gene.location)
    return location


def _power_of_two_at_most(n: int) -> int:
    p = 1
    while p * 2 <= n:
        p *= 2
    return p


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# -- mutation and crossover -----------------------------------------------------------

def _nudge(value: int, choices: list[int], rng: random.Random) -> int:
    """A neighbouring choice (half or double, roughly) or, sometimes, any choice."""
    if rng.random() < 0.3 or value not in choices:
        return rng.choice(choices)
    i = choices.index(value) + rng.choice([-1, 1])
    return choices[max(0, min(i, len(choices) - 1))]


def mutate_stage(space: ScheduleSpace, stage: StageSpace, gene: StageGene, rng: random.Random) -> StageGene:
    """Change one field of ``gene`` (a nudge or a fresh draw)."""
    fresh = random_stage_gene(space, stage, rng)
    fields = ["tiles", "order", "vector", "unroll", "parallel", "tasks"]
    if not stage.is_output:
        fields += ["location"] * 2
    if _can_lift(space, stage):
        fields.append("host")
    if stage.has_update:
        fields += ["rsplit", "rdepth", "runroll", "rfactor", "rblock"]
    field = rng.choice(fields)
    if field == "tiles" and stage.dims:
        i = rng.randrange(stage.dims)
        t1, t2 = gene.tiles[i]
        choices = factors(stage.extents[i]) + [stage.extents[i]]
        t1, t2 = (_nudge(t1, choices, rng), t2) if rng.random() < 0.5 else (t1, _nudge(t2, choices, rng))
        tiles = list(gene.tiles)
        tiles[i] = (t1, t2)
        gene = replace(gene, tiles=tuple(tiles))
    elif field == "unroll" and stage.dims:
        i = rng.randrange(stage.dims)
        unroll = list(gene.unroll)
        unroll[i] = _nudge(unroll[i], [1, 2, 4, 8, 16], rng)
        gene = replace(gene, unroll=tuple(unroll))
    elif field == "vector":
        gene = replace(gene, vector=fresh.vector, width=fresh.width) if rng.random() < 0.5 else \
            replace(gene, width=_nudge(gene.width, _widths(space), rng))
    elif field == "order" and stage.dims > 1:
        order = list(gene.order)
        i, j = rng.sample(range(stage.dims), 2)
        order[i], order[j] = order[j], order[i]
        gene = replace(gene, order=tuple(order))
    else:
        gene = replace(gene, **{field: getattr(fresh, field)})
    return repair_stage(space, stage, gene)


def mutate(space: ScheduleSpace, genome: Genome, rng: random.Random, changes: int | None = None) -> Genome:
    """A mutant of ``genome``: one to three stage fields changed."""
    genes = list(genome.stages)
    for _ in range(changes or rng.choice([1, 1, 2, 3])):
        i = rng.randrange(len(genes))
        genes[i] = mutate_stage(space, space.stages[i], genes[i], rng)
    return repair(space, Genome(tuple(genes)))


def crossover(space: ScheduleSpace, a: Genome, b: Genome, rng: random.Random) -> tuple[Genome, Genome]:
    """Two children: stages swapped uniformly between the parents, and within one
    stage, fields swapped uniformly (a stage's fields still fit its space)."""
    ga, gb = list(a.stages), list(b.stages)
    for i in range(len(ga)):
        if rng.random() < 0.5:
            ga[i], gb[i] = gb[i], ga[i]
    i = rng.randrange(len(ga))
    da, db = vars(ga[i]).copy(), vars(gb[i]).copy()
    for name in da:
        if rng.random() < 0.5:
            da[name], db[name] = db[name], da[name]
    ga[i], gb[i] = StageGene(**da), StageGene(**db)
    return repair(space, Genome(tuple(ga))), repair(space, Genome(tuple(gb)))


# -- templates ------------------------------------------------------------------------

def _flat_gene(space: ScheduleSpace, stage: StageSpace) -> StageGene:
    """Root (or inline), the innermost dimension vectorised, the outer ones parallel."""
    location = INLINE if stage.can_inline else ROOT
    return StageGene(location=location, tiles=((1, 1),) * stage.dims,
                     order=tuple(reversed(range(stage.dims))), vector=0, width=space.lanes,
                     parallel=min(2, stage.dims), unroll=(1,) * stage.dims,
                     rsplit=(1,) * len(stage.rvars))


def unscheduled(space: ScheduleSpace) -> Genome:
    """The baseline speedups are measured against: Halide's default schedule (every
    stage inlined where it can be, serial loops), except that reductions are
    computed once at root, where Halide would recompute one per point of its
    consumer (minutes for a softmax's row sums)."""
    return repair(space, Genome(tuple(StageGene(location=INLINE if s.can_inline else ROOT) for s in space.stages)))


#: Reductions of at most this many steps (a 3x3 pooling window: 9) also get register
#: tiles with the stages that feed them computed per tile (``_inputs_per_tile``): a
#: 3x3/2 max pool of 64x112x112 with padding on a 2-vCPU Xeon: 140-150 us against
#: 200 us for the padded input at root or inlined.
SHORT_REDUCTION = 16
#: Register tiles of the reduction templates, (tile along another dim, vectors along
#: dim 0), best first on a 16-register machine: twelve accumulators, then eight, four
#: and sixteen (where there are more registers).
REGISTER_TILES = ((6, 2), (12, 1), (8, 1), (4, 2), (4, 1), (8, 2))
#: The same inside gemm panels (vectors along dim 0 by a tile along another dim).
PANEL_TILES = ((4, 3), (6, 2), (8, 2))
#: The same for vectors along an outer dim (a conv's output channels) by points along
#: dim 0, one broadcast each: twelve accumulators, then eight with four vectors.
CHANNEL_TILES = ((4, 3), (6, 2), (2, 4))
#: Tiles that come first on a machine of 32 vector registers (AVX-512, 64-bit ARM):
#: twenty-four and twenty-eight accumulators with two vectors of operands, so twice
#: the work per broadcast; along dim 0 (``REGISTER_TILES``) and along a conv's
#: channels (``CHANNEL_TILES``), there first twenty-four accumulators with four
#: vectors, ten loads per twenty-four multiply-adds (a 3x3 conv of 128 to 512
#: channels on a 2-vCPU Xeon: 20-70% faster than two vectors by twelve points),
#: where the channels make a panel for every thread.
WIDE_REGISTER_TILES = ((12, 2), (14, 2))
WIDE_CHANNEL_TILES = ((6, 4), (12, 2))
#: Parallel tasks per thread of panel templates: each thread computes stretches of
#: consecutive panels, not every other panel (a 1x1 conv over 3025 positions on a
#: 2-vCPU Xeon: 25 us against 40; other panel shapes measured 0-25% faster), and
#: two stretches per thread let one that starts late cost at most half its share.
PANEL_TASKS = 2
#: Elements of the packed copy that one block of a blocked panel's reduction reads
#: at most (32 KiB of float32, about a level-1 data cache): the block stays in
#: cache while every register tile of the panel uses it.
BLOCK_ELEMENTS = 8192
#: Accumulator blocks of a reduction factored into vector lanes (``rfactor``),
#: (points along dim 0, points along another dim): sixteen sums sharing four loads
#: of each operand per step, then blocks of one row of the other dim (a
#: matrix-vector product's weight rows).
FACTORED_BLOCKS = ((4, 4), (8, 2), (8, 1), (4, 1))
#: Factored templates go to reductions that compute at most this many points per
#: step of their reduction: few long sums (a matrix-vector product, a small batch,
#: row statistics), where summing along the reduction in vector lanes pays; many
#: short ones (a gemm) are register-tiled.
FACTORED_POINTS = 32


def templates(space: ScheduleSpace) -> list[Genome]:
    """Sensible starting schedules, derived from the space alone (no operator names),
    the likeliest first, since a short search may time only the first few: a flat
    vectorised/parallel schedule; for each reduction feeding the output, register
    tiles inside parallel panels of the output with a weight copy packed once per
    panel, as BLAS packs it (``_panel_templates``: along dim 0 where the copy is
    indexed along it, along a conv's channels where the copy holds them innermost;
    the first of each kind followed by its ``_blocked`` twin, the first channel
    panel preceded by its ``_row_stored`` twin), then register tiles
    of the output (vector lanes along dim 0 times a tile along another dim longer
    than one, outer dims first: a conv's channels before its rows;
    ``REGISTER_TILES``, after ``WIDE_REGISTER_TILES`` where the machine has 32
    vector registers) with the reduction computed per tile and its loops
    outermost, then for few long sums the reduction factored into vector lanes
    with blocks of sums (``FACTORED_BLOCKS``), all with their inlined stages
    computed at root first, then as they are; the flat schedule with one parallel
    task per thread; with long reductions factored into vector lanes (``rfactor``);
    that with every stage computed inside the output's outermost loop (a row at a
    time, in cache); and each of these last with its inlined stages computed at root."""
    flat = Genome(tuple(_flat_gene(space, s) for s in space.stages))
    factored = Genome(tuple(replace(g, rfactor=space.lanes) for g in flat.stages))
    coarse = Genome(tuple(replace(g, tasks=1) for g in flat.stages))
    general = [flat, coarse, factored, _fused(space, factored)]
    output = space.stages[-1]
    tiled = []
    for r_index, reduction in enumerate(space.stages):
        if not reduction.has_update or reduction.consumer != output.name or output.has_update:
            continue
        tiled += _panel_templates(space, flat, r_index)
        registers = [_register_tiled(space, flat, r_index, j, tile, lanes_mult)
                     for tile, lanes_mult in _for_registers(space, REGISTER_TILES, WIDE_REGISTER_TILES)
                     for j in reversed(range(1, output.dims)) if output.extents[j] > 1]
        tiled += [g for t in registers for g in (_inputs_per_tile(space, t, r_index), t) if g is not None]
        tiled += _factored_blocks(space, flat, r_index)
    found = [flat, *(g for t in tiled for g in (_materialised(space, t), t)), *general[1:],
             *(_materialised(space, g) for g in general)]
    return list({g.key: g for g in (repair(space, g) for g in found)}.values())


def _inputs_per_tile(space: ScheduleSpace, tiled: Genome, r_index: int) -> "Genome | None":
    """For a short reduction (``SHORT_REDUCTION``: a pooling window), the register
    tile ``tiled`` with the stages that feed the reduction (a padded input) computed
    per tile, at the same loop of the output, so the few rows a tile reads are made
    in cache just before it reads them; None for a long reduction or none to move."""
    reduction = space.stages[r_index]
    if math.prod(reduction.rextents) > SHORT_REDUCTION:
        return None
    at = tiled.stages[r_index].location
    moved = tiled
    for i, stage in enumerate(space.stages):
        if stage.consumer == reduction.name and not stage.optional and _can_lift(space, stage):
            moved = moved.replace_stage(i, replace(tiled.stages[i], location=at, host=1, parallel=0))
    return moved if moved != tiled else None


def _for_registers(space: ScheduleSpace, tiles: tuple, wide: tuple) -> tuple:
    """``tiles``, after ``wide`` where the machine has 32 vector registers or more."""
    return (wide if space.registers >= 32 else ()) + tiles


def _factored_blocks(space: ScheduleSpace, flat: Genome, r_index: int) -> list[Genome]:
    """For a reduction of few long sums (``FACTORED_POINTS``), the flat schedule
    with it factored into vector lanes along its first reduction variable, its
    update unrolled into a block of ``FACTORED_BLOCKS`` points along dim 0 and the
    last dim longer than one: one independent sum per point, each step loading a
    block's operands once."""
    reduction = space.stages[r_index]
    if not reduction.rvars or not reduction.dims or \
            math.prod(reduction.extents) > FACTORED_POINTS * math.prod(reduction.rextents):
        return []
    other = next((j for j in reversed(range(1, reduction.dims)) if reduction.extents[j] > 1), None)
    found = []
    for along_0, along_other in FACTORED_BLOCKS:
        if along_other > 1 and other is None:
            continue
        unroll = [1] * reduction.dims
        unroll[0] = along_0
        if other is not None:
            unroll[other] = along_other
        gene = replace(flat.stages[r_index], rfactor=space.lanes, unroll=tuple(unroll))
        found.append(flat.replace_stage(r_index, gene))
    return found


def _materialised(space: ScheduleSpace, genome: Genome) -> Genome:
    """``genome`` with every inlined stage that is part of the algorithm (not an
    optional copy) computed once at root instead: a padded input, say, whose
    boundary test inlining would repeat at every use."""
    return Genome(tuple(replace(gene, location=ROOT) if stage.can_inline and not stage.optional
                        and gene.location == INLINE else gene for stage, gene in zip(space.stages, genome.stages)))


def _fused(space: ScheduleSpace, genome: Genome) -> Genome:
    """``genome`` with every stage but the optional copies computed at its
    consumer's outermost loop, and only the output's outermost loop parallel."""
    genes = []
    for stage, gene in zip(space.stages, genome.stages):
        if stage.is_output:
            gene = replace(gene, parallel=1)
        elif not stage.optional:
            gene = replace(gene, location=1, parallel=0)
        genes.append(gene)
    return Genome(tuple(genes))


def _register_tiled(space: ScheduleSpace, flat: Genome, r_index: int, j: int, tile: int,
                    lanes_mult: int, vector: int = 0) -> Genome:
    """A register tile of the output, ``lanes * lanes_mult`` along dim ``vector``
    (vectorised) by ``tile`` along dim ``j``, with the reduction computed per tile,
    its loops outermost and the tile unrolled inside them."""
    output = space.stages[-1]
    reduction = space.stages[r_index]
    width = space.lanes * lanes_mult
    out_tiles = [(1, 1)] * output.dims
    out_tiles[vector] = (width, width)
    out_tiles[j] = (tile, tile)
    out_gene = replace(flat.stages[-1], tiles=tuple(out_tiles), vector=vector, width=space.lanes)
    unroll = [1] * reduction.dims
    unroll[vector] = lanes_mult
    if j < reduction.dims:
        unroll[j] = tile
    # the vector dim's unrolled loop innermost: each broadcast meets every vector of the tile, held in registers
    order = tuple(i for i in reversed(range(reduction.dims)) if i != vector) + (vector,)
    r_gene = replace(_flat_gene(space, reduction), parallel=0, unroll=tuple(unroll), rdepth=4 * reduction.dims,
                     vector=vector, order=order)
    genome = flat.replace_stage(len(space.stages) - 1, out_gene)
    return genome.replace_stage(r_index, replace(r_gene, location=_at_tile(space, genome, j)))


def _at_tile(space: ScheduleSpace, genome: Genome, j: int) -> int:
    """The location just outside the output's tile loop along dim ``j`` (the
    register tile, which the reduction's update unrolls), else just below the
    output's fused parallel loops."""
    output, gene = space.stages[-1], genome.stages[-1]
    sites = _output_sites(space, genome)
    tile_loop = f"{output.vars[j]}_t"
    return max(1, sites.index(tile_loop) if tile_loop in sites else output.dims - gene.parallel + 1)


def _output_sites(space: ScheduleSpace, genome: Genome) -> list[str]:
    """The names of the output's loops under ``genome``, outermost first (a
    location ``k`` computes a stage inside the first ``k``)."""
    return [loop.name for loop in plan(space, genome)[-1].loops]


def _tile_loops(reduction: StageSpace, gene: StageGene) -> int:
    """The loops of ``reduction``'s register tile: its unrolled dims longer than one."""
    return sum(1 for u, e in zip(gene.unroll, reduction.extents) if u > 1 and e > 1)


def _put(values: tuple, changes: dict) -> tuple:
    """``values`` with the items at the indexes ``changes`` names replaced."""
    return tuple(changes.get(i, value) for i, value in enumerate(values))


def _panel_templates(space: ScheduleSpace, flat: Genome, r_index: int) -> list[Genome]:
    """``_panelled`` register tiles where the reduction reads a packed copy indexed
    along the output's dim 0 (gemm's B: panels along dim 0, tiles by every other
    dim long enough to tile), and where it reads one whose innermost dim is
    another dim of the output (a conv's weights by output channel: panels and
    vectors along that dim, tiles along dim 0)."""
    output, reduction = space.stages[-1], space.stages[r_index]
    copies = _panel_copies(space, reduction, output.vars[0])
    found = _with_blocked(space, r_index, [_panelled(space, flat, r_index, j, tile, lanes_mult, copies)
                                           for j in range(1, output.dims) if copies and output.extents[j] > 1
                                           for tile, lanes_mult in PANEL_TILES])
    for v in range(1, output.dims):
        copies = [i for i in _panel_copies(space, reduction, output.vars[v])
                  if space.stages[i].vars[0] == output.vars[v]]
        if copies and output.extents[v] >= space.lanes:
            # panels for every thread first: a panel wider than the channels' share of a thread idles the rest
            tiles = sorted(_for_registers(space, CHANNEL_TILES, WIDE_CHANNEL_TILES),
                           key=lambda t: output.extents[v] < space.threads * space.lanes * t[1])
            panels = _with_blocked(space, r_index, [
                _panelled(space, flat, r_index, 0, tile, lanes_mult, copies, vector=v) for tile, lanes_mult in tiles])
            found += _with_row_stored(space, r_index, panels)
    return found


def _with_blocked(space: ScheduleSpace, r_index: int, panels: list[Genome]) -> list[Genome]:
    """``panels`` with the first (likeliest) one's ``_blocked`` twin after it."""
    blocked = _blocked(space, panels[0], r_index) if panels else None
    return panels[:1] + ([blocked] if blocked else []) + panels[1:]


def _with_row_stored(space: ScheduleSpace, r_index: int, panels: list[Genome]) -> list[Genome]:
    """``panels`` with the first (likeliest) one's ``_row_stored`` twin before it,
    and before that its ``_row_fitted`` one where there is one."""
    if not panels:
        return panels
    fitted = _row_fitted(space, panels[0], r_index)
    twins = [_row_stored(space, p, r_index) for p in (fitted, panels[0]) if p]
    return [t for t in twins if t] + panels


def _row_fitted(space: ScheduleSpace, panelled: Genome, r_index: int) -> "Genome | None":
    """A channel panel whose register tile holds a whole row, where the row is not
    a whole number of its tiles (a 7x7 image's row of 7, not 6 and a guarded 1; a
    row of 14, not three tiles of 6), with as many vectors of channels as the
    panel's that divide the channels and fit in the registers with their
    accumulators, at least two (ResNet-18's 3x3 convs on a 2-vCPU Xeon,
    row-stored: on 7x7, 7 by 2 vectors 10-42% faster than 6 by 4; on 14x14, 14
    by 2 11% faster); None where the tile fits the row already or nothing does."""
    output = space.stages[-1]
    gene, out_gene = panelled.stages[r_index], panelled.stages[-1]
    v, row = out_gene.vector, output.extents[0]
    points = gene.unroll[0]
    if v <= 0 or row % points == 0 or row <= points // 2:
        return None
    # each vector of channels takes a register besides its accumulators, and one is left spare
    most = min(gene.unroll[v], (space.registers - 1) // (row + 1))
    vectors = [m for m in range(most, 1, -1) if (output.extents[v] // space.lanes) % m == 0]
    if not vectors:
        return None
    panel = space.lanes * vectors[0]
    genome = panelled.replace_stage(r_index, replace(gene, unroll=_put(gene.unroll, {0: row, v: vectors[0]})))
    return genome.replace_stage(len(space.stages) - 1, replace(
        out_gene, tiles=_put(out_gene.tiles, {0: (row, row), v: (panel, panel)}),
        unroll=_put(out_gene.unroll, {v: vectors[0]})))


def _row_stored(space: ScheduleSpace, panelled: Genome, r_index: int) -> "Genome | None":
    """A channel panel (vectors along an outer dim of the output) whose output is
    stored in vectors along dim 0, its contiguous dim, from sums computed a whole
    row of dim 0 at a time: stored along the channels, each vector of the output
    writes one element to each of ``lanes`` planes, as far apart as a plane is
    long (a 3x3 conv of 128 channels on 96x96: a fifth of its time). None for a
    panel along dim 0 or a row of one point."""
    output, out_gene = space.stages[-1], panelled.stages[-1]
    row = output.extents[0]
    if out_gene.vector <= 0 or row < 2:
        return None
    genome = panelled.replace_stage(len(space.stages) - 1, replace(
        out_gene, tiles=_put(out_gene.tiles, {0: (row, row)}), vector=0, width=space.lanes))
    gene = panelled.stages[r_index]
    sites = _output_sites(space, genome)
    # just inside the loops of the other dims: one row of the whole panel at a time
    rest = [sites.index(output.vars[d]) for d in range(1, output.dims) if d != out_gene.vector]
    return genome.replace_stage(r_index, replace(gene, location=max([1, *(i + 1 for i in rest)]),
                                                 rdepth=_tile_loops(space.stages[r_index], gene)))


def _blocked(space: ScheduleSpace, panelled: Genome, r_index: int) -> "Genome | None":
    """A ``_panelled`` template with its reduction computed once per panel, in
    blocks of its last (outermost) reduction variable that read about
    ``BLOCK_ELEMENTS`` of the packed copy (``rblock``): each block stays in cache
    while every register tile of the panel uses it, and the panel's sums stay in
    memory between blocks, as a BLAS kernel blocks K. None where the reduction is
    too short to block."""
    reduction, gene = space.stages[r_index], panelled.stages[r_index]
    panel = space.lanes * gene.unroll[gene.vector]
    block = _power_of_two_at_most(max(1, BLOCK_ELEMENTS // (panel * math.prod(reduction.rextents[:-1]))))
    if not 1 < block < reduction.rextents[-1]:
        return None
    blocked = replace(gene, location=1, rsplit=(1,) * (len(reduction.rvars) - 1) + (block,), rblock=1,
                      rdepth=_tile_loops(reduction, gene))
    return panelled.replace_stage(r_index, blocked)


def _panel_copies(space: ScheduleSpace, reduction: StageSpace, var: str) -> list[int]:
    """Indices of the optional copies ``reduction`` reads that are indexed along
    the output's variable ``var`` (so a panel of the output reads a panel of the copy)."""
    return [i for i, s in enumerate(space.stages)
            if s.optional and s.consumer == reduction.name and var in s.vars and _can_lift(space, s)]


def _panelled(space: ScheduleSpace, flat: Genome, r_index: int, j: int, tile: int, lanes_mult: int,
              copies: list[int], vector: int = 0) -> Genome:
    """A register tile of ``lanes * lanes_mult`` along the output's dim ``vector``
    by ``tile`` along dim ``j``, as in ``_register_tiled``, inside panels of the
    output along dim ``vector`` (its outermost loop, parallel in ``PANEL_TASKS``
    stretches of panels per thread), with each of
    ``copies`` computed once per panel (``host``), vectorised along that dim: the
    tiles of a panel read their weights from one contiguous packed buffer, one row
    per step of the reduction, as BLAS packs them."""
    output = space.stages[-1]
    rest = tuple(i for i in reversed(range(output.dims)) if i not in (vector, j))
    unroll = [1] * output.dims
    unroll[vector] = lanes_mult
    genome = _register_tiled(space, flat, r_index, j, tile, lanes_mult, vector)
    out_gene = replace(genome.stages[-1], order=(vector,) + rest + (j,), unroll=tuple(unroll), parallel=1,
                       tasks=PANEL_TASKS)
    genome = genome.replace_stage(len(space.stages) - 1, out_gene)
    genome = genome.replace_stage(r_index, replace(genome.stages[r_index], location=_at_tile(space, genome, j)))
    for i in copies:
        copy = space.stages[i]
        genome = genome.replace_stage(i, replace(_flat_gene(space, copy), vector=copy.vars.index(output.vars[vector]),
                                                 location=1, host=1, parallel=0))
    return genome
