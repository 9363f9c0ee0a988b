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
import zlib
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..codegen import check_private, subdir, write_atomic
from ..errors import CacheError
from ._meta import KernelMeta

BUNDLE_FORMAT = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CacheEntry:
    """A cache entry on disk: its parsed ``meta.json`` and the files' checksums."""

    directory: Path
    meta: KernelMeta
    checksums: dict

    @property
    def object_path(self) -> Path:
        return self.directory / "kernel.o"

    @property
    def library_path(self) -> Path:
        return self.directory / "kernel.so"

    def verified_object(self) -> bytes | None:
        """The object's bytes if present and matching its checksum, else ``None``."""
        return _verified(self.object_path, self.checksums["kernel.o"])

    def library_intact(self) -> bool:
        return _verified(self.library_path, self.checksums["kernel.so"]) is not None


def _read_entry(directory: Path) -> CacheEntry | None:
    """The entry in ``directory``, or ``None`` where its metadata is missing or
    unusable (another version's, or damaged): it is then tuned and stored afresh."""
    try:
        check_private(directory)  # a CacheError here is a refusal, not damage: it propagates
        data = json.loads((directory / "meta.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    checksums = data.get("checksums") if isinstance(data, dict) else None
    if not isinstance(checksums, dict) or not {"kernel.o", "kernel.so"} <= set(checksums):
        return None
    try:
        return CacheEntry(directory, KernelMeta.from_dict(data, str(directory / "meta.json")), checksums)
    except CacheError:
        return None


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

    def lookup(self, operator_key: str, target: str, machine: str) -> CacheEntry | None:
        """The entry for this operator, target and machine, if one was stored
        (and its metadata reads back); files are verified when used."""
        entry = _read_entry(self._directory(operator_key, target, machine))
        if entry is None or entry.meta.operator != operator_key or entry.meta.target != target:
            return None
        return entry

    def entries(self) -> list[CacheEntry]:
        """Every entry whose metadata reads back, in no particular order."""
        found = (_read_entry(path) for path in self.root.iterdir() if path.is_dir())
        return [entry for entry in found if entry is not None]

    def store(self, meta: KernelMeta, object_bytes: bytes, library: Path) -> CacheEntry:
        """Store a winner under its operator, target and machine."""
        directory = self._directory(meta.operator, meta.target, meta.machine)
        directory.mkdir(mode=0o700, exist_ok=True)
        library_bytes = library.read_bytes()
        checksums = {"kernel.o": sha256(object_bytes), "kernel.so": sha256(library_bytes)}
        data = {**meta.to_dict(), "checksums": checksums}
        with FileLock(str(directory) + ".lock"):
            write_atomic(directory / "kernel.o", object_bytes)
            write_atomic(directory / "kernel.so", library_bytes)
            write_atomic(directory / "meta.json", json.dumps(data, indent=1, sort_keys=True).encode())
        return CacheEntry(directory, meta, checksums)

    def repair(self, entry: CacheEntry, object_bytes: bytes, library: Path) -> None:
        """Rewrite an entry's files from a rebuilt object and its fresh library."""
        entry.checksums = self.store(entry.meta, object_bytes, library).checksums


# -- bundles ---------------------------------------------------------------------------

def write_bundle(path: Path, meta: KernelMeta, object_bytes: bytes) -> None:
    """Write a self-contained kernel bundle (a zip with a checksum manifest)."""
    data = {**meta.to_dict(), "bundle_format": BUNDLE_FORMAT}
    files = {"kernel.o": object_bytes, "meta.json": json.dumps(data, indent=1, sort_keys=True).encode()}
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


def read_bundle(path: Path) -> tuple[KernelMeta, bytes]:
    """Read and verify a bundle; raise ``CacheError`` naming what is wrong."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if names != {"kernel.o", "meta.json", "MANIFEST"}:
                raise CacheError(f"{path} is not an evokernel bundle (files: {sorted(names)})")
            manifest = json.loads(z.read("MANIFEST"))
            files = {name: z.read(name) for name in ("kernel.o", "meta.json")}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, KeyError) as error:
        if isinstance(error, FileNotFoundError):
            raise CacheError(f"no kernel bundle at {path}") from error
        raise CacheError(f"{path} is not a readable evokernel bundle: {error}") from error
    for name, data in files.items():
        if not isinstance(manifest, dict) or manifest.get(name) != sha256(data):
            raise CacheError(f"refusing {path}: {name} does not match its checksum (corrupted or tampered)")
    try:
        meta = json.loads(files["meta.json"])
    except ValueError as error:
        raise CacheError(f"refusing {path}: meta.json is not valid JSON") from error
    if not isinstance(meta, dict) or meta.get("bundle_format") != BUNDLE_FORMAT:
        found = meta.get("bundle_format") if isinstance(meta, dict) else None
        raise CacheError(f"{path} has bundle format {found!r}; this evokernel reads {BUNDLE_FORMAT}")
    meta.pop("bundle_format")
    return KernelMeta.from_dict(meta, f"bundle {path}"), files["kernel.o"]
