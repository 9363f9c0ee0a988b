"""What the cache holds: the tuned kernels of this machine, listed and chosen."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..codegen import cache_dir as resolve
from .._checks import check_threads
from ..errors import ArgumentError, CacheError
from ..operators import Operator
from ..target import Target
from ._cache import CacheEntry, KernelCache
from ._kernel import Kernel
from ._load import from_entry, stored_operator
from ._provenance import machine_fingerprint


@dataclass(frozen=True)
class CachedKernel:
    """One tuned kernel in the cache: its short ``id``, operator key, target, best
    and baseline seconds and when it was stored; ``load()`` gives the ``Kernel``."""

    id: str
    operator: str
    target: str
    time: float
    baseline: float | None
    created: float
    entry: CacheEntry = field(repr=False, compare=False)
    root: Path = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """The operator's name: ``conv2d`` for ``conv2d(n=1,...)``."""
        return self.operator.split("(", 1)[0]

    @property
    def speedup(self) -> float | None:
        """Unscheduled time over tuned time."""
        return self.baseline / self.time if self.baseline and self.time else None

    def load(self, threads: int | None = None) -> Kernel:
        """The callable ``Kernel`` (a damaged artifact is rebuilt from its genome
        where the operator can be rebuilt from its arguments)."""
        check_threads(threads)
        operator = stored_operator(self.entry.meta)
        if operator is None and self.entry.verified_object() is None:
            raise CacheError(f"the cached artifact of {self.operator} is damaged and its operator cannot be "
                             "rebuilt here: tune it again")
        return from_entry(self.root, operator, self.entry, threads)


def cached_kernels(operator: "Operator | str | None" = None, target: "str | Target | None" = None,
                   cache_dir: "str | os.PathLike | None" = None) -> list[CachedKernel]:
    """The kernels tuned on this machine and kept in the cache, newest first.

    ``operator`` keeps those of one operator: an ``Operator``, its key, its name
    (``"conv2d"``) or an id (a prefix of 4 or more characters is enough); ``target``
    keeps one target.

    >>> import evokernel as ek
    >>> op = ek.operators.relu(48)
    >>> _ = ek.tune(op, budget=3, seed=0, evaluator="local")
    >>> [k.operator for k in ek.cached_kernels(op)]
    ['relu(shape=48,dtype=float32)']
    >>> "relu(shape=48,dtype=float32)" in [k.operator for k in ek.cached_kernels("relu")]
    True
    >>> ek.cached_kernels(op.key)[0].load().signature.key == op.key
    True
    """
    if operator is not None and (not isinstance(operator, (Operator, str)) or operator == ""):
        raise ArgumentError(f"operator must be an Operator, a key, a name or an id, got {operator!r}")
    root = resolve(cache_dir)
    machine = machine_fingerprint()
    wanted_target = None if target is None else Target.parse(target).string
    found = []
    for entry in KernelCache(root).entries():
        meta = entry.meta
        if meta.machine != machine or (wanted_target and meta.target != wanted_target):
            continue
        kernel = CachedKernel(entry.directory.name[:8], meta.operator, meta.target, meta.stats.time,
                              meta.stats.baseline, meta.created, entry, root)
        if operator is None or _matches(kernel, operator):
            found.append(kernel)
    return sorted(found, key=lambda k: k.created, reverse=True)


def _matches(kernel: CachedKernel, operator: "Operator | str") -> bool:
    if isinstance(operator, Operator):
        return kernel.operator == operator.key
    if not isinstance(operator, str) or not operator:
        raise ArgumentError(f"operator must be an Operator, a key, a name or an id, got {operator!r}")
    return operator in (kernel.operator, kernel.name) or (len(operator) >= 4 and kernel.id.startswith(operator.lower()))
