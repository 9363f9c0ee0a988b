"""GPU mappings: the same genome type, decoded onto blocks, threads and shared
memory when the space is a GPU target's. Compiled for CUDA and OpenCL (no device is
needed to compile); running them is tests/codegen/test_opencl.py's job."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from _families import FAMILIES, FAMILY_IDS, seeded

from evokernel.codegen import build
from evokernel.errors import BuildError
from evokernel.genome import ROOT, Genome, ScheduleSpace, StageGene, plan, random_genome, schedule_code, templates
from evokernel.genome._gpu import MAX_THREADS
from evokernel.operators import conv2d, matmul
from evokernel.target import Target

CUDA, OPENCL = Target.parse("x86-64-linux-cuda"), Target.parse("x86-64-linux-opencl")


def gpu_space(op) -> ScheduleSpace:
    return ScheduleSpace.from_algorithm(op.algorithm(), 8, 2, gpu=True)


def directives(definition, name):
    return [d for d in definition.directives if d[0] == name]


def threads_per_block(definition) -> int:
    extents = {l.name: l.extent for l in definition.loops}
    (call,) = directives(definition, "gpu_threads")
    return math.prod(extents[name] for name in call[1:])


def test_output_becomes_blocks_of_threads_with_a_serial_thread_tile():
    op = matmul(m=64, n=96, k=32)
    space = gpu_space(op)
    out = space.index("out")
    gene = StageGene(tiles=((32, 4), (8, 1)), order=(1, 0), vector=0, unroll=(2, 1))
    genome = replace(templates(space)[0], stages=templates(space)[0].stages[:out] + (gene,))
    definition = plan(space, genome)[out].definitions[0]
    assert directives(definition, "gpu_blocks") == [("gpu_blocks", "x", "y")]
    assert directives(definition, "gpu_threads") == [("gpu_threads", "x_t", "y_t")]
    assert directives(definition, "unroll") == [("unroll", "x_t_i")]
    assert [l.name for l in definition.loops] == ["y", "x", "y_t", "x_t", "x_t_i"]
    assert threads_per_block(definition) == 8 * 8


def test_producers_at_the_block_loop_are_staged_in_shared_memory_and_inside_threads_serial():
    op = conv2d(1, 3, 12, 12, 8, k=3, pad=1)
    space = gpu_space(op)
    base = list(templates(space)[0].stages)
    padded, acc = space.index("padded"), space.index("acc")
    base[acc] = replace(base[acc], location=ROOT)
    base[padded] = replace(base[padded], location=1)  # acc's innermost block loop
    shared = plan(space, Genome(tuple(base)))[padded]
    assert shared.gpu == "shared" and ("store_in", ) == directives(shared.definitions[0], "store_in")[0][:1]
    assert directives(shared.definitions[0], "store_in")[0][1].name == "GPUShared"
    assert directives(shared.definitions[0], "gpu_threads")
    assert not directives(shared.definitions[0], "gpu_blocks")
    base[padded] = replace(base[padded], location=2)  # acc's innermost thread loop
    serial = plan(space, Genome(tuple(base)))[padded]
    assert serial.gpu == "serial" and serial.at_loop.endswith("_t")
    assert not any(d[0].startswith("gpu_") for d in serial.definitions[0].directives)
    for genome in (Genome(tuple(base)),):
        build(op, space, genome, OPENCL)  # Halide accepts both placements


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_random_genomes_compile_for_gpus_or_fail_as_build_failures(op):
    check_gpu_genomes(op, randoms=2, first_templates=2)


@pytest.mark.slow
@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_more_random_genomes_compile_for_gpus_or_fail_as_build_failures(op):
    check_gpu_genomes(op, randoms=12)


def check_gpu_genomes(op, randoms: int, first_templates: int | None = None) -> None:
    space = gpu_space(op)
    rng = seeded(7)
    genomes = templates(space)[:first_templates] + [random_genome(space, rng) for _ in range(randoms)]
    built = 0
    for index, genome in enumerate(genomes):
        for p in plan(space, genome):
            for definition in p.definitions:
                if directives(definition, "gpu_threads") and p.gpu == "kernel":
                    assert threads_per_block(definition) <= MAX_THREADS
        try:
            artifact = build(op, space, genome, CUDA if index % 2 else OPENCL)
        except BuildError as failure:
            assert str(failure).strip()
            continue
        built += 1
        assert "gpu_blocks" in artifact.schedule or op.output.shape == ()
        assert artifact.schedule == schedule_code(genome, op.algorithm(), space)
    assert built >= len(genomes) // 2, f"only {built} of {len(genomes)} GPU schedules compiled"


def test_the_cpu_space_never_plans_gpu_directives():
    op = matmul(m=16, n=16, k=16)
    cpu = ScheduleSpace.from_algorithm(op.algorithm(), 8, 2)
    assert not cpu.gpu
    rng = seeded(1)
    for genome in templates(cpu) + [random_genome(cpu, rng) for _ in range(10)]:
        for p in plan(cpu, genome):
            assert p.gpu == "" and p.sites is None
            assert not any(d[0].startswith("gpu_") for df in p.definitions for d in df.directives)
