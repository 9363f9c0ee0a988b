"""Keeping winners: store a tuned kernel, load it back (verified), read bundles."""

from __future__ import annotations

import logging
from pathlib import Path

from ..codegen import build, default_threads, link_kernel, native_runtime
from ..codegen import cache_dir as resolve
from .._checks import check_flag, check_path, check_threads
from ..errors import ArgumentError, NotTunedError, TargetError
from ..genome import ScheduleSpace
from ..operators import Operator, from_dict
from ..target import Target
from ._cache import CacheEntry, KernelCache, read_bundle
from ._kernel import Kernel
from ._meta import KernelMeta
from ._provenance import machine_fingerprint
from ._prune import tidy
from ._signing import trusted_keys

log = logging.getLogger("evokernel")


def store(root: Path, meta: KernelMeta, object_bytes: bytes, operator: Operator, threads: int | None = None) -> Kernel:
    """Put a winner in the cache and return it as a Kernel loaded from there."""
    native, runtime = native_runtime(root, meta.target)
    entry = KernelCache(root).store(meta, object_bytes, link_kernel(object_bytes, runtime, native, meta.target))
    tidy(root)  # the scratch of killed runs, the files of interrupted writes
    return Kernel(entry.meta, entry.library_path, runtime, threads or default_threads(), object_bytes, operator,
                  root=root)


def cached_entry(root: Path, operator: Operator, target: Target) -> CacheEntry | None:
    return KernelCache(root).lookup(operator.key, target.string, machine_fingerprint())


def from_entry(root: Path, operator: Operator | None, entry: CacheEntry, threads: int | None = None) -> Kernel:
    """The Kernel of a cache entry: loaded as is when its files check out; an object
    that fails its checksum is rebuilt from the genome, a library relinked."""
    meta, threads = entry.meta, threads or default_threads()
    native, runtime = native_runtime(root, meta.target)
    object_bytes = entry.verified_object()
    rebuilt = object_bytes is None
    if rebuilt:
        log.warning("cached artifact of %s is missing or corrupted: rebuilding it from its genome", meta.operator)
        target = Target.parse(meta.target)
        object_bytes = build(operator, ScheduleSpace.of(operator, target, threads), meta.genome, target).object_bytes
    if rebuilt or not entry.library_intact():
        KernelCache(root).repair(entry, object_bytes, link_kernel(object_bytes, runtime, native, meta.target))
    return Kernel(meta, entry.library_path, runtime, threads, object_bytes, operator, root=root)


def stored_operator(meta: KernelMeta) -> Operator | None:
    """The built-in operator a kernel's metadata names, rebuilt; None for a custom
    operator (its code is not stored: the signature is enough to call it)."""
    try:
        return from_dict(meta.operator_args)
    except (ValueError, TypeError, KeyError):
        return None


def load(operator: Operator, target="host", cache_dir=None) -> Kernel:
    """The cached kernel of ``operator`` on ``target`` for this machine.

    Raises ``NotTunedError`` when there is none yet (``ek.tune`` makes one).

    >>> import evokernel as ek
    >>> op = ek.operators.relu(32)
    >>> _ = ek.tune(op, budget=3, seed=0)
    >>> ek.load(op).genome == ek.tune(op, budget=3).genome   # the second tune() is the cached kernel
    True
    """
    if not isinstance(operator, Operator):
        hint = f"; ek.cached_kernels({operator!r}) finds cached kernels by name, key or id" \
            if isinstance(operator, str) else ""
        raise ArgumentError(f"operator must be an operator such as ek.operators.matmul(...), "
                            f"got {type(operator).__name__}{hint}")
    target = Target.parse(target)
    root = resolve(cache_dir)
    entry = cached_entry(root, operator, target)
    if entry is None:
        directory = KernelCache(root).directory_of(operator.key, target.string, machine_fingerprint())
        unusable = f" (its cache entry {directory} holds no usable metadata)" if directory.exists() else ""
        raise NotTunedError(f"{operator.key} has not been tuned for {target.string} on this machine yet{unusable} "
                            "(call ek.tune first)")
    return from_entry(root, operator, entry)


def load_kernel(path, cache_dir=None, threads: int | None = None, *, trusted: bool = False, keys=()) -> Kernel:
    """Read a bundle written by ``Kernel.save``, after verifying its checksums and
    its signature: it must be signed by this cache's key (``Kernel.save`` signs with
    it) or one of ``keys`` (public keys: ``ek.store.public_key()`` of the cache that
    signed it). Loading a bundle runs its code: ``trusted=True`` loads an unsigned
    or foreign bundle anyway (its checksums are still verified).

    Raises ``CacheError`` for a missing, corrupted or tampered bundle,
    ``UntrustedBundleError`` (a ``CacheError``) for one not signed by a trusted key,
    and ``TargetError`` when its target cannot run on this machine.
    """
    check_path(path)
    check_threads(threads)
    check_flag(trusted, "trusted")
    root = resolve(cache_dir)
    meta, object_bytes = read_bundle(Path(path), trusted_keys(root, keys), trusted)
    target = Target.parse(meta.target)
    if not target.runs_here():
        raise TargetError(f"bundle {path} was built for {target.string}, which cannot run on this machine")
    native, runtime = native_runtime(root, target.string)
    library = link_kernel(object_bytes, runtime, native)
    return Kernel(meta, library, runtime, threads or default_threads(), object_bytes, stored_operator(meta), root=root)

