"""Decoding: templates are valid and compile, and the printed schedule is the
schedule: Python that, run against fresh Funcs, schedules them the same way."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import halide as hl
import numpy as np
import pytest
from _families import FAMILIES, FAMILY_IDS, seeded, space_of

import evokernel as ek
from evokernel.codegen import build
from evokernel.genome import (
    INLINE,
    Genome,
    apply,
    plan,
    random_genome,
    repair,
    schedule_code,
    templates,
    unscheduled,
)
from evokernel.target import Target

HOST = Target.parse("host")


def namespace(algorithm) -> dict:
    """What printed schedule code refers to: ``hl``, the stage Funcs by their
    stage names, and each RDom by its name (``r.x`` is RVar ``r$x``)."""
    names = {"hl": hl}
    for stage in algorithm.stages:
        names[stage.name] = stage.func
        if stage.rdom is not None:
            names[stage.rdom[0].name().split("$")[0]] = stage.rdom
    return names


def realize(algorithm, op, arrays) -> np.ndarray:
    """Run a (scheduled) algorithm with Halide's JIT on NumPy arrays."""
    for param, array in zip(algorithm.inputs, arrays):
        param.set(hl.Buffer(np.ascontiguousarray(array)))
    out = hl.Buffer(algorithm.output.func.type(), list(reversed(op.output.shape)))
    algorithm.pipeline().realize(out, HOST.halide)
    return np.asarray(out).copy()


def assert_computes(op, space, genome, seed: int) -> None:
    """``genome`` applied to a fresh algorithm computes ``op`` on random float32
    inputs (float32 sums in any order: within 1e-4)."""
    algorithm = op.algorithm()
    apply(genome, algorithm, space)
    arrays = [np.random.default_rng(seed).standard_normal(s.shape).astype(np.float32) for s in op.inputs]
    np.testing.assert_allclose(realize(algorithm, op, arrays), op.reference(*arrays), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_templates_are_repaired_distinct_and_compile(op):
    space = space_of(op)
    found = templates(space)
    assert found, "every space has at least the flat template"
    assert len({g.key for g in found}) == len(found), "templates are distinct"
    for genome in found:
        assert len(genome.stages) == len(space.stages)
        assert repair(space, genome) == genome, "templates are valid as they are"
        artifact = build(op, space, genome, HOST)  # raises BuildError if Halide rejects it
        assert artifact.object_bytes and artifact.target == HOST.string
        assert artifact.schedule == schedule_code(genome, op.algorithm(), space)
    flat = found[0]
    for stage, gene in zip(space.stages, flat.stages):
        # the flat template inlines what may be inlined and vectorises what has a loop
        assert gene.location == (INLINE if stage.can_inline else 0)


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_schedule_code_names_the_stages_and_is_python(op):
    space = space_of(op)
    for genome in templates(space):
        code = schedule_code(genome, op.algorithm(), space)
        assert code.strip() and not code.startswith("#")
        compile(code, "<schedule>", "exec")
        plans = plan(space, genome)
        for stage, stage_plan in zip(space.stages, plans):
            if stage_plan.location == INLINE:
                assert f"{stage.name}.compute_inline()" in code
            elif not stage.is_output:
                assert f"{stage.name}.compute_" in code, (stage.name, code)
        if any(p.definitions and p.definitions[0].directives for p in plans[-1:]):
            assert f"{space.stages[-1].name}." in code


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_printed_schedule_runs_and_computes_the_operator(op):
    """Exec the printed code of each template against fresh Funcs: it schedules
    them without error, prints the same code again, and the result is right."""
    space = space_of(op)
    arrays = op.random_inputs(np.random.default_rng(7))
    want = op.reference(*arrays)
    rtol, atol = op.tolerance
    for genome in templates(space)[:3]:
        code = schedule_code(genome, op.algorithm(), space)
        algorithm = op.algorithm()
        exec(compile(code, "<schedule>", "exec"), namespace(algorithm))
        np.testing.assert_allclose(realize(algorithm, op, arrays), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_printed_code_of_random_genomes_replays_exactly(op):
    """For random genomes, the printed code applies cleanly wherever ``apply`` did,
    and a Halide rejection is reported as a comment, not an exception."""
    space = space_of(op)
    rng = seeded(99)
    for _ in range(25):
        genome = random_genome(space, rng)
        code = schedule_code(genome, op.algorithm(), space)
        compile(code, "<schedule>", "exec")
        try:
            expected = apply(genome, op.algorithm(), space)
        except hl.HalideError:
            assert code.startswith("# Halide rejects this schedule")
            continue
        assert code == expected
        exec(code, namespace(op.algorithm()))  # the same calls succeed on fresh Funcs


def test_apply_is_deterministic():
    op = FAMILIES[0][1]
    space = space_of(op)
    genome = templates(space)[1]
    assert apply(genome, op.algorithm(), space) == apply(genome, op.algorithm(), space)


@pytest.mark.parametrize("op", [ek.operators.fc(2, 100, 37), ek.operators.softmax((7, 45))], ids=["fc", "softmax"])
@pytest.mark.parametrize("lanes", [8, 32])
def test_rfactor_vectorises_a_partial_reduction_and_computes_the_operator(op, lanes):
    """A reduction factored into vector lanes (also ones that do not divide its
    extent) prints as an ``rfactor`` intermediate and still computes the operator."""
    space = space_of(op)
    flat = templates(space)[0]
    genome = repair(space, Genome(tuple(replace(g, rfactor=lanes) for g in flat.stages)))
    reductions = [i for i, s in enumerate(space.stages) if s.has_update]
    assert all(genome.stages[i].rfactor == lanes for i in reductions)
    assert all(g.rfactor == 1 for i, g in enumerate(genome.stages) if i not in reductions)
    plans = plan(space, genome)
    assert all(plans[i].intermediate is not None for i in reductions)
    code = schedule_code(genome, op.algorithm(), space)
    for i in reductions:
        name = space.stages[i].name
        assert f"{name}_intm = {name}.update(0).rfactor(" in code
        assert f"{name}_intm.update(0).vectorize(" in code
    arrays = op.random_inputs(np.random.default_rng(3))
    algorithm = op.algorithm()
    exec(compile(code, "<schedule>", "exec"), namespace(algorithm))
    rtol, atol = op.tolerance
    np.testing.assert_allclose(realize(algorithm, op, arrays), op.reference(*arrays), rtol=rtol, atol=atol)


@pytest.mark.parametrize("op, block", [(ek.operators.fc(5, 100, 37), (4, 3)), (ek.operators.fc(1, 70, 19), (8, 1)),
                                       (ek.operators.softmax((7, 45)), (4,))], ids=["fc", "matvec", "softmax"])
def test_a_factored_reduction_keeps_a_block_of_sums_per_unrolled_point(op, block):
    """A factored reduction whose update unrolls pure loops (blocks that do not
    divide the extents too) sums every point of the block in its own vector,
    unrolled inside the intermediate's reduction loop, the lanes stored innermost,
    and still computes the operator."""
    space = space_of(op)
    flat = templates(space)[0]
    index = next(i for i, s in enumerate(space.stages) if s.has_update)
    genome = repair(space, flat.replace_stage(index, replace(flat.stages[index], rfactor=8, unroll=block)))
    assert genome.stages[index].unroll == block
    update = plan(space, genome)[index].intermediate.definitions[1]
    unrolled = [d[1] for d in update.directives if d[0] == "unroll"]
    assert len(unrolled) == sum(b > 1 for b in block)
    order = next(d for d in update.directives if d[0] == "reorder")[1:]
    rvar = space.stages[index].rvars[0]
    assert set(order[1:order.index(rvar)]) == set(unrolled)  # between the lanes and the reduction
    storage = next(d for d in plan(space, genome)[index].intermediate.definitions[0].directives)
    assert storage[:2] == ("reorder_storage", order[0])
    arrays = op.random_inputs(np.random.default_rng(5))
    algorithm = op.algorithm()
    exec(compile(schedule_code(genome, op.algorithm(), space), "<schedule>", "exec"), namespace(algorithm))
    rtol, atol = op.tolerance
    np.testing.assert_allclose(realize(algorithm, op, arrays), op.reference(*arrays), rtol=rtol, atol=atol)


def test_rfactor_is_repaired_away_where_it_cannot_apply():
    op = ek.operators.conv2d(1, 3, 11, 13, 5, k=3, pad=1)  # first reduction variable: 3 taps
    space = space_of(op)
    genome = repair(space, Genome(tuple(replace(g, rfactor=16) for g in templates(space)[0].stages)))
    assert all(g.rfactor == 1 for g in genome.stages)
    assert "rfactor" not in schedule_code(genome, op.algorithm(), space)


@pytest.mark.parametrize("op", [ek.operators.matmul(64, 48, 96), ek.operators.fc(3, 200, 24)], ids=["matmul", "fc"])
def test_producers_of_a_factored_reduction_stay_outside_its_intermediate(op):
    """The ``rfactor`` intermediate is computed at one loop of its stage and reads
    the stage's producers (packed operands): a producer computed deeper in that
    stage's loops is invalid in Halide, so the plan never places one there (a
    quarter of random matmul genomes failed to compile)."""
    space = space_of(op)
    rng = seeded(11)
    tried = 0
    for _ in range(60):
        genome = random_genome(space, rng)
        if not any(g.rfactor > 1 for g in genome.stages):
            continue
        tried += 1
        build(op, space, genome, HOST)  # raises BuildError if Halide rejects it
    assert tried >= 8


@pytest.mark.parametrize("shape, threads, tasks", [((1, 64, 112, 112), 2, 1), ((3, 5, 7, 33), 2, 2), ((9, 40), 4, 8),
                                                   ((9, 40), 2, 4)])
def test_tasks_cut_the_parallel_loop_into_stretches_per_thread(shape, threads, tasks):
    """``tasks`` per thread: the fused parallel loop of E iterations runs about
    ``threads * tasks`` tasks (E if fewer), each a serial loop over consecutive
    iterations, whatever the extents; the operator is still computed exactly."""
    op = ek.operators.relu(shape)
    space = space_of(op, threads=threads)
    flat = templates(space)[0]
    extent = plan(space, flat)[-1].definitions[0].loops[0].extent
    genome = repair(space, Genome(tuple(replace(g, tasks=tasks) for g in flat.stages)))
    loops = plan(space, genome)[-1].definitions[0].loops
    if threads * tasks < extent:
        size = math.ceil(extent / (threads * tasks))
        assert loops[1].name.endswith("_k") and loops[1].extent == size
        assert loops[0].extent == math.ceil(extent / size) <= threads * tasks
    else:
        assert loops == plan(space, flat)[-1].definitions[0].loops
    arrays = op.random_inputs(np.random.default_rng(0))
    algorithm = op.algorithm()
    apply(genome, algorithm, space)
    np.testing.assert_array_equal(realize(algorithm, op, arrays), op.reference(*arrays))


def test_producers_are_computed_per_tile_not_per_task():
    """A stage computed at the output's parallel loop goes inside its tasks, at the
    same tile as without them: a gemm accumulator placed on the loop over tasks
    spanned a task's many tiles, fully unrolled, and its build ran past the compile
    timeout."""
    op = ek.operators.matmul(m=64, n=64, k=32)
    space = space_of(op)
    # a register-tiled template (not a panel): the accumulator at the output's tile loop
    registered = [g for g in templates(space) if not any(s.host for s in g.stages)][-1]
    acc = next(i for i, s in enumerate(space.stages) if s.has_update)
    assert plan(space, registered)[acc].location >= 1
    genome = repair(space, registered.replace_stage(-1, replace(registered.stages[-1], tasks=1)))
    plans, before = plan(space, genome), plan(space, registered)
    task_loop = plans[-1].definitions[-1].loops[0]
    assert not task_loop.site and task_loop.name not in [l.name for l in plans[-1].loops]
    assert plans[acc].at_loop == before[acc].at_loop + "_k"
    assert [l.extent for l in plans[acc].definitions[-1].loops] == [l.extent for l in before[acc].definitions[-1].loops]
    arrays = op.random_inputs(np.random.default_rng(0))
    algorithm = op.algorithm()
    apply(genome, algorithm, space)
    np.testing.assert_allclose(realize(algorithm, op, arrays), op.reference(*arrays), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_a_stage_inside_its_consumer_vectorises_and_unrolls_split_off_loops(op):
    """Inside a consumer a stage's extents are estimates (stencil offsets are left
    out), so lanes and unrolled loops are split off by their factor, never a whole
    loop of the estimated extent."""
    space = space_of(op)
    rng = seeded(5)
    for _ in range(60):
        genome = random_genome(space, rng)
        for stage_plan in plan(space, genome):
            if stage_plan.at_loop is None:
                continue
            for d in stage_plan.definitions:
                split_off = {x[3] for x in d.directives if x[0] == "split"}
                for kind, name, *_ in (x for x in d.directives if x[0] in ("vectorize", "unroll")):
                    assert name in split_off, (kind, name, d.directives)


def test_a_padded_row_wider_than_its_estimate_builds():
    """A conv's padded input computed at an inner reduction loop spans one column
    more than the estimate; vectorised whole, that 33-lane loop aborted LLVM inside
    the build (a lost Ray worker per candidate). Built in a child process, so a
    regression fails this test rather than ending the test run."""
    genome = '{"stages":[{"location":-1,"order":[2,3,1,0],"parallel":2,"rdepth":0,"rsplit":[],"runroll":0,"tiles":[[1,1],[1,1],[1,1],[1,1]],"unroll":[1,2,16,1],"vector":0,"width":16},{"location":4,"order":[3,2,1,0],"parallel":2,"rdepth":0,"rsplit":[],"runroll":0,"tasks":2,"tiles":[[1,1],[1,1],[1,1],[1,1]],"unroll":[1,1,1,1],"vector":0,"width":64},{"location":3,"order":[3,2,1,0],"parallel":0,"rdepth":16,"rsplit":[2,1,4],"runroll":0,"tiles":[[1,1],[1,1],[1,1],[1,1]],"unroll":[2,1,8,1],"vector":0,"width":16},{"location":0,"order":[3,2,1,0],"parallel":2,"rdepth":0,"rsplit":[],"runroll":0,"tiles":[[32,32],[1,1],[8,8],[1,1]],"unroll":[1,1,16,1],"vector":0,"width":32}]}'
    code = (
        "import json, evokernel as ek\n"
        "from evokernel.genome import Genome, ScheduleSpace\n"
        "from evokernel.codegen import build\n"
        "from evokernel.target import Target\n"
        "op = ek.operators.conv2d(1, 64, 56, 56, 64, 3, pad=1)\n"
        "target = Target.parse('host')\n"
        "space = ScheduleSpace.of(op, target, 2)\n"
        f"build(op, space, Genome.from_dict(json.loads({genome!r})), target)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_copy_hosted_by_its_consumers_consumer_is_made_once_per_panel():
    """``host=1``: a matmul's copy of B is computed at the output's loop over
    panels (outside the accumulator's tiles), holds one panel of B, and the
    kernel still computes the product."""
    op = ek.operators.matmul(40, 50, 30)
    space = space_of(op)
    panelled = [g for g in templates(space) if any(s.host for s in g.stages)]
    assert panelled
    copy = space.index("Bc")
    for genome in panelled:
        plans = plan(space, genome)
        assert plans[copy].at_stage == "out" and plans[copy].at_loop == plans[-1].loops[0].name
        assert f"Bc.compute_at(out, {plans[copy].at_loop})" in schedule_code(genome, op.algorithm(), space)
        assert_computes(op, space, genome, seed=1)


@pytest.mark.parametrize("op", [ek.operators.conv2d(1, 5, 9, 11, 20, 3, stride=2, pad=1, activation="relu"),
                                ek.operators.conv2d(1, 8, 7, 6, 24, 3, pad=1, groups=2, bias=True),
                                ek.operators.conv2d(1, 12, 5, 13, 17, 1)], ids=["stride2", "groups", "1x1"])
def test_channel_panels_vectorise_a_conv_along_its_output_channels(op):
    """A conv's channel panels: the output's channels vectorised and outermost,
    the weight copy packed once per panel with channels innermost, the
    accumulator holding channels innermost with its channel vectors unrolled
    innermost (one broadcast of the input meets every vector); the kernel
    computes the conv, also where the channels do not fill the last panel (with
    the tiles of a 32-register machine, twice the 16-register ones)."""
    space = space_of(op, registers=32)
    acc, wp = space.index("acc"), space.index("Wp")
    panels = [g for g in templates(space) if g.stages[-1].vector == 2]
    assert panels
    for genome in panels:
        plans = plan(space, genome)
        assert plans[wp].at_stage == "out" and plans[wp].at_loop == plans[-1].loops[0].name
        assert genome.stages[wp].vector == 0 and genome.stages[acc].order[-1] == 2
        assert ("reorder_storage", "c", "x", "y", "n") in plans[acc].definitions[0].directives
        assert_computes(op, space, genome, seed=3)


@pytest.mark.parametrize("op", [ek.operators.conv2d(1, 20, 9, 23, 40, 3, pad=1, activation="relu"),
                                ek.operators.conv2d(2, 8, 6, 7, 24, 3, stride=2, pad=1, bias=True)],
                         ids=["row-of-23", "batch-stride2"])
def test_a_row_stored_panel_writes_whole_rows_of_each_channel(op):
    """A channel panel's row-stored twin comes before it: its sums are still
    vectors along the channels, tiled as the panel's, but computed one whole row
    of the panel at a time (inside the output's loops over the other dims,
    outside its channel loops), and the output is stored in vectors along the
    row; it computes the conv, also where the row is not a multiple of the vector."""
    space = space_of(op, registers=32)
    acc = space.index("acc")
    found = templates(space)
    index = next(i for i, g in enumerate(found) if g.stages[acc].vector == 2 and g.stages[-1].vector == 0)
    twin, panel = found[index], next(g for g in found[index:] if g.stages[-1].vector == 2)
    assert twin.stages[acc].unroll == panel.stages[acc].unroll
    plans = plan(space, twin)
    out_loops = [l.name for l in plans[-1].definitions[-1].loops]
    assert out_loops.index(plans[acc].at_loop) == out_loops.index("y")
    assert out_loops[-1] == ("x_v" if op.output.shape[-1] > space.lanes else "x")
    assert_computes(op, space, twin, seed=4)


def test_a_row_fitted_panel_holds_a_short_row_in_its_register_tile():
    """Where a conv's row is not a whole number of its first panel's tiles (7
    points against 6, 14 against 6), the first template is that panel with a tile
    of the whole row by as many channel vectors as divide the channels and fit in
    the registers beside their accumulators, row-stored; it computes the conv. A
    row of whole tiles (12 against 6) or too long for two vectors (15) gets none."""
    op = ek.operators.conv2d(1, 16, 7, 7, 64, 3, pad=1, bias=True)
    space = space_of(op, registers=32)
    acc = space.index("acc")
    found = templates(space)
    first = next(g for g in found if g.stages[acc].vector == 2)
    assert first.stages[acc].unroll == (7, 1, 2, 1) and first.stages[-1].vector == 0
    assert first.stages[-1].tiles[2] == (2 * space.lanes,) * 2
    assert_computes(op, space, first, seed=6)

    def first_rows(size: int) -> tuple:
        wide = space_of(ek.operators.conv2d(1, 16, size, size, 256, 3, pad=1), registers=32)
        return next(g for g in templates(wide) if g.stages[acc].vector == 2).stages[acc].unroll

    assert first_rows(14)[0::2] == (14, 2)
    assert first_rows(12)[0] != 12 and first_rows(15)[0] != 15

@pytest.mark.parametrize("op", [ek.operators.conv2d(1, 40, 7, 9, 36, 3, pad=1, bias=True),
                                ek.operators.matmul(40, 100, 300)], ids=["conv", "matmul"])
def test_a_blocked_panel_runs_every_tile_inside_each_block_of_the_reduction(op):
    """A panel's ``_blocked`` twin: the accumulator computed once per panel, the
    outer loop of its last reduction variable outside the accumulator's own loops
    and the rest of the reduction just outside the register tile; it computes the
    operator, also where the blocks do not divide the reduction."""
    space = space_of(op, registers=32)
    acc = space.index("acc")
    blocked = [g for g in templates(space) if g.stages[acc].rblock]
    assert blocked
    for genome in blocked:
        plans = plan(space, genome)
        assert plans[acc].at_loop == plans[-1].loops[0].name
        loops = plans[acc].definitions[-1].loops
        tile = [l for l in loops if l.name.endswith(("_u", "_v"))]
        assert loops[0].name == space.stages[acc].rvars[-1] and not loops[1].rvar
        assert loops[-len(tile) - 1].rvar and loops[-len(tile):] == tile
        assert_computes(op, space, genome, seed=5)


def test_a_stage_inside_its_consumer_stores_its_vector_dimension_innermost():
    """Vectors along a dimension that is not innermost in storage are gathered
    and scattered one element at a time; a stage computed inside its consumer
    and vectorised along another dimension stores that one innermost."""
    op = ek.operators.conv2d(1, 16, 6, 6, 24, 1)
    space = space_of(op)
    acc = space.index("acc")
    genome = unscheduled(space)
    genome = genome.replace_stage(acc, replace(genome.stages[acc], location=1, vector=2, width=8))
    genome = repair(space, genome)
    directives = plan(space, genome)[acc].definitions[0].directives
    assert directives[:2] == [("reorder_storage", "c", "x", "y", "n"), ("align_storage", "c", 2)]
    assert_computes(op, space, genome, seed=2)
