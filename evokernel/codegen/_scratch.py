"""Scratch space for the kernel libraries a process links while it tunes.

A search links a small library for every candidate it times (~20-40 KB each); only
the winner is kept, in the kernel cache. So each process links into a directory of
its own, ``native/scratch/<pid>-<random>/``, keeps only its ``SCRATCH_KEEP`` newest
libraries there (a library is loaded right after it is linked, and a loaded library
keeps working when its file is removed), and removes the directory when it exits.
The directory holds a lock (``flock``) for the life of its process: a directory
whose lock is free belongs to a process that was killed, and the next process that
looks (or ``prune_cache``) removes it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ._paths import subdir

#: Libraries a process keeps in its scratch directory (older ones are removed).
SCRATCH_KEEP = 16
#: Seconds a scratch directory without its lock file is given before it counts as
#: abandoned (its process may be between creating the directory and locking it).
GRACE = 60.0
OWNER = ".owner"

_lock = threading.Lock()
_sessions: dict[Path, tuple[int, Path, int]] = {}  # native dir -> (pid, scratch dir, locked fd)


def scratch_dir(native: Path) -> Path:
    """This process's scratch directory under the native directory ``native``
    (made, and the leftovers of killed processes removed, on first use)."""
    with _lock:
        held = _sessions.get(native)
        if held is not None and held[0] == os.getpid() and held[1].is_dir():
            return held[1]
        root = subdir(native, "scratch")
        sweep(root)
        path = Path(tempfile.mkdtemp(dir=root, prefix=f"{os.getpid()}-"))
        fd = os.open(path / OWNER, os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())  # locked and owned: an empty file is one being set up
        if not any(pid == os.getpid() for pid, _, _ in _sessions.values()):
            atexit.register(_remove_own)
        _sessions[native] = (os.getpid(), path, fd)
        return path


def trim(directory: Path, keep: int = SCRATCH_KEEP) -> None:
    """Remove all but the ``keep`` newest kernel libraries of a scratch directory."""
    libraries = []
    for path in directory.glob("kernel_*.so"):
        try:
            libraries.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            pass
    for _, path in sorted(libraries, reverse=True)[keep:]:
        path.unlink(missing_ok=True)


def sweep(root: Path, dry_run: bool = False) -> tuple[int, int]:
    """Remove the scratch directories under ``root`` whose process is gone; returns
    (files, bytes) removed (or that would be, with ``dry_run``)."""
    own = {path for pid, path, _ in _sessions.values() if pid == os.getpid()}
    files = size = 0
    for path in root.iterdir() if root.is_dir() else ():
        if path in own or not path.is_dir() or path.is_symlink() or _alive(path):
            continue
        found = [p for p in path.rglob("*") if p.is_file()]
        files, size = files + len(found), size + sum(_size(p) for p in found)
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    return files, size


def _alive(path: Path) -> bool:
    """Whether the process that made scratch directory ``path`` still holds its lock."""
    try:
        fd = os.open(path / OWNER, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:  # not locked yet, or never: give its process time
        try:
            return time.time() - path.stat().st_mtime < GRACE
        except FileNotFoundError:
            return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        info = os.fstat(fd)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return info.st_size == 0 and time.time() - info.st_mtime < GRACE


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _remove_own() -> None:
    with _lock:
        for native, (pid, path, fd) in list(_sessions.items()):
            if pid == os.getpid():
                shutil.rmtree(path, ignore_errors=True)
                os.close(fd)
                del _sessions[native]
