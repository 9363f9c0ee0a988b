"""No stage is ever stored as a single element. Halide gives a one-element stack
buffer only its element's alignment, yet loads a vector from it as an aligned
address (a producer computed inside its consumer's vectorised, guarded loop, whose
region there is one point); with AVX-512 that load is a masked ``vmovaps``, which
faults on a misaligned address whatever its mask: matmul 96×80×64's genome
``078c0950111e2918ec15`` segfaulted on every AVX-512 machine. Every stage computed
inside a consumer (or at root with one element) has its innermost storage dimension
padded to two elements, so its buffer gets vector alignment."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import halide as hl
import pytest
from _families import FAMILIES

import evokernel as ek
from evokernel.codegen._build import compile_files
from evokernel.genome import Genome, ScheduleSpace, random_genome

#: An AVX-512 target (compiled here, never run: this machine may not have AVX-512).
AVX512 = "x86-64-linux-avx-avx2-f16c-fma-sse41-avx512-avx512_skylake-avx512_cannonlake-avx512_zen4-no_runtime"

#: The genome of the 31st candidate of a seed-1 search of matmul 96×80×64 on an
#: AVX-512 machine (16 float lanes).
FAULTED = ('{"stages":[{"location":9,"order":[0,1],"parallel":2,"rdepth":4,"rsplit":[],"runroll":0,"tasks":8,'
           '"tiles":[[20,1],[1,1]],"unroll":[2,4],"vector":1,"width":32},{"location":1,"order":[1,0],"parallel":2,'
           '"rdepth":5,"rsplit":[32],"runroll":0,"tasks":2,"tiles":[[20,8],[1,1]],"unroll":[1,2],"vector":0,'
           '"width":32},{"location":0,"order":[0,1],"parallel":2,"rdepth":5,"rsplit":[],"runroll":0,"tasks":2,'
           '"tiles":[[1,1],[96,48]],"unroll":[1,1],"vector":1,"width":32}]}')

ONE_ELEMENT = re.compile(r"allocate \S+\[\w+( \* 1)+\]")
#: A masked aligned vector load from the stack at a constant offset: ``vmovaps 28(%rsp), %ymm5 {%k1}``.
STACK_LOAD = re.compile(r"^\s*vmov(?:aps|apd|dqa32|dqa64)\s+(-?\d*)\(%rsp\),\s*%([xyz])mm\d+\s*\{%k", re.M)


def compiled(op, space, genome, tmp_path, kind=hl.OutputFileType.stmt) -> str:
    path = tmp_path / f"kernel.{kind.name}"
    compile_files(op, space, genome, hl.Target(AVX512), {kind: path})
    return path.read_text()


def test_the_genome_that_faulted_on_avx512_loads_only_aligned_vectors(tmp_path):
    """The copy of B in that genome is vectorised along its dim 1, which a stage
    inside its consumer now stores innermost (no stage of one element in x any
    more); vectorised along dim 0 instead, it is the case that faulted."""
    op = ek.operators.matmul(m=96, n=80, k=64)
    space = ScheduleSpace.from_algorithm(op.algorithm(), 16, 1)
    genome = Genome.from_json(FAULTED)
    assert genome.key == "078c0950111e2918ec15"
    genome = genome.replace_stage(0, replace(genome.stages[0], vector=0))
    assert not ONE_ELEMENT.search(compiled(op, space, genome, tmp_path))
    assembly = compiled(op, space, genome, tmp_path, hl.OutputFileType.assembly)
    loads = [(int(offset or 0), {"x": 16, "y": 32, "z": 64}[width]) for offset, width in STACK_LOAD.findall(assembly)]
    assert loads, "the vector load of the stage computed innermost is masked"
    assert all(offset % width == 0 for offset, width in loads), loads


@pytest.mark.parametrize("family, op", [pytest.param(name, op, id=name) for name, op in FAMILIES
                                        if name in ("matmul", "conv2d", "softmax", "max_pool")])
def test_no_stage_of_a_random_genome_is_stored_as_one_element(family, op, tmp_path):
    space = ScheduleSpace.from_algorithm(op.algorithm(), 16, 4)
    rng = random.Random(family)
    for _ in range(12):
        genome = random_genome(space, rng)
        try:
            text = compiled(op, space, genome, tmp_path)
        except ek.BuildError:
            continue
        assert not ONE_ELEMENT.search(text), (genome.key, ONE_ELEMENT.search(text).group(0))


@pytest.mark.slow
def test_the_seed_1_search_of_matmul_96_80_64_runs_inline():
    """The search that met the faulting genome, with kernels called in this process:
    it must not end it (on an AVX-512 machine it segfaulted before)."""
    kernel = ek.tune(ek.operators.matmul(m=96, n=80, k=64), budget=40, seed=1, evaluator="inline",
                     records="memory", retune=True)
    assert kernel.stats.outcomes.get("ok", 0) > 0
