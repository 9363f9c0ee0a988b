"""``KernelMeta``: what is stored beside a kernel reads back as it was written, and
damaged metadata is refused naming the field (in a bundle) or tuned afresh (in the
cache), never a crash."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import evokernel as ek
from evokernel.store import KernelMeta

OP = ek.operators.relu((4, 16))


@pytest.fixture
def kernel(cache):
    return ek.tune(OP, budget=2, seed=0, evaluator="local", cache_dir=cache)


def test_metadata_round_trips_through_json(kernel):
    data = json.loads(json.dumps(kernel.meta.to_dict()))
    assert KernelMeta.from_dict(data) == kernel.meta
    assert set(data) == {"operator", "operator_args", "signature", "target", "machine", "genome", "schedule",
                         "stats", "budget", "halide_version", "evokernel_version", "created"}
    assert kernel.meta.budget == ek.Budget(evaluations=2) and kernel.meta.stats.budget == "2 evaluations"


@pytest.mark.parametrize("field, value", [("stats", None), ("genome", "garbage"), ("genome", {"stages": [1]}),
                                          ("budget", {"seconds": -1}), ("signature", {}), ("target", 7),
                                          ("created", "yesterday"), ("operator", None)])
def test_a_damaged_field_is_a_cache_error_naming_it(kernel, field, value):
    data = {**kernel.meta.to_dict(), field: value}
    with pytest.raises(ek.CacheError, match=f"'{field}'"):
        KernelMeta.from_dict(data, "here")
    with pytest.raises(ek.CacheError, match="has no 'schedule'"):
        KernelMeta.from_dict({k: v for k, v in kernel.meta.to_dict().items() if k != "schedule"})
    with pytest.raises(ek.CacheError, match="not an object"):
        KernelMeta.from_dict(["not", "a", "dict"])


def _rewrite_bundle(path, meta: dict) -> None:
    """Replace a bundle's meta.json and fix its manifest: damage that checksums cannot see."""
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    files["meta.json"] = json.dumps(meta).encode()
    manifest = json.loads(files["MANIFEST"])
    import hashlib

    manifest["meta.json"] = hashlib.sha256(files["meta.json"]).hexdigest()
    files["MANIFEST"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_a_bundle_with_unusable_metadata_is_refused_by_name(kernel, tmp_path):
    path = kernel.save(tmp_path / "k.ekb")
    meta = json.loads(zipfile.ZipFile(path).read("meta.json"))
    _rewrite_bundle(path, {**meta, "stats": None})
    with pytest.raises(ek.UntrustedBundleError, match="signature does not match"):
        ek.load_kernel(path)
    with pytest.raises(ek.CacheError, match="bundle .*k.ekb.*'stats'"):
        ek.load_kernel(path, trusted=True)  # past the signature, the metadata is still checked


def test_a_cache_entry_with_unusable_metadata_is_tuned_afresh(kernel, cache):
    (entry,) = ek.store.KernelCache(cache).entries()
    meta_path = entry.directory / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "genome": "garbage"}))
    assert ek.cached_kernels(OP, cache_dir=cache) == []
    with pytest.raises(ek.NotTunedError):
        ek.load(OP, cache_dir=cache)
    again = ek.tune(OP, budget=2, seed=0, evaluator="local", cache_dir=cache)
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(4, 16)
    assert np.array_equal(again(x), np.maximum(x, 0))
    assert ek.load(OP, cache_dir=cache).genome == again.genome
