"""Variation: repair keeps every gene in range, and what sampling, mutation and
crossover make is valid, decodes onto Halide, or fails only as a HalideError."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import halide as hl
import pytest
from _families import FAMILIES, FAMILY_IDS, seeded, space_of

import evokernel as ek
from evokernel.genome import (
    INLINE,
    ROOT,
    Genome,
    StageGene,
    apply,
    crossover,
    factors,
    mutate,
    plan,
    random_genome,
    repair,
    templates,
    unscheduled,
)
from evokernel.genome._variation import MAX_UNROLLED_LANES, PANEL_TASKS, _max_location

from test_decode import assert_computes

OPERATORS = [op for _, op in FAMILIES]


def assert_in_range(space, genome: Genome) -> None:
    """Every invariant ``repair`` promises."""
    assert len(genome.stages) == len(space.stages)
    for stage, g in zip(space.stages, genome.stages):
        where = f"{stage.name}: {g}"
        dims = stage.dims
        assert INLINE <= g.location <= _max_location(space, stage), where
        if stage.is_output:
            assert g.location == ROOT, where
        if g.location == INLINE:
            assert stage.can_inline, where
        assert len(g.tiles) == dims, where
        for (t1, t2), extent in zip(g.tiles, stage.extents):
            assert 1 <= t2 <= t1 <= extent, where
        assert sorted(g.order) == list(range(dims)), where
        assert -1 <= g.vector < dims, where
        assert g.width >= 1 and g.width & (g.width - 1) == 0, where
        if g.vector < 0:
            assert g.width == 1, where
        assert 0 <= g.parallel <= dims, where
        assert len(g.unroll) == dims and all(1 <= u <= 16 for u in g.unroll), where
        product = 1
        for u in g.unroll:
            product *= u
        assert max(g.width, g.rfactor) * product <= MAX_UNROLLED_LANES, where
        assert g.tasks >= 0 and (g.parallel or g.tasks == 0), where
        assert len(g.rsplit) == len(stage.rvars), where
        assert all(1 <= f <= e for f, e in zip(g.rsplit, stage.rextents)), where
        assert 0 <= g.rdepth <= 4 * dims, where
        assert g.runroll in (0, 1), where
        if g.runroll:
            assert g.rsplit and max(g.rsplit) <= 16, where


def wild_int(rng: random.Random) -> int:
    return rng.choice([rng.randint(-3, 3), rng.randint(-10**6, 10**6), rng.randint(0, 70), 2 ** rng.randint(0, 12)])


def garbage_genome(space, rng: random.Random) -> Genome:
    """Anything of the right types: wrong lengths, negative, huge, out of range."""
    genes = []
    for _ in range(rng.randint(0, len(space.stages) + 2)):
        genes.append(StageGene(
            location=wild_int(rng),
            tiles=tuple((wild_int(rng), wild_int(rng)) for _ in range(rng.randint(0, 6))),
            order=tuple(rng.randint(-2, 5) for _ in range(rng.randint(0, 5))),
            vector=wild_int(rng), width=wild_int(rng), parallel=wild_int(rng),
            unroll=tuple(wild_int(rng) for _ in range(rng.randint(0, 6))),
            rsplit=tuple(wild_int(rng) for _ in range(rng.randint(0, 4))),
            rdepth=wild_int(rng), runroll=wild_int(rng)))
    return Genome(tuple(genes))


@pytest.mark.parametrize("op", OPERATORS, ids=FAMILY_IDS)
def test_repair_brings_any_genome_in_range(op):
    space = space_of(op)
    for seed in range(150):
        rng = seeded(seed)
        repaired = repair(space, garbage_genome(space, rng))
        assert_in_range(space, repaired)
        assert repair(space, repaired) == repaired, "repair is idempotent"


@pytest.mark.parametrize("op", OPERATORS, ids=FAMILY_IDS)
def test_sampling_mutation_and_crossover_stay_in_range(op):
    space = space_of(op)
    for seed in range(60):
        rng = seeded(seed)
        a, b = random_genome(space, rng), random_genome(space, rng)
        children = [a, b, mutate(space, a, rng), mutate(space, b, rng, changes=5), *crossover(space, a, b, rng)]
        for g in children:
            assert_in_range(space, g)
            assert repair(space, g) == g, "variation returns genomes repair leaves alone"
    for t in templates(space):
        assert_in_range(space, t)


def test_variation_is_reproducible_from_the_seed():
    space = space_of(FAMILIES[0][1])

    def run(seed):
        rng = seeded(seed)
        a, b = random_genome(space, rng), random_genome(space, rng)
        return [a, b, mutate(space, a, rng), *crossover(space, a, b, rng)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_mutation_changes_the_genome_mostly():
    space = space_of(FAMILIES[0][1])
    rng = seeded(3)
    changed = 0
    for _ in range(100):
        g = random_genome(space, rng)
        changed += mutate(space, g, rng) != g
    assert changed >= 60


def test_crossover_children_take_their_genes_from_the_parents():
    space = space_of(FAMILIES[3][1])  # conv2d: four stages
    rng = seeded(11)
    for _ in range(50):
        a, b = random_genome(space, rng), random_genome(space, rng)
        for child in crossover(space, a, b, rng):
            mixed = [i for i in range(len(space.stages)) if child.stages[i] not in (a.stages[i], b.stages[i])]
            assert len(mixed) <= 1, "stages swap whole, except one whose fields are mixed"
            for i in mixed:
                # fields come from a parent; repair may only cut unrolling to fit the width
                for name in set(StageGene.__dataclass_fields__) - {"unroll", "runroll"}:
                    assert getattr(child.stages[i], name) in {getattr(a.stages[i], name), getattr(b.stages[i], name)}


def test_factors_are_sensible():
    assert factors(1) == [1]
    assert factors(3) == [1, 2]
    assert factors(37) == [1, 2, 4, 8, 16, 32]
    assert factors(48) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert all(f < 1000 for f in factors(1000))


@pytest.mark.parametrize("op", OPERATORS, ids=FAMILY_IDS)
def test_offspring_decode_onto_fresh_algorithms(op):
    """Mutants and crossover children of valid genomes apply onto a fresh
    algorithm; whatever Halide refuses is a HalideError (never another type)."""
    space = space_of(op)
    rng = seeded(2024)
    parents = templates(space) + [random_genome(space, rng) for _ in range(6)]
    tried = rejected = 0
    for _ in range(40):
        a, b = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
        for child in (mutate(space, a, rng), *crossover(space, a, b, rng)):
            tried += 1
            try:
                code = apply(child, op.algorithm(), space)
            except hl.HalideError:
                rejected += 1
                continue
            assert isinstance(code, str)
    assert rejected <= tried // 4, f"Halide rejected {rejected} of {tried} offspring"


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_the_unscheduled_baseline_is_halides_default_with_reductions_at_root(op):
    """Serial loops, everything inlined that can be, and each reduction computed
    once at root (Halide's default recomputes it per point of its consumer)."""
    space = space_of(op)
    genome = unscheduled(space)
    assert repair(space, genome) == genome
    code = apply(genome, op.algorithm(), space)
    for stage, gene in zip(space.stages, genome.stages):
        assert gene.location == (INLINE if stage.can_inline else ROOT)
    assert not any(word in code for word in ("vectorize", "parallel", "split", "unroll", "compute_at"))
    assert all(f"{s.name}.compute_root()" in code for s in space.stages if s.has_update and not s.is_output)


def test_a_stage_read_by_two_stages_is_computed_where_both_find_it():
    """Softmax's ``exps`` feeds the row sums and the output: the space knows, and
    repair never computes it deeper in the output's loops than the row sums, so
    every random or mutated softmax schedule compiles (a quarter did not)."""
    from evokernel.codegen import build
    from evokernel.target import Target

    op = ek.operators.softmax((16, 45))
    space = space_of(op)
    assert space.stage("exps").readers == ("row_sum",) and space.stage("row_sum").readers == ()
    rng = seeded(5)
    genomes = [random_genome(space, rng) for _ in range(30)]
    genomes += [mutate(space, g, rng) for g in genomes[:10]]
    at_loops = 0
    for genome in genomes:
        exps, row_sum = genome.stages[space.index("exps")], genome.stages[space.index("row_sum")]
        if exps.location > ROOT:
            at_loops += 1
            assert row_sum.location == INLINE or exps.location <= row_sum.location
        build(op, space, genome, Target.parse("host"))  # raises BuildError if Halide rejects it
    assert at_loops, "some schedules still compute exps inside the output's loops"


def test_templates_also_compute_inlined_algorithm_stages_at_root():
    """Each template comes with a twin whose inlined stages of the algorithm (a
    conv's padded input) are computed at root; optional copies stay as they are."""
    space = space_of(dict(FAMILIES)["conv2d"])
    found = {g.key: g for g in templates(space)}
    padded = next(i for i, s in enumerate(space.stages) if s.can_inline and not s.optional)
    inlined = [g for g in found.values() if g.stages[padded].location == INLINE]
    assert inlined
    for genome in inlined:
        twin = genome.replace_stage(padded, replace(genome.stages[padded], location=ROOT))
        assert twin.key in found


def test_templates_come_likeliest_first():
    """After the flat schedule come the gemm panels, then the register tiles with
    the padded input at root, channels tiled before rows; no tile along a dim of
    one (a batch of one), and no duplicates."""
    space = space_of(ek.operators.matmul(100, 90, 80))
    assert any(s.host for s in templates(space)[1].stages)
    space = space_of(ek.operators.conv2d(1, 16, 20, 20, 24, 3, pad=1))
    found = templates(space)
    acc, padded = space.index("acc"), space.index("padded")
    first = found[1]
    assert first.stages[acc].location > ROOT and first.stages[padded].location == ROOT
    assert first.stages[-1].tiles[2][0] > 1 and first.stages[-1].tiles[1][0] == 1
    assert found[2] == first.replace_stage(padded, replace(first.stages[padded], location=INLINE))
    assert all(g.stages[-1].tiles[3] == (1, 1) for g in found)
    assert len({g.key for g in found}) == len(found)


def test_templates_fill_the_vector_registers_the_machine_has():
    """With 32 vector registers, the first channel panel and the first register
    tile hold 24 accumulators (12 points by two vectors) and the 16-register
    tiles follow; with 16, no template holds more than 16 (and every 16-register
    template is among the 32-register ones, but the row-stored twin of the first
    panel, which differs, with its padded input at root and inlined)."""
    op = ek.operators.conv2d(1, 16, 20, 20, 48, 3, pad=1)
    acc = space_of(op).index("acc")

    def accumulators(genome):
        return math.prod(genome.stages[acc].unroll)

    narrow, wide = templates(space_of(op)), templates(space_of(op, registers=32))
    assert max(map(accumulators, narrow)) == 16
    panels = [g for g in wide if g.stages[-1].vector == 2]
    tiles = [g for g in wide if g.stages[-1].vector == g.stages[acc].vector == 0 and g.stages[acc].location > ROOT]
    assert accumulators(panels[0]) == accumulators(tiles[0]) == 24
    twins = {g.key for g in narrow if g.stages[-1].vector == 0 and g.stages[acc].vector == 2}
    assert len(twins) == 2 and {g.key for g in narrow} - twins < {g.key for g in wide}


def test_register_tiled_templates_compute_the_reduction_per_tile():
    """The reduction goes just outside the output's register-tile loop, whatever
    loops the output has: a 1x1 conv on 14x14 has no loop over x tiles, and a
    fixed depth put the accumulator inside the channel tile (one vector per
    reduction: 0.39 ms against 0.09)."""
    op = ek.operators.conv2d(1, 32, 14, 14, 32, 1)
    space = space_of(op)
    acc = next(i for i, s in enumerate(space.stages) if s.has_update)
    tiled = [g for g in templates(space) if g.stages[acc].location > 0 and g.stages[acc].rdepth]
    assert tiled
    checked = 0
    for genome in tiled:
        plans = plan(space, genome)
        loops = [l.name for l in plans[-1].definitions[-1].loops]
        tile = next((i for i, name in enumerate(loops) if name.endswith("_t")), None)
        if tile is not None:  # (a tile of the batch, extent 1, has no loop)
            assert plans[acc].at_loop == loops[tile - 1]
            checked += 1
    assert checked >= 4


def test_short_reductions_first_compute_their_padded_input_per_register_tile():
    """A pooling window's register tiles come first with the padded input computed
    at the tile (where the reduction is), then at root and inlined; a
    convolution's long reduction keeps its padded input at root or inlined. The
    per-tile twin computes the pool."""
    op = ek.operators.max_pool2d(1, 8, 20, 21, 3, stride=2, pad=1)
    space = space_of(op)
    found = templates(space)
    acc, padded = space.index("acc"), space.index("padded")
    per_tile = [g for g in found if g.stages[padded].host]
    assert per_tile and found[1] == per_tile[0]
    for genome in per_tile:
        assert genome.stages[padded].location == genome.stages[acc].location > ROOT
        i = found.index(genome)
        assert [g.stages[padded].location for g in found[i + 1:i + 3]] == [ROOT, INLINE]
        assert found[i + 1].replace_stage(padded, genome.stages[padded]) == genome
        assert plan(space, genome)[padded].at_loop == plan(space, genome)[acc].at_loop
    assert_computes(op, space, per_tile[0], seed=3)
    conv = space_of(ek.operators.conv2d(1, 16, 20, 20, 24, 3, pad=1))
    assert not any(g.stages[conv.index("padded")].host for g in templates(conv))


def test_host_is_kept_only_where_a_stage_can_be_lifted_out_of_its_consumer():
    """``host`` needs a consumer that is itself computed inside another stage
    (not the output), a stage no one else reads, a CPU and a location."""
    for op in (ek.operators.matmul(64, 64, 64), dict(FAMILIES)["softmax"]):
        space = space_of(op)
        for stage, gene in zip(space.stages, repair(space, Genome(tuple(
                StageGene(location=1, host=1) for _ in space.stages))).stages):
            consumer = space.stage(stage.consumer) if stage.consumer else None
            liftable = consumer is not None and not consumer.is_output and not stage.readers
            assert gene.host == int(liftable), stage.name
    space = space_of(ek.operators.matmul(64, 64, 64))
    at_root = Genome(tuple(StageGene(location=ROOT, host=1) for _ in space.stages))
    assert not any(g.host for g in repair(space, at_root).stages)


def test_panel_templates_pack_the_weights_of_gemm_shaped_reductions_only():
    """A matmul and a batched fc get register tiles inside parallel panels with
    the packed copy made per panel; a matrix-vector product (no second dim to
    tile) gets none, nor does a conv with fewer channels than a vector (its
    panels run along its channels, a conv with more gets three, and the first
    one's twin stored along its rows)."""
    for op in (ek.operators.matmul(100, 90, 80), ek.operators.fc(16, 64, 48)):
        space = space_of(op)
        panels = [g for g in templates(space) if any(s.host for s in g.stages)]
        assert len(panels) == 3
        for genome in panels:
            out = genome.stages[-1]
            assert out.order[0] == 0 and out.parallel == 1 and out.vector == 0
            copy = next(s for s in genome.stages if s.host)
            assert copy.location == 1 and copy.vector == 0
    for op in (ek.operators.fc(1, 64, 48), dict(FAMILIES)["conv2d"]):
        assert not any(any(s.host for s in g.stages) for g in templates(space_of(op)))
    space = space_of(ek.operators.conv2d(1, 4, 9, 9, 16, 3, pad=1))
    acc = space.index("acc")
    panels = [g for g in templates(space) if any(s.host for s in g.stages)]
    assert len(panels) == 8 and all(g.stages[-1].order[0] == g.stages[acc].vector == 2 for g in panels)
    assert [g.stages[-1].vector for g in panels] == [0, 0] + [2] * 6


def test_panel_templates_give_each_thread_stretches_of_consecutive_panels():
    """The panel loop of a 1x1 conv over 3025 positions runs as ``PANEL_TASKS``
    stretches per thread, each a serial loop over consecutive panels, and the
    packed copy is still made once per panel, inside them."""
    op = ek.operators.conv1x1(1, 64, 16, 3025)
    space = space_of(op, threads=2)
    panels = [g for g in templates(space) if any(s.host for s in g.stages)]
    assert panels
    for genome in panels:
        assert genome.stages[-1].tasks == PANEL_TASKS
        plans = plan(space, genome)
        loops = plans[-1].definitions[-1].loops
        parallel = [d for d in plans[-1].definitions[-1].directives if d[0] == "parallel"]
        count = math.ceil(3025 / genome.stages[-1].tiles[0][0])
        assert [l.extent for l in loops[:2]] == [2 * PANEL_TASKS, math.ceil(count / (2 * PANEL_TASKS))]
        assert parallel == [("parallel", loops[0].name)]
        copy = next(i for i, s in enumerate(genome.stages) if s.host)
        assert plans[copy].at_loop == loops[1].name


def test_channel_panels_come_widest_first_where_every_thread_gets_one():
    """On 32 vector registers a conv's first channel panel holds four vectors of
    channels where the channels make a panel that wide for each thread, and two
    vectors where they do not (a 64-channel conv on 2 threads, 16 lanes); on one
    thread the four-vector panel comes first there too."""
    def first_panel_vectors(c_out, threads):
        space = space_of(ek.operators.conv2d(1, 32, 12, 12, c_out, 3, pad=1), lanes=16, threads=threads,
                         registers=32)
        panel = next(g for g in templates(space) if any(s.host for s in g.stages))
        return panel.stages[-1].unroll[2]

    assert first_panel_vectors(128, threads=2) == 4
    assert first_panel_vectors(64, threads=2) == 2
    assert first_panel_vectors(64, threads=1) == 4


def test_factored_templates_keep_blocks_of_sums_along_the_output_dims_longer_than_one():
    """A matrix-vector product gets factored reductions with blocks of weight rows
    only; a batched fc also blocks of rows by batch points; a conv, whose first
    reduction variable is a handful of channels, gets none."""
    def blocks(op):
        space = space_of(op)
        acc = next(i for i, s in enumerate(space.stages) if s.has_update)
        return {g.stages[acc].unroll for g in templates(space) if g.stages[acc].rfactor > 1}

    assert blocks(ek.operators.fc(1, 300, 64)) >= {(8, 1), (4, 1)}
    assert all(b[1] == 1 for b in blocks(ek.operators.fc(1, 300, 64)))
    assert blocks(ek.operators.fc(16, 300, 64)) >= {(4, 4), (8, 2), (8, 1)}
    assert not blocks(ek.operators.conv2d(1, 3, 11, 13, 5, k=3, pad=1))
