"""What the native directory may lose: the leftovers of ended processes and builds.

Kept: the runtime library of each target for this Halide and shim (with its
checksum record) and the scratch directories of running processes. Removed: the
scratch of processes that ended without removing it (killed), temporary files and
build directories of interrupted writes, libraries linked beside the runtimes by
earlier versions, and, when ``everything`` is asked (``prune_cache``), damaged
files set aside, runtimes of other Halide versions and lock files of nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

from ._native import _runtime_name
from ._paths import DAMAGED, PARTIAL
from ._scratch import sweep

#: Seconds a temporary file or build directory is left alone: a write or a build
#: in progress (in this or another process) is never that old.
STALE = 3600.0
#: Seconds a library linked beside the runtimes (the layout of earlier versions)
#: is left alone: long enough for the process that linked it to have loaded it.
LOADED = 600.0


class Removal:
    """Files removed by kind (or that would be, with ``dry_run``): ``removed``
    maps a kind to (files, bytes)."""

    def __init__(self, dry_run: bool = False):
        self.dry_run = dry_run
        self.removed: dict[str, tuple[int, int]] = {}

    def drop(self, what: str, path: Path) -> None:
        """Remove the file or directory tree ``path`` (links not followed), counted as ``what``."""
        files, size = self.measure(path)
        if not self.dry_run:
            shutil.rmtree(path, ignore_errors=True) if self.is_dir(path) else path.unlink(missing_ok=True)
        before = self.removed.get(what, (0, 0))
        self.removed[what] = (before[0] + files, before[1] + size)

    def add(self, what: str, files: int, size: int) -> None:
        if files:
            before = self.removed.get(what, (0, 0))
            self.removed[what] = (before[0] + files, before[1] + size)

    @staticmethod
    def is_dir(path: Path) -> bool:
        try:
            return stat.S_ISDIR(path.lstat().st_mode)
        except FileNotFoundError:
            return False

    @staticmethod
    def age(path: Path) -> float:
        """Seconds since ``path`` last changed (0 if it is gone)."""
        try:
            return time.time() - path.lstat().st_mtime
        except FileNotFoundError:
            return 0.0

    @classmethod
    def measure(cls, path: Path) -> tuple[int, int]:
        """(files, bytes) of a file or a directory tree (links not followed)."""
        if not cls.is_dir(path):
            try:
                return 1, path.lstat().st_size
            except FileNotFoundError:
                return 0, 0
        files = size = 0
        for top, _, names in os.walk(path):
            for name in names:
                try:
                    size += os.lstat(os.path.join(top, name)).st_size
                    files += 1
                except FileNotFoundError:
                    pass
        return files, size


def prune_native(native: Path, removal: Removal, everything: bool = False) -> None:
    """Remove what the native directory ``native`` need not keep, into ``removal``."""
    if not removal.is_dir(native):
        return
    scratch = native / "scratch"
    if removal.is_dir(scratch):
        removal.add("scratch of ended processes", *sweep(scratch, removal.dry_run))
    for path in native.iterdir():
        name, age = path.name, removal.age(path)
        if name.startswith("kernel_") and name.endswith(".so") and age > LOADED:
            removal.drop("loose kernel libraries", path)
        elif (name.startswith((".build-", "tmp")) and removal.is_dir(path) or name.endswith(PARTIAL)) and age > STALE:
            removal.drop("leftovers of interrupted writes", path)
        elif not everything:
            continue
        elif DAMAGED in name:
            removal.drop("damaged files set aside", path)
        elif name.startswith("libevokernel_runtime_") and name.endswith(".so") and _stale_runtime(path, age):
            for companion in (path.with_name(name + ".json"), path.with_name(name + ".lock")):
                if os.path.lexists(companion):
                    removal.drop("runtimes of other versions", companion)
            removal.drop("runtimes of other versions", path)
        elif name.endswith(".lock") and not os.path.lexists(path.with_name(name[:-len(".lock")])) and age > STALE:
            removal.drop("lock files of removed files", path)


def _stale_runtime(path: Path, age: float) -> bool:
    """A runtime library this Halide and shim would not name so (another version's),
    or one without its checksum record (an earlier layout's; rebuilt when needed)."""
    try:
        record = json.loads(path.with_name(path.name + ".json").read_bytes())
        return _runtime_name(record["target"]) != path.name
    except FileNotFoundError:
        return age > STALE
    except (OSError, ValueError, TypeError, KeyError):
        return True
