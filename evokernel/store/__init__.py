"""What tuning keeps: the records of every evaluation (behind ``Records``; SQLite by
default), the cache of winning kernels, ``Kernel`` and its ``KernelMeta``,
``load`` / ``load_kernel`` (signed bundles), the catalogue of cached kernels and
``prune_cache``."""

from ._cache import CacheEntry, KernelCache, read_bundle, write_bundle
from ._catalog import CachedKernel, cached_kernels
from ._kernel import Kernel
from ._load import cached_entry, from_entry, load, load_kernel, store, stored_operator
from ._meta import KernelMeta, Signature, TuningStats
from ._provenance import machine_fingerprint, versions
from ._prune import PruneReport, prune_cache
from ._records import RECORDS, MemoryRecords, Record, Records, SQLiteRecords, open_records, records
from ._signing import public_key

__all__ = [
    "Kernel", "KernelMeta", "Signature", "TuningStats", "load", "load_kernel", "store", "cached_entry",
    "from_entry", "stored_operator", "CachedKernel", "cached_kernels", "CacheEntry", "KernelCache",
    "read_bundle", "write_bundle", "Records", "Record", "SQLiteRecords", "MemoryRecords", "RECORDS",
    "open_records", "records", "machine_fingerprint", "versions", "prune_cache", "PruneReport", "public_key",
]
