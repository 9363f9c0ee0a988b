"""Signed kernel bundles: who made a bundle, not only whether it is intact.

Every cache directory has an Ed25519 key pair (``keys/ed25519.pem``, made on first
use, readable by its owner only). ``Kernel.save`` signs a bundle's manifest (the
SHA-256 of its files) with it, or with a key you pass; ``load_kernel`` loads a
bundle signed by a key it trusts (this cache's own, and the public keys passed as
``keys=``), and refuses any other, signed or not, unless told ``trusted=True``.
Ed25519 comes from ``cryptography`` (the Python Cryptographic Authority's library).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from filelock import FileLock

from ..codegen import cache_dir as resolve
from ..codegen import read_private, set_aside, subdir, write_atomic
from ..errors import ArgumentError, CacheError, UntrustedBundleError

KEY_FILE = "ed25519.pem"


def cache_key(root: Path) -> Ed25519PrivateKey:
    """The signing key of the cache directory ``root``, made on first use. A key
    file that does not read back is moved aside and a new key made (bundles signed
    with the old one then need its public key, or ``trusted=True``)."""
    path = subdir(root, "keys") / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    with FileLock(str(path) + ".lock"):
        key = _read_key(path)
        if key is None:
            key = Ed25519PrivateKey.generate()
            write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return key


def _read_key(path: Path) -> Ed25519PrivateKey | None:
    data = read_private(path, "the signing key")
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        set_aside(path, "the signing key", "it is not an Ed25519 private key in PEM")
        return None
    return key


def key_text(key: "Ed25519PrivateKey | Ed25519PublicKey") -> str:
    """A public key as 64 hexadecimal digits (its raw 32 bytes)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def public_key(cache_dir=None) -> str:
    """This cache's public key, to give to whoever loads your bundles
    (``ek.load_kernel(path, keys=[...])``), as 64 hexadecimal digits.

    >>> import evokernel as ek
    >>> len(ek.store.public_key())
    64
    """
    return key_text(cache_key(resolve(cache_dir)))


def signing_key(key, root: Path) -> Ed25519PrivateKey:
    """The key ``Kernel.save(key=...)`` names: ``None`` (the cache's), an
    ``Ed25519PrivateKey``, or the path of one in PEM."""
    if key is None:
        return cache_key(root)
    if isinstance(key, Ed25519PrivateKey):
        return key
    if not isinstance(key, (str, os.PathLike)):
        raise ArgumentError(f"key must be None, an Ed25519PrivateKey or the path of one in PEM, "
                            f"got {type(key).__name__}")
    try:
        loaded = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise CacheError(f"key {key} cannot be read as a PEM private key: {error}") from error
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ArgumentError(f"key {key} is a {type(loaded).__name__}, not an Ed25519 private key")
    return loaded


def trusted_keys(root: Path, keys: Iterable = ()) -> set[str]:
    """This cache's public key and ``keys`` (64 hex digits or Ed25519 keys)."""
    if isinstance(keys, (str, bytes, Ed25519PublicKey, Ed25519PrivateKey)) or not isinstance(keys, Iterable):
        raise ArgumentError(f"keys must be a list of public keys, got {type(keys).__name__}")
    found = {key_text(cache_key(root))}
    for key in keys:
        if isinstance(key, (Ed25519PublicKey, Ed25519PrivateKey)):
            found.add(key_text(key))
        elif isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
            found.add(key.lower())
        else:
            raise ArgumentError(f"keys holds {key!r}: a public key is 64 hexadecimal digits "
                                "(ek.store.public_key()) or an Ed25519PublicKey")
    return found


def sign(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``SIGNATURE`` member of a bundle whose ``MANIFEST`` is ``manifest``."""
    return json.dumps({"algorithm": "ed25519", "key": key_text(key), "signature": key.sign(manifest).hex()},
                      sort_keys=True).encode()


def check_signature(path: Path, manifest: bytes, signature: bytes | None, trusted: set[str]) -> str:
    """The public key that signed the bundle at ``path``; ``UntrustedBundleError``
    unless it signed ``manifest`` and is one of ``trusted``."""
    if signature is None:
        raise UntrustedBundleError(f"refusing {path}: it is not signed. Loading a bundle runs its code: pass "
                                   "trusted=True to load it anyway, if you trust where it came from")
    try:
        data = json.loads(signature)
        signer = data["key"]
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer)).verify(bytes.fromhex(data["signature"]), manifest)
    except (ValueError, TypeError, KeyError, InvalidSignature) as error:
        raise UntrustedBundleError(f"refusing {path}: its signature does not match its contents (forged or "
                                   f"damaged: {type(error).__name__}); pass trusted=True to load it anyway") from None
    if signer not in trusted:
        raise UntrustedBundleError(f"refusing {path}: it is signed by key {signer}, which this cache does not trust; "
                                   "pass that key in keys=[...] (its owner's ek.store.public_key()), or "
                                   "trusted=True to load it anyway")
    return signer
