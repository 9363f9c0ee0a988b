"""Where evokernel keeps what it learns: one private cache directory per user."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import platformdirs

from ..errors import CacheError

ENV_VAR = "EVOKERNEL_CACHE_DIR"


def cache_dir(override: "str | os.PathLike | None" = None) -> Path:
    """The cache directory: ``override``, else ``$EVOKERNEL_CACHE_DIR``, else the
    user cache directory. Created with mode 0700; refused if others can write it,
    because evokernel loads and executes code from it."""
    path = Path(override or os.environ.get(ENV_VAR) or platformdirs.user_cache_dir("evokernel"))
    path = path.expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_private(path: Path) -> None:
    """Raise ``CacheError`` if users other than the owner may write ``path``."""
    info = path.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"refusing to use {path}: it is writable by other users, and evokernel executes "
            f"code stored there (chmod go-w {path}, or choose another cache_dir)"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheError(f"refusing to use {path}: it belongs to another user (uid {info.st_uid})")
