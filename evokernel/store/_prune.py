"""Keeping the cache bounded: what it must keep, and what it may lose.

Kept: the winners (one entry per operator, target and machine: its object, its
library and its metadata), the records database, the signing key, the runtime
library of each target, and whatever a running process is using. Every tune
removes the scratch of killed runs and the files of interrupted writes on its way
out (``tidy``); ``prune_cache`` removes besides the damaged files that were moved
aside, cache entries whose metadata this version cannot read, runtimes of other
Halide versions and stale lock files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from .._checks import check_flag
from .._format import format_bytes
from ..codegen import DAMAGED, PARTIAL, Removal, native_dir, prune_native
from ..codegen import cache_dir as resolve
from ._cache import ENTRY_FILES, KernelCache, _read_entry, library_name

#: Seconds a temporary file is left alone (a write in progress is never that old).
STALE = 3600.0


@dataclass(frozen=True)
class PruneReport:
    """What ``prune_cache`` removed (or would have, with ``dry_run``): files and
    bytes by kind, and the bytes the cache holds afterwards (before, with ``dry_run``)."""

    removed: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: int = 0
    dry_run: bool = False

    @property
    def reclaimed(self) -> int:
        """Bytes removed (or removable)."""
        return sum(size for _, size in self.removed.values())

    @property
    def files(self) -> int:
        return sum(files for files, _ in self.removed.values())

    def __str__(self) -> str:
        if self.dry_run:
            head = f"would remove {self.files} files, {format_bytes(self.reclaimed)} of the cache's {format_bytes(self.kept)}"
        else:
            head = f"removed {self.files} files, {format_bytes(self.reclaimed)}; the cache holds {format_bytes(self.kept)}"
        lines = [head]
        lines += [f"  {what}: {files} files, {format_bytes(size)}" for what, (files, size) in self.removed.items()]
        return "\n".join(lines)


def prune_cache(cache_dir=None, *, dry_run: bool = False) -> PruneReport:
    """Remove what the cache need not keep and report the space reclaimed.

    Keeps every readable winner, the records, the signing key, the runtime library
    of each target and what running processes use; removes the scratch of killed
    runs, files of interrupted writes, damaged files moved aside, entries whose
    metadata does not read back, runtimes of other Halide versions and stale lock
    files. With ``dry_run``, reports and removes nothing (damaged files it comes
    upon are still moved aside, as any read of the cache does).

    >>> import evokernel as ek
    >>> report = ek.prune_cache(dry_run=True)
    >>> report.reclaimed >= 0 and str(report).startswith("would remove")
    True
    """
    check_flag(dry_run, "dry_run")
    root = resolve(cache_dir)
    removal = _prune(root, Removal(dry_run), everything=True)
    return PruneReport(removal.removed, Removal.measure(root)[1], dry_run)


def tidy(root: Path) -> None:
    """The light pruning every stored winner ends with: the scratch of killed runs
    and the files of interrupted writes."""
    _prune(root, Removal(), everything=False)


def _prune(root: Path, removal: Removal, everything: bool) -> Removal:
    prune_native(native_dir(root), removal, everything)
    for directory in (root, root / "keys"):
        for path in directory.iterdir() if removal.is_dir(directory) else ():
            if path.name.endswith(PARTIAL) and removal.age(path) > STALE:
                removal.drop("leftovers of interrupted writes", path)
            elif everything and DAMAGED in path.name:
                removal.drop("damaged files set aside", path)
    if everything:
        _prune_entries(KernelCache(root), removal)
    return removal


def _prune_entries(cache: KernelCache, removal: Removal) -> None:
    """Entries whose metadata does not read back, files in an entry that are not
    its own (an earlier winner's library, interrupted writes, damage set aside),
    and lock files of entries that are gone."""
    for path in list(cache.root.iterdir()):
        if path.name.endswith(".lock"):
            if not os.path.lexists(path.with_suffix("")) and removal.age(path) > STALE:
                removal.drop("lock files of removed files", path)
        elif DAMAGED in path.name:
            removal.drop("damaged files set aside", path)
        else:
            with FileLock(str(path) + ".lock"):  # as KernelCache.store holds it while it writes
                entry = _read_entry(path)
                if entry is None:
                    if removal.is_dir(path):
                        removal.drop("cache entries whose metadata does not read back", path)
                    continue
                keep = {*ENTRY_FILES, library_name(entry.checksums["kernel.so"])}
                for item in path.iterdir():
                    if item.name not in keep:
                        removal.drop("damaged files set aside" if DAMAGED in item.name else
                                     "files of earlier winners and interrupted writes", item)
