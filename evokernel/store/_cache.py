"""The kernel cache and kernel bundles: winners stored with their genome and checksums.

A cache entry per (operator key, target, machine) holds ``kernel.o`` (the portable
artifact), ``kernel-<sha>.so`` (linked here, named by its checksum, so that a new
winner of the same operator is a new file and loads as its own code) and
``meta.json`` (genome, schedule, stats, budget and the SHA-256 of both files),
written file by file with atomic renames, ``meta.json`` last. A file whose checksum
does not match is never loaded: the object is rebuilt from the genome, the library
relinked from the object. Something other than a regular file in their place (a
FIFO, a directory, a link) is never opened: it is moved aside as damage.

A bundle (``Kernel.save``) is a zip of ``kernel.o``, ``meta.json``, ``MANIFEST``
(SHA-256 of each) and ``SIGNATURE`` (an Ed25519 signature of the manifest, see
``_signing``). Member sizes are checked before anything is inflated.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from ..codegen import DAMAGED, PARTIAL, check_private, read_private, set_aside, subdir, write_atomic
from ..errors import CacheError
from ._meta import KernelMeta
from ._provenance import versions
from ._signing import check_signature, sign

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

BUNDLE_FORMAT = 1
#: The most bytes each member of a bundle may inflate to (a kernel object is
#: tens of kilobytes, a GPU kernel's a few megabytes): checked before inflating.
MEMBER_LIMITS = {"kernel.o": 256 << 20, "meta.json": 64 << 20, "MANIFEST": 64 << 10, "SIGNATURE": 64 << 10}
ENTRY_FILES = ("kernel.o", "meta.json")  # and the library, named by its checksum
CHECKSUMMED = ("kernel.o", "kernel.so")


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
        """The linked library, named by its checksum: one name, one content."""
        return self.directory / library_name(self.checksums["kernel.so"])

    def verified_object(self) -> bytes | None:
        """The object's bytes if present and matching its checksum, else ``None``."""
        return _verified(self.object_path, self.checksums["kernel.o"])

    def library_intact(self) -> bool:
        return _verified(self.library_path, self.checksums["kernel.so"]) is not None


def library_name(checksum: str) -> str:
    return f"kernel-{checksum[:16]}.so"


def _read_entry(directory: Path) -> CacheEntry | None:
    """The entry in ``directory``, or ``None`` where it has none or its metadata is
    unusable: another version's (left as it is), or damaged (moved aside, with a
    warning). The operator is then tuned and stored afresh (its records are kept)."""
    if not _entry_directory(directory):
        return None
    check_private(directory)  # a CacheError here is a refusal, not damage: it propagates
    path = directory / "meta.json"
    raw = read_private(path, "cached kernel metadata")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as error:
        set_aside(path, "cached kernel metadata", f"not JSON: {error}")
        return None
    ours = not isinstance(data, dict) or data.get("evokernel_version") == versions()[1]
    checksums = data.get("checksums") if isinstance(data, dict) else None
    try:
        if not isinstance(checksums, dict) or not all(isinstance(checksums.get(n), str) for n in CHECKSUMMED):
            raise CacheError(f"{path}: metadata has no checksums of kernel.o and kernel.so")
        return CacheEntry(directory, KernelMeta.from_dict(data, str(path)), checksums)
    except CacheError as error:
        if ours:  # this version wrote it, so it should read back: damage
            set_aside(path, "cached kernel metadata", str(error).removeprefix(f"{path}: "))
        return None


def _entry_directory(directory: Path) -> bool:
    """Whether ``directory`` is a directory; anything else in its place is moved aside."""
    try:
        mode = directory.lstat().st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        return True
    set_aside(directory, "cache entry", "it is not a directory")
    return False


def _verified(path: Path, checksum: str) -> bytes | None:
    data = read_private(path, "cached artifact")
    return data if data is not None and sha256(data) == checksum else None


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

    def directory_of(self, operator_key: str, target: str, machine: str) -> Path:
        """Where the entry of this operator, target and machine lives (or would)."""
        return self._directory(operator_key, target, machine)

    def store(self, meta: KernelMeta, object_bytes: bytes, library: Path) -> CacheEntry:
        """Store a winner under its operator, target and machine. The files of the
        entry's earlier winner, and of interrupted writes, are removed (a process
        that loaded the earlier library keeps running it)."""
        directory = self._directory(meta.operator, meta.target, meta.machine)
        library_bytes = library.read_bytes()
        checksums = {"kernel.o": sha256(object_bytes), "kernel.so": sha256(library_bytes)}
        data = {**meta.to_dict(), "checksums": checksums}
        library_file = library_name(checksums["kernel.so"])
        keep = {*ENTRY_FILES, library_file}
        with FileLock(str(directory) + ".lock"):  # prune_cache holds it too
            _entry_directory(directory)
            directory.mkdir(mode=0o700, exist_ok=True)
            write_atomic(directory / "kernel.o", object_bytes)
            write_atomic(directory / library_file, library_bytes)
            write_atomic(directory / "meta.json", json.dumps(data, indent=1, sort_keys=True).encode())
            for path in directory.iterdir():
                if path.name not in keep and DAMAGED not in path.name and not path.is_dir():
                    path.unlink(missing_ok=True)
        return CacheEntry(directory, meta, checksums)

    def repair(self, entry: CacheEntry, object_bytes: bytes, library: Path) -> None:
        """Rewrite an entry's files from a rebuilt object and its fresh library."""
        entry.checksums = self.store(entry.meta, object_bytes, library).checksums


# -- bundles ---------------------------------------------------------------------------

def write_bundle(path: Path, meta: KernelMeta, object_bytes: bytes, key: Ed25519PrivateKey) -> None:
    """Write a self-contained kernel bundle: a zip with a checksum manifest, signed with ``key``."""
    data = {**meta.to_dict(), "bundle_format": BUNDLE_FORMAT}
    files = {"kernel.o": object_bytes, "meta.json": json.dumps(data, indent=1, sort_keys=True).encode()}
    manifest = json.dumps({name: sha256(data) for name, data in files.items()}, sort_keys=True).encode()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=PARTIAL)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
            z.writestr("MANIFEST", manifest)
            z.writestr("SIGNATURE", sign(manifest, key))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bundle(path: Path, trusted_keys: set[str], trusted: bool = False) -> tuple[KernelMeta, bytes]:
    """Read and verify a bundle: its checksums, then its signature by one of
    ``trusted_keys`` (unless ``trusted``); raise ``CacheError`` (``UntrustedBundleError``
    for the signature) naming what is wrong."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as error:
        raise CacheError(f"no kernel bundle at {path}") from error
    except OSError as error:
        raise CacheError(f"{path} is not a readable evokernel bundle: {error.strerror}") from error
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheError(f"{path} is not a readable evokernel bundle: it is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            with zipfile.ZipFile(f) as z:
                members = _members(z, path)
        except CacheError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, NotImplementedError,
                RuntimeError) as error:  # damage anywhere, an unsupported or encrypted member
            raise CacheError(f"{path} is not a readable evokernel bundle: {type(error).__name__}: {error}") from error
    files = {name: members[name] for name in ("kernel.o", "meta.json")}
    try:
        manifest = json.loads(members["MANIFEST"])
    except ValueError:
        manifest = None
    for name, data in files.items():
        if not isinstance(manifest, dict) or manifest.get(name) != sha256(data):
            raise CacheError(f"refusing {path}: {name} does not match its checksum (corrupted or tampered)")
    if not trusted:
        check_signature(path, members["MANIFEST"], members.get("SIGNATURE"), trusted_keys)
    try:
        meta = json.loads(files["meta.json"])
    except ValueError as error:
        raise CacheError(f"refusing {path}: meta.json is not valid JSON") from error
    if not isinstance(meta, dict) or meta.get("bundle_format") != BUNDLE_FORMAT:
        found = meta.get("bundle_format") if isinstance(meta, dict) else None
        raise CacheError(f"{path} has bundle format {found!r}; this evokernel reads {BUNDLE_FORMAT}")
    meta.pop("bundle_format")
    return KernelMeta.from_dict(meta, f"bundle {path}"), files["kernel.o"]


def _members(z: zipfile.ZipFile, path: Path) -> dict[str, bytes]:
    """The members of an open bundle, each read only after its declared size, and
    then its inflated size, is found within ``MEMBER_LIMITS`` (a zip bomb is
    refused before it inflates)."""
    infos = z.infolist()
    names = [info.filename for info in infos]
    required = {"kernel.o", "meta.json", "MANIFEST"}
    if len(set(names)) != len(names) or not required <= set(names) <= set(MEMBER_LIMITS):
        raise CacheError(f"{path} is not an evokernel bundle (files: {sorted(names)})")
    for info in infos:
        if info.file_size > MEMBER_LIMITS[info.filename]:
            raise CacheError(f"refusing {path}: {info.filename} would inflate to {info.file_size} bytes, more than "
                             f"the {MEMBER_LIMITS[info.filename]} a bundle's {info.filename} may hold")
    members = {}
    for info in infos:
        limit, chunks, size = MEMBER_LIMITS[info.filename], [], 0
        with z.open(info) as member:  # a megabyte at a time: a lying header inflates no more than that
            while size <= limit and (chunk := member.read(1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
        if size > limit:
            raise CacheError(f"refusing {path}: {info.filename} inflates past {limit} bytes")
        members[info.filename] = b"".join(chunks)
    return members
