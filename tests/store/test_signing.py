"""Signed bundles: a bundle signed by this cache (or a key it is given) loads; an
unsigned, foreign or forged one is refused unless ``trusted=True``. And a bundle
that would inflate past its limits is refused before it inflates."""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evokernel as ek
from evokernel.codegen import build
from evokernel.errors import CacheError, UntrustedBundleError
from evokernel.genome import ScheduleSpace, templates
from evokernel.store._signing import sign

OP = ek.operators.matmul(8, 16, 64)


@pytest.fixture(scope="module")
def signed(tuned, tmp_path_factory):
    """(cache, kernel, bundle): a tuned kernel, its cache, and a bundle it saved."""
    kernel = tuned(OP)
    return kernel.cache_dir, kernel, kernel.save(tmp_path_factory.mktemp("bundles") / "mm.ekb")


def another_cache(cache: Path, where: Path) -> Path:
    """A cache with another key (the compiled runtime copied, not rebuilt)."""
    shutil.copytree(cache / "native", where / "native", ignore=shutil.ignore_patterns("scratch"))
    return where


def inputs():
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, s.shape).astype(np.float32) for s in OP.inputs]


def members(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def with_object(files: dict, object_bytes: bytes, key: Ed25519PrivateKey | None = None) -> dict:
    """The bundle's files with another kernel object, the manifest recomputed to match
    (and signed with ``key``, if one)."""
    files = {**files, "kernel.o": object_bytes}
    manifest = json.loads(files["MANIFEST"])
    manifest["kernel.o"] = hashlib.sha256(object_bytes).hexdigest()
    files["MANIFEST"] = json.dumps(manifest, sort_keys=True).encode()
    if key is not None:
        files["SIGNATURE"] = sign(files["MANIFEST"], key)
    return files


def test_a_signed_bundle_round_trips_and_another_cache_needs_its_key(signed, tmp_path):
    cache, kernel, bundle = signed
    a, b = inputs()
    assert np.array_equal(ek.load_kernel(bundle, cache_dir=cache)(a, b), kernel(a, b))
    other = another_cache(cache, tmp_path / "other-cache")
    with pytest.raises(UntrustedBundleError, match=f"signed by key {ek.store.public_key(cache)}"):
        ek.load_kernel(bundle, cache_dir=other)
    assert ek.store.public_key(other) != ek.store.public_key(cache)
    loaded = ek.load_kernel(bundle, cache_dir=other, keys=[ek.store.public_key(cache)])
    assert np.array_equal(loaded(a, b), kernel(a, b))
    assert ek.load_kernel(bundle, cache_dir=other, trusted=True).genome == kernel.genome


def test_a_forged_bundle_is_refused_unless_trusted(signed, tmp_path):
    """Foreign code in the bundle, the manifest recomputed (the checksums all match):
    the signature does not, re-signed with another key it is not a trusted one;
    trusted=True loads it, and runs the foreign code."""
    cache, kernel, bundle = signed
    space = ScheduleSpace.of(OP, kernel.target, 2)
    genome = next(g for g in templates(space) if g != kernel.genome)
    foreign = build(OP, space, genome, kernel.target)
    forged = write(tmp_path / "forged.ekb", with_object(members(bundle), foreign.object_bytes))
    with pytest.raises(UntrustedBundleError, match="forged.ekb: its signature does not match"):
        ek.load_kernel(forged, cache_dir=cache)
    attacker = Ed25519PrivateKey.generate()
    resigned = write(tmp_path / "resigned.ekb", with_object(members(bundle), foreign.object_bytes, attacker))
    with pytest.raises(UntrustedBundleError, match="which this cache does not trust"):
        ek.load_kernel(resigned, cache_dir=cache)
    loaded = ek.load_kernel(forged, cache_dir=cache, trusted=True)
    assert loaded.object_bytes == foreign.object_bytes
    a, b = inputs()
    assert np.allclose(loaded(a, b), a @ b, rtol=1e-4, atol=1e-4)


def test_an_unsigned_bundle_needs_trusted(signed, tmp_path):
    cache, kernel, bundle = signed
    files = members(bundle)
    del files["SIGNATURE"]
    unsigned = write(tmp_path / "unsigned.ekb", files)
    with pytest.raises(UntrustedBundleError, match="unsigned.ekb: it is not signed"):
        ek.load_kernel(unsigned, cache_dir=cache)
    assert ek.load_kernel(unsigned, cache_dir=cache, trusted=True).genome == kernel.genome


def test_a_key_of_ones_own_signs_and_its_public_half_verifies(signed, tmp_path):
    cache, kernel, _ = signed
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    for given in (key, pem):
        path = kernel.save(tmp_path / "own.ekb", key=given)
        with pytest.raises(UntrustedBundleError):
            ek.load_kernel(path, cache_dir=cache)
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        assert ek.load_kernel(path, cache_dir=cache, keys=[public]).genome == kernel.genome
        assert ek.load_kernel(path, cache_dir=cache, keys=[key.public_key()]).genome == kernel.genome


def test_the_cache_key_is_private_and_made_once(signed):
    cache, _, _ = signed
    path = cache / "keys" / "ed25519.pem"
    assert path.stat().st_mode & 0o077 == 0
    assert ek.store.public_key(cache) == ek.store.public_key(cache)


def test_a_damaged_key_is_set_aside_and_a_new_one_made(tmp_path, caplog):
    root = tmp_path / "cache"
    first = ek.store.public_key(root)
    (root / "keys" / "ed25519.pem").write_bytes(b"not a key")
    assert ek.store.public_key(root) != first
    assert list((root / "keys").glob("ed25519.pem.damaged-*")) and "signing key" in caplog.text


def test_a_bundle_that_would_inflate_past_its_limits_is_refused_before_inflating(signed, tmp_path):
    """A 100 KB bundle whose metadata inflates to 100 MiB; and one whose header lies
    about its size: refused, and reading them never holds the inflated bytes."""
    cache, _, bundle = signed
    files = members(bundle)
    bomb = write(tmp_path / "bomb.ekb", {**files, "meta.json": b" " * (100 << 20)})
    assert bomb.stat().st_size < 1 << 20
    liar = tmp_path / "liar.ekb"  # its headers (local and central) say meta.json holds 1000 bytes
    liar.write_bytes(bomb.read_bytes().replace((100 << 20).to_bytes(4, "little"), (1000).to_bytes(4, "little")))
    with zipfile.ZipFile(liar) as z:
        assert z.getinfo("meta.json").file_size == 1000
    tracemalloc.start()
    try:
        with pytest.raises(CacheError, match=r"bomb.ekb: meta.json would inflate to 104857600 bytes"):
            ek.load_kernel(bomb, cache_dir=cache)
        with pytest.raises(CacheError, match=r"liar.ekb"):
            ek.load_kernel(liar, cache_dir=cache)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes held while refusing"


@pytest.mark.parametrize("where", [i / 20 for i in range(20)])
def test_damage_in_the_deflate_stream_is_a_cache_error(signed, tmp_path, where):
    """Bytes flipped at 20 places of the kernel object's compressed data."""
    cache, _, bundle = signed
    data = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as z:
        info = z.getinfo("kernel.o")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    at = start + int(where * info.compress_size)
    for offset in range(at, min(at + 4, start + info.compress_size)):
        data[offset] ^= 0xA5
    damaged = tmp_path / "damaged.ekb"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="damaged.ekb"):
        ek.load_kernel(damaged, cache_dir=cache)
