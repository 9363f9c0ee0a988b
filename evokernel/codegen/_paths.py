"""Where evokernel keeps what it learns: one private cache directory per user."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import time
from pathlib import Path

import platformdirs

from ..errors import ArgumentError, CacheError

ENV_VAR = "EVOKERNEL_CACHE_DIR"
#: Suffix of a damaged file or directory moved aside (``meta.json.damaged-20261105-101500-1a2b``).
DAMAGED = ".damaged-"
#: Suffix of the temporary file of a write in progress (left behind when a write is killed).
PARTIAL = ".partial"

log = logging.getLogger("evokernel")


def cache_dir(override: "str | os.PathLike | None" = None) -> Path:
    """The cache directory: ``override``, else ``$EVOKERNEL_CACHE_DIR``, else the
    user cache directory. Created with mode 0700; refused if others can write it,
    because evokernel loads and executes code from it."""
    if override is not None and not isinstance(override, (str, os.PathLike)):
        raise ArgumentError(f"cache_dir must be a path (str or os.PathLike), got {type(override).__name__}")
    where = "cache_dir" if override else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the user cache directory"
    path = Path(override or os.environ.get(ENV_VAR) or platformdirs.user_cache_dir("evokernel"))
    try:
        path = path.expanduser().resolve()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as error:
        raise CacheError(f"{where} {path} cannot be the cache directory: it is a file, not a directory") from error
    except (OSError, RuntimeError) as error:  # a file on the way to it, no permission, a symbolic link loop
        raise CacheError(f"{where} {path} cannot be the cache directory: {error}") from error
    check_private(path)
    return path


def subdir(root: Path, name: str) -> Path:
    """A private sub-directory of the cache."""
    path = root / name
    path.mkdir(mode=0o700, exist_ok=True)
    check_private(path)
    return path


def native_dir(root: Path) -> Path:
    """Where compiled code lives in the cache ``root``: runtimes and kernel libraries."""
    return subdir(root, "native")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_private(path: Path, info: os.stat_result | None = None) -> None:
    """Raise ``CacheError`` if users other than the owner may write ``path``
    (``info``: its ``stat``, when the caller has it)."""
    info = info or path.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"refusing to use {path}: it is writable by other users, and evokernel executes "
            f"code stored there (chmod go-w {path}, or choose another cache_dir)"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheError(f"refusing to use {path}: it belongs to another user (uid {info.st_uid})")


def read_private(path: Path, what: str = "cached file") -> bytes | None:
    """The bytes of ``path`` if it is a regular file only its owner may write;
    ``None`` if there is none. Anything else in its place (a FIFO, a directory,
    a symbolic link, a socket) is never opened for reading, which could block or
    read elsewhere: it is moved aside as damage (see ``set_aside``) and ``None``
    returned. A file others may write raises ``CacheError``, as ``check_private``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as error:  # a symbolic link (ELOOP), a socket (ENXIO)...
        set_aside(path, what, f"it cannot be opened as a file: {error.strerror}")
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        set_aside(path, what, "it is not a regular file")
        return None
    with os.fdopen(fd, "rb") as f:
        check_private(path, info)
        return f.read()


def set_aside(path: Path, what: str, reason: str) -> Path | None:
    """Move damaged ``path`` aside (renamed with a ``DAMAGED`` suffix, in its
    directory, where ``prune_cache`` removes it), warn saying where, and return
    the new path (``None`` if it was gone already: another process set it aside)."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.urandom(2).hex()}"
    moved = path.with_name(f"{path.name}{DAMAGED}{stamp}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return None
    log.warning("%s %s is damaged (%s): moved aside to %s", what, path, reason, moved)
    return moved
