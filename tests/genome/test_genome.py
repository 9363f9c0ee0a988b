"""Genomes are plain data: JSON round trips, stable keys, strict parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from _families import FAMILIES, random_draws, seeded, space_of

from evokernel.genome import (
    Genome,
    StageGene,
    crossover,
    mutate,
    random_genome,
    templates,
)

TESTS = Path(__file__).resolve().parents[1]


def sample_genomes(count_per_family: int = 6):
    """(family id, seed, genome): templates, random genomes, mutants and children."""
    out = []
    for name, op in FAMILIES:
        space = space_of(op)
        out += [(name, None, g) for g in templates(space)[:2]]
        for seed in range(count_per_family):
            rng = seeded(seed)
            a, b = random_genome(space, rng), random_genome(space, rng)
            out += [(name, seed, a), (name, seed, mutate(space, a, rng)), (name, seed, crossover(space, a, b, rng)[0])]
    return out


def test_json_round_trip_is_exact():
    for name, _, genome in sample_genomes():
        text = genome.to_json()
        back = Genome.from_json(text)
        assert back == genome, name
        assert back.to_json() == text
        assert back.key == genome.key
        assert hash(back) == hash(genome)
        # the dict form is plain JSON data and round trips too
        data = json.loads(json.dumps(genome.to_dict()))
        assert Genome.from_dict(data) == genome
        assert all(isinstance(s, StageGene) for s in back.stages)
        assert all(isinstance(t, tuple) for s in back.stages for t in s.tiles)


def test_keys_tell_genomes_apart():
    genomes = {g.to_json(): g for _, _, g in sample_genomes()}
    keys = {g.key for g in genomes.values()}
    assert len(keys) == len(genomes)
    assert all(len(k) == 20 and int(k, 16) >= 0 for k in keys)


_CHILD = r"""
import json, sys
from _families import random_draws
from evokernel.genome import Genome
given = [Genome.from_json(t).key for t in json.loads(sys.stdin.read())]
print(json.dumps({"random": random_draws(), "given": given}))
"""


def test_keys_are_the_same_in_another_process():
    """A genome's key, and the genomes a seed draws, do not depend on the process
    (hash randomisation differs per process)."""
    fixed = [g for _, _, g in sample_genomes(2)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps([g.to_json() for g in fixed]),
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    assert child["given"] == [g.key for g in fixed]
    assert child["random"] == random_draws()


GARBAGE = [
    None, [], "stages", 3, {}, {"stages": None}, {"stages": "abc"}, {"stages": {"0": {}}},
    {"stages": [1]}, {"stages": [None]}, {"stages": [[]]}, {"stages": [{"bogus": 1}]},
    {"stages": [{"tiles": 5}]}, {"stages": [{"tiles": [5]}]}, {"stages": [{"tiles": [[1]]}]},
    {"stages": [{"tiles": [[1, 2, 3]]}]}, {"stages": [{"tiles": [["a", "b"]]}]},
    {"stages": [{"order": "ab"}]}, {"stages": [{"order": 1}]}, {"stages": [{"unroll": [None]}]},
    {"stages": [{"rsplit": [1.5]}]}, {"stages": [{"location": "root"}]}, {"stages": [{"location": None}]},
    {"stages": [{"width": 2.5}]}, {"stages": [{"vector": [0]}]}, {"stages": [{"parallel": True}]},
    {"stages": [{"runroll": "yes"}]}, {"stages": [{}, {"rdepth": {}}]},
]


@pytest.mark.parametrize("data", GARBAGE, ids=[str(i) for i in range(len(GARBAGE))])
def test_from_dict_rejects_garbage_with_value_error(data):
    with pytest.raises(ValueError):
        Genome.from_dict(data)
    with pytest.raises(ValueError):
        Genome.from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["", "{", "not json", "[1, 2]", "null", '{"stages": [{"tiles": [[1, 1]],}]}'])
def test_from_json_rejects_bad_text_with_value_error(text):
    with pytest.raises(ValueError):
        Genome.from_json(text)


def test_from_dict_accepts_partial_stage_genes():
    """Missing fields take their defaults (old records stay readable)."""
    g = Genome.from_dict({"stages": [{"location": -1}, {}]})
    assert g.stages == (StageGene(location=-1), StageGene())


def test_replace_stage_keeps_the_rest():
    g = Genome((StageGene(), StageGene(vector=0, width=8), StageGene(parallel=1)))
    h = g.replace_stage(1, StageGene(location=2))
    assert h.stages[0] == g.stages[0] and h.stages[2] == g.stages[2]
    assert h.stages[1] == StageGene(location=2) and g.stages[1] == StageGene(vector=0, width=8)
    assert h.key != g.key


def test_genes_added_later_keep_old_keys():
    """``rfactor``, ``tasks`` and ``rblock`` left at their defaults are not written, so genomes
    recorded before they existed keep their keys (records and caches stay valid)."""
    old = {"stages": [{"location": 0, "order": [0], "parallel": 1, "rdepth": 0, "rsplit": [], "runroll": 0,
                       "tiles": [[1, 1]], "unroll": [1], "vector": 0, "width": 16}]}
    genome = Genome.from_dict(old)
    assert genome.to_dict() == old
    factored = Genome((replace(genome.stages[0], rfactor=16),))
    assert factored.key != genome.key and factored.to_dict()["stages"][0]["rfactor"] == 16
    assert Genome.from_json(factored.to_json()) == factored
    coarse = Genome((replace(genome.stages[0], tasks=2),))
    assert coarse.key not in (genome.key, factored.key) and coarse.to_dict()["stages"][0]["tasks"] == 2
    assert Genome.from_json(coarse.to_json()) == coarse
    blocked = Genome((replace(genome.stages[0], rblock=1),))
    assert blocked.key != genome.key and Genome.from_json(blocked.to_json()) == blocked
