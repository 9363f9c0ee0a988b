"""Keeping winners: store a tuned kernel, load it back (verified), save and load bundles."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..errors import CacheError, NotTunedError
from ..evaluators import FUNCTION, build, default_threads
from ..genome import Genome, ScheduleSpace
from ..operators import Operator, from_dict
from ..search import Budget
from ..target import Target
from . import _native, _paths
from ._cache import Entry, KernelCache, read_bundle
from ._kernel import Kernel, Signature, TuningStats
from ._records import machine_fingerprint, versions

log = logging.getLogger("evokernel")


def kernel_meta(operator: Operator, target: Target, genome: Genome, schedule: str, stats: TuningStats,
                budget: Budget) -> dict:
    """Everything stored beside a kernel's artifact."""
    halide_version, evokernel_version = versions()
    return {"operator": operator.key, "operator_args": operator.to_dict(),
            "signature": Signature.of(operator).to_dict(), "target": target.string,
            "machine": machine_fingerprint(), "genome": genome.to_dict(), "schedule": schedule,
            "stats": stats.to_dict(), "budget": {"seconds": budget.seconds, "evaluations": budget.evaluations},
            "halide_version": halide_version, "evokernel_version": evokernel_version, "created": time.time()}


def store(root: Path, meta: dict, object_bytes: bytes, operator: Operator, threads: int | None = None) -> Kernel:
    """Put a winner in the cache and return it as a Kernel loaded from there."""
    target = Target.parse(meta["target"])
    runtime = _native.runtime_library(target.string, _paths.native_dir(root))
    library = _native.link_kernel(object_bytes, runtime, _paths.native_dir(root))
    entry = KernelCache(root).store(meta, object_bytes, library)
    return Kernel(entry.meta, entry.library_path, runtime, threads or default_threads(), object_bytes, operator,
                  FUNCTION)


def cached_entry(root: Path, operator: Operator, target: Target) -> Entry | None:
    return KernelCache(root).lookup(operator.key, target.string, machine_fingerprint())


def from_entry(root: Path, operator: Operator, entry: Entry, threads: int | None = None) -> Kernel:
    """The Kernel of a cache entry: loaded as is when its files check out; an object
    that fails its checksum is rebuilt from the genome, a library relinked."""
    target = Target.parse(entry.meta["target"])
    runtime = _native.runtime_library(target.string, _paths.native_dir(root))
    object_bytes = entry.verified_object()
    rebuilt = object_bytes is None
    if rebuilt:
        log.warning("cached artifact of %s is missing or corrupted: rebuilding it from its genome", operator.key)
        space = ScheduleSpace.of(operator, target, threads or default_threads())
        object_bytes = build(operator, space, Genome.from_dict(entry.meta["genome"]), target).object_bytes
    if rebuilt or not entry.library_intact():
        KernelCache(root).repair(entry, object_bytes, _native.link_kernel(object_bytes, runtime, _paths.native_dir(root)))
    return Kernel(entry.meta, entry.library_path, runtime, threads or default_threads(), object_bytes, operator,
                  FUNCTION)


def stored_operator(meta: dict) -> Operator | None:
    """The built-in operator a kernel's metadata names, rebuilt; None for a custom
    operator (its code is not stored: the signature is enough to call it)."""
    try:
        return from_dict(meta["operator_args"])
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
    target = Target.parse(target)
    root = _paths.cache_dir(cache_dir)
    entry = cached_entry(root, operator, target)
    if entry is None:
        raise NotTunedError(f"{operator.key} has not been tuned for {target.string} on this machine yet "
                            "(call ek.tune first)")
    return from_entry(root, operator, entry)


def load_kernel(path, cache_dir=None, threads: int | None = None) -> Kernel:
    """Read a bundle written by ``Kernel.save``, after verifying its checksums.

    Raises ``CacheError`` for a missing, corrupted or tampered bundle, and
    ``TargetError`` when its target cannot run on this machine.
    """
    meta, object_bytes = read_bundle(Path(path))
    target = Target.parse(meta["target"])
    if not target.runs_here():
        from ..errors import TargetError

        raise TargetError(f"bundle {path} was built for {target.string}, which cannot run on this machine")
    root = _paths.cache_dir(cache_dir)
    runtime = _native.runtime_library(target.string, _paths.native_dir(root))
    library = _native.link_kernel(object_bytes, runtime, _paths.native_dir(root))
    try:
        return Kernel(meta, library, runtime, threads or default_threads(), object_bytes, stored_operator(meta),
                      FUNCTION)
    except (KeyError, TypeError, ValueError) as error:
        raise CacheError(f"bundle {path} has unusable metadata: {error}") from error
