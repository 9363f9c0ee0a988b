"""The kernel cache and kernel bundles: winners stored with their genome and checksums.

A cache entry per (operator key, target, machine) holds ``kernel.o`` (the portable
artifact), ``kernel.so`` (linked here) and ``meta.json`` (genome, schedule, stats,
budget and the SHA-256 of both files), written file by file with atomic renames,
``meta.json`` last. A file whose checksum does not match is never loaded: the object
is rebuilt from the genome, the library relinked from the object.

A bundle (``Kernel.save``) is a zip of ``kernel.o``, ``meta.json`` and ``MANIFEST``
(SHA-256 of each). Checksums catch corruption and edits; they cannot vouch for who
made a bundle, and loading one runs its code: load bundles you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..errors import CacheError
from ._paths import check_private, subdir, write_atomic

BUNDLE_FORMAT = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    """A cache entry on disk; ``meta`` is its parsed ``meta.json``."""

    directory: Path
    meta: dict

    @property
    def object_path(self) -> Path:
        return self.directory / "kernel.o"

    @property
    def library_path(self) -> Path:
        return self.directory / "kernel.so"

    def verified_object(self) -> bytes | None:
        """The object's bytes if present and matching its checksum, else ``None``."""
        return _verified(self.object_path, self.meta["checksums"]["kernel.o"])

    def library_intact(self) -> bool:
        return _verified(self.library_path, self.meta["checksums"]["kernel.so"]) is not None


def _read_entry(directory: Path) -> Entry | None:
    try:
        check_private(directory)
        meta = json.loads((directory / "meta.json").read_text())
        if not {"kernel.o", "kernel.so"} <= set(meta.get("checksums", ())):
            return None
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return None
    return Entry(directory, meta)


def _verified(path: Path, checksum: str) -> bytes | None:
    try:
        check_private(path)
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data if sha256(data) == checksum else None


class KernelCache:
    """Winning kernels of one cache directory."""

    def __init__(self, root: Path):
        self.root = subdir(root, "kernels")

    def _directory(self, operator_key: str, target: str, machine: str) -> Path:
        digest = sha256(f"{operator_key}\n{target}\n{machine}".encode())[:24]
        return self.root / digest

    def lookup(self, operator_key: str, target: str, machine: str) -> Entry | None:
        """The entry for this operator, target and machine, if one was stored
        (and its metadata reads back); files are verified when used."""
        entry = _read_entry(self._directory(operator_key, target, machine))
        if entry is None or entry.meta.get("operator") != operator_key or entry.meta.get("target") != target:
            return None
        return entry

    def entries(self) -> list[Entry]:
        """Every entry whose metadata reads back, in no particular order."""
        found = (_read_entry(path) for path in self.root.iterdir() if path.is_dir())
        return [entry for entry in found if entry is not None]

    def store(self, meta: dict, object_bytes: bytes, library: Path) -> Entry:
        """Store a winner: ``meta`` must hold ``operator``, ``target`` and ``machine``."""
        directory = self._directory(meta["operator"], meta["target"], meta["machine"])
        directory.mkdir(mode=0o700, exist_ok=True)
        library_bytes = library.read_bytes()
        meta = {**meta, "checksums": {"kernel.o": sha256(object_bytes), "kernel.so": sha256(library_bytes)}}
        with FileLock(str(directory) + ".lock"):
            write_atomic(directory / "kernel.o", object_bytes)
            write_atomic(directory / "kernel.so", library_bytes)
            write_atomic(directory / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())
        return Entry(directory, meta)

    def repair(self, entry: Entry, object_bytes: bytes, library: Path) -> None:
        """Rewrite an entry's files from a rebuilt object and its fresh library."""
        entry.meta = self.store(entry.meta, object_bytes, library).meta


# -- bundles ---------------------------------------------------------------------------

def write_bundle(path: Path, meta: dict, object_bytes: bytes) -> None:
    """Write a self-contained kernel bundle (a zip with a checksum manifest)."""
    files = {"kernel.o": object_bytes,
             "meta.json": json.dumps({**meta, "bundle_format": BUNDLE_FORMAT}, indent=1, sort_keys=True).encode()}
    manifest = {name: sha256(data) for name, data in files.items()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=path.name + ".")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
            z.writestr("MANIFEST", json.dumps(manifest, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bundle(path: Path) -> tuple[dict, bytes]:
    """Read and verify a bundle; raise ``CacheError`` naming what is wrong."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if names != {"kernel.o", "meta.json", "MANIFEST"}:
                raise CacheError(f"{path} is not an evokernel bundle (files: {sorted(names)})")
            manifest = json.loads(z.read("MANIFEST"))
            files = {name: z.read(name) for name in ("kernel.o", "meta.json")}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as error:
        if isinstance(error, FileNotFoundError):
            raise CacheError(f"no kernel bundle at {path}") from error
        raise CacheError(f"{path} is not a readable evokernel bundle: {error}") from error
    for name, data in files.items():
        if manifest.get(name) != sha256(data):
            raise CacheError(f"refusing {path}: {name} does not match its checksum (corrupted or tampered)")
    try:
        meta = json.loads(files["meta.json"])
    except ValueError as error:
        raise CacheError(f"refusing {path}: meta.json is not valid JSON") from error
    if meta.get("bundle_format") != BUNDLE_FORMAT:
        raise CacheError(f"{path} has bundle format {meta.get('bundle_format')!r}; this evokernel reads {BUNDLE_FORMAT}")
    return meta, files["kernel.o"]
