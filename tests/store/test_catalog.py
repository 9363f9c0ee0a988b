"""``ek.cached_kernels``: what the cache holds, chosen by operator, key, id and target;
entries of other machines or with unreadable metadata are left out, never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

import evokernel as ek


@pytest.fixture(scope="module")
def catalog(make_cache, tuned):
    """A cache holding three kernels, tuned in this order, and their operators."""
    path = make_cache("catalog")
    ops = [ek.operators.relu((3, 7)), ek.operators.relu(13), ek.operators.matmul(6, 5, 4)]
    for op in ops:
        tuned(op, budget=2, cache_dir=path)
    return path, ops


def test_lists_every_kernel_newest_first(catalog):
    path, ops = catalog
    kernels = ek.cached_kernels(cache_dir=path)
    assert [k.operator for k in kernels] == [op.key for op in reversed(ops)]
    assert all(k.target == ek.Target.parse("host").string and k.time > 0 for k in kernels)
    assert all(k.speedup == pytest.approx(k.baseline / k.time) for k in kernels)
    assert len({k.id for k in kernels}) == 3 and all(len(k.id) == 8 for k in kernels)


def test_chosen_by_operator_name_key_and_id(catalog):
    path, (relu_a, relu_b, matmul) = catalog
    assert {k.operator for k in ek.cached_kernels("relu", cache_dir=path)} == {relu_a.key, relu_b.key}
    assert [k.operator for k in ek.cached_kernels(matmul, cache_dir=path)] == [matmul.key]
    assert [k.operator for k in ek.cached_kernels(relu_b.key, cache_dir=path)] == [relu_b.key]
    one = ek.cached_kernels(matmul, cache_dir=path)[0]
    assert ek.cached_kernels(one.id[:4], cache_dir=path) == [one]
    assert ek.cached_kernels(one.id[:3], cache_dir=path) == []  # too short to be an id
    assert ek.cached_kernels("conv2d", cache_dir=path) == []
    assert ek.cached_kernels(target="x86-64-linux-sse41", cache_dir=path) == []
    assert len(ek.cached_kernels(target="host", cache_dir=path)) == 3


def test_loaded_kernel_computes(catalog):
    path, (relu_a, _, _) = catalog
    kernel = ek.cached_kernels(relu_a, cache_dir=path)[0].load()
    x = np.linspace(-1, 1, 21, dtype=np.float32).reshape(3, 7)
    np.testing.assert_array_equal(kernel(x), np.maximum(x, 0))


def test_other_machines_and_unreadable_entries_are_left_out(catalog, tmp_path):
    path, (relu_a, relu_b, matmul) = catalog
    entries = {k.operator: k.entry for k in ek.cached_kernels(cache_dir=path)}
    other, broken = (entries[op.key].directory / "meta.json" for op in (relu_a, relu_b))
    saved = other.read_text(), broken.read_text()
    other.write_text(json.dumps({**json.loads(saved[0]), "machine": "another-machine"}))
    broken.write_text("{not json")
    try:
        assert [k.operator for k in ek.cached_kernels(cache_dir=path)] == [matmul.key]
    finally:
        other.write_text(saved[0])
        broken.write_text(saved[1])


@pytest.mark.parametrize("operator", [3, b"relu", ""])
def test_operator_of_the_wrong_kind(catalog, operator):
    with pytest.raises(TypeError, match="operator must be"):
        ek.cached_kernels(operator, cache_dir=catalog[0])
