"""The records: every evaluation ever made, behind the ``Records`` interface;
SQLite (WAL mode) in the cache directory by default.

One row per evaluation, written (and committed) as it completes, so a tuning run
killed at any moment loses at most the candidate in flight. Several processes may
write at once: SQLite serialises writers and the busy timeout waits for the lock.
A row carries the machine fingerprint, the Halide version and evokernel's version
with its schedule encoding: rows from elsewhere are kept, but only rows of this
machine and these versions are trusted for timing (the same genome decodes to
another schedule when the encoding changes).
"""

from __future__ import annotations

import abc
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..codegen import cache_dir as resolve
from ..errors import CacheError
from ..evaluators import Outcome, Result
from ..genome import Genome
from ..target import Target
from ._provenance import machine_fingerprint, versions

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    operator TEXT NOT NULL,
    target TEXT NOT NULL,
    genome_key TEXT NOT NULL,
    genome TEXT NOT NULL,
    outcome TEXT NOT NULL,
    time REAL,
    spread REAL,
    samples INTEGER,
    max_error REAL,
    message TEXT,
    build_seconds REAL,
    halide_version TEXT NOT NULL,
    evokernel_version TEXT NOT NULL,
    machine TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_lookup ON evaluations (operator, target, machine, halide_version);
"""


@dataclass(frozen=True)
class Record:
    """One evaluation as stored."""

    operator: str
    target: str
    genome: Genome
    result: Result
    halide_version: str
    evokernel_version: str
    machine: str
    run_id: str
    created: float

    @classmethod
    def new(cls, operator: str, target: str, genome: Genome, result: Result, run_id: str) -> "Record":
        """A record of an evaluation made now, here, with these versions."""
        return cls(operator, target, genome, result, *versions(), machine_fingerprint(), run_id, time.time())

    @property
    def trusted(self) -> bool:
        """Measured on this machine, with these versions of Halide and evokernel."""
        return self.machine == machine_fingerprint() and (self.halide_version, self.evokernel_version) == versions()

    def row(self) -> dict:
        """A flat dict, ready for ``pandas.DataFrame(rows)``."""
        r = self.result
        return {"operator": self.operator, "target": self.target, "genome_key": r.genome_key,
                "outcome": r.outcome.value, "time_ms": None if r.time is None else r.time * 1e3,
                "spread": r.spread, "samples": r.samples, "max_error": r.max_error, "message": r.message,
                "build_seconds": r.build_seconds, "halide_version": self.halide_version,
                "evokernel_version": self.evokernel_version, "machine": self.machine,
                "trusted": self.trusted, "run_id": self.run_id, "created": self.created,
                "genome": self.genome.to_json()}


class Records(abc.ABC):
    """Where evaluations are kept: every one added as it completes, found again by
    operator key and target. ``tune(records=...)`` takes a name from ``RECORDS`` or
    an instance (a shared database is one subclass away)."""

    @abc.abstractmethod
    def add(self, record: Record) -> None:
        """Store one evaluation durably before returning."""

    @abc.abstractmethod
    def find(self, operator: str | None = None, target: str | None = None) -> Iterator[Record]:
        """Stored evaluations, oldest first, of ``operator`` (a key) on ``target``
        (``None``: any)."""

    def trusted(self, operator: str, target: str) -> list[Record]:
        """The evaluations a search may reuse: measured here, with these versions."""
        return [r for r in self.find(operator, target) if r.trusted]

    def close(self) -> None:
        """Release the store's resources."""


class MemoryRecords(Records):
    """Records kept in this process only (lost at exit): for throw-away runs.

    >>> db = MemoryRecords()
    >>> list(db.find("relu(shape=8,dtype=float32)"))
    []
    """

    def __init__(self) -> None:
        self._records: list[Record] = []

    def add(self, record: Record) -> None:
        self._records.append(record)

    def find(self, operator=None, target=None):
        return (r for r in list(self._records)
                if operator in (None, r.operator) and target in (None, r.target))


class SQLiteRecords(Records):
    """The evaluation database of one cache directory, in SQLite (WAL mode).

    >>> import tempfile, pathlib
    >>> db = SQLiteRecords(pathlib.Path(tempfile.mkdtemp()) / "records.sqlite3")
    >>> len(list(db.find("matmul(m=1)", "host")))
    0
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise CacheError(f"the records database {self.path} cannot be used: {error} "
                             "(move it aside to start afresh; nothing else in the cache depends on it)") from error

    def add(self, record: Record) -> None:
        r = record.result
        self._db.execute(
            "INSERT INTO evaluations (operator, target, genome_key, genome, outcome, time, spread, samples, "
            "max_error, message, build_seconds, halide_version, evokernel_version, machine, run_id, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.operator, record.target, record.genome.key, record.genome.to_json(), r.outcome.value, r.time,
             r.spread, r.samples, _finite(r.max_error), r.message, r.build_seconds, record.halide_version,
             record.evokernel_version, record.machine, record.run_id, record.created))

    def find(self, operator=None, target=None):
        query, args = "SELECT * FROM evaluations WHERE 1=1", []
        if operator is not None:
            query, args = query + " AND operator = ?", args + [operator]
        if target is not None:
            query, args = query + " AND target = ?", args + [target]
        yield from _records(self._db.execute(query + " ORDER BY id", args))

    def trusted(self, operator, target):
        """As ``Records.trusted``, filtered in SQL (its index covers the query)."""
        return list(_records(self._db.execute(
            "SELECT * FROM evaluations WHERE operator = ? AND target = ? AND machine = ? AND halide_version = ? "
            "AND evokernel_version = ? ORDER BY id", (operator, target, machine_fingerprint(), *versions()))))

    def close(self) -> None:
        self._db.close()


#: Name -> a callable of the cache directory making that store.
RECORDS = {"sqlite": lambda root: SQLiteRecords(root / "records.sqlite3"), "memory": lambda root: MemoryRecords()}


def open_records(records: "str | Records", root: Path) -> Records:
    """The store ``tune(records=...)`` names: ``"sqlite"`` (the cache directory's
    database, the default), ``"memory"``, or a ``Records`` instance, returned as is."""
    if isinstance(records, Records):
        return records
    if not isinstance(records, str) or records not in RECORDS:
        raise CacheError(f"unknown records store {records!r}: use one of {', '.join(map(repr, RECORDS))} "
                         "or an ek.store.Records instance")
    return RECORDS[records](root)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _records(cursor: sqlite3.Cursor) -> Iterator[Record]:
    names = [d[0] for d in cursor.description]
    return (_record(dict(zip(names, values))) for values in cursor)


def _record(row: dict) -> Record:
    result = Result(row["genome_key"], Outcome(row["outcome"]), row["time"], row["spread"], row["samples"] or 0,
                    row["max_error"], row["message"] or "", row["build_seconds"] or 0.0)
    return Record(row["operator"], row["target"], Genome.from_json(row["genome"]), result,
                  row["halide_version"], row["evokernel_version"], row["machine"], row["run_id"], row["created"])


def records(operator=None, target=None, cache_dir=None) -> list[dict]:
    """Everything known about ``operator`` (an Operator or its key) on ``target``,
    one flat dict per evaluation (``pandas.DataFrame(ek.records())`` works).

    >>> import evokernel as ek
    >>> isinstance(ek.records(ek.operators.relu(8)), list)
    True
    """
    key = getattr(operator, "key", operator)
    target_string = None if target is None else Target.parse(target).string
    db = open_records("sqlite", resolve(cache_dir))
    try:
        return [r.row() for r in db.find(key, target_string)]
    finally:
        db.close()
