"""The records: every evaluation ever made, behind the ``Records`` interface;
SQLite (WAL mode) in the cache directory by default.

One row per evaluation, written (and committed) as it completes, so a tuning run
killed at any moment loses at most the candidate in flight. Several processes may
write at once: SQLite serialises writers and the busy timeout waits for the lock.
A row carries the machine fingerprint, the Halide version and evokernel's version
with its schedule encoding: rows from elsewhere are kept, but only rows of this
machine and these versions are trusted for timing (the same genome decodes to
another schedule when the encoding changes), and not a row measured while another
evaluation ran on the machine (``contended``: two processes tuning at once timed
one genome at 2.39 µs and 41.87 µs).
"""

from __future__ import annotations

import abc
import logging
import math
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..codegen import cache_dir as resolve
from ..codegen import set_aside
from ..errors import ArgumentError, CacheError
from ..evaluators import Outcome, Result
from ..genome import Genome
from ..target import Target
from ._provenance import machine_fingerprint, versions

log = logging.getLogger("evokernel")

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
    predicted: float | None = None  # seconds a search's cost model predicted before it was measured

    @classmethod
    def new(cls, operator: str, target: str, genome: Genome, result: Result, run_id: str,
            predicted: float | None = None) -> "Record":
        """A record of an evaluation made now, here, with these versions."""
        return cls(operator, target, genome, result, *versions(), machine_fingerprint(), run_id, time.time(),
                   _finite(predicted))

    @property
    def trusted(self) -> bool:
        """Measured on this machine, with these versions of Halide and evokernel, and
        not beside another evaluation."""
        return (self.machine == machine_fingerprint() and (self.halide_version, self.evokernel_version) == versions()
                and not self.result.contended)

    def row(self) -> dict:
        """A flat dict, ready for ``pandas.DataFrame(rows)``."""
        r = self.result
        return {"operator": self.operator, "target": self.target, "genome_key": r.genome_key,
                "outcome": r.outcome.value, "time_ms": None if r.time is None else r.time * 1e3,
                "spread": r.spread, "samples": r.samples, "max_error": r.max_error, "message": r.message,
                "build_seconds": r.build_seconds, "halide_version": self.halide_version,
                "evokernel_version": self.evokernel_version, "machine": self.machine,
                "trusted": self.trusted, "run_id": self.run_id, "created": self.created,
                "genome": self.genome.to_json(), "contended": r.contended,
                "predicted_ms": None if self.predicted is None else self.predicted * 1e3}


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

    def trusted_family(self, family: str, target: str) -> list[Record]:
        """The trusted evaluations (as ``trusted``) of every operator of ``family``
        (``"matmul"``: keys ``matmul(...)``) on ``target``: what a cost model learns from."""
        return [r for r in self.find(target=target) if r.operator.startswith(family + "(") and r.trusted]

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

    It heals rather than blocks: a database SQLite finds damaged (a file that is
    not a database, a malformed page) is moved aside with a warning saying where,
    the rows that still read are copied into a new one, and work goes on; rows
    that do not parse (a NULL time, an unknown outcome) are skipped, counted in
    ``skipped``, with a warning.

    >>> import tempfile, pathlib
    >>> db = SQLiteRecords(pathlib.Path(tempfile.mkdtemp()) / "records.sqlite3")
    >>> len(list(db.find("matmul(m=1)", "host")))
    0
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.skipped = 0  # rows that did not parse
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            set_aside(self.path, "the records database", "it is not a regular file")
        try:
            self._connect()
        except sqlite3.DatabaseError as error:
            if not _damaged(error):
                raise CacheError(f"the records database {self.path} cannot be used: {error}") from error
            self._heal(error)

    def _connect(self) -> None:
        db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            _add_columns(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._db, self._identity = db, _identity(self.path)

    def _heal(self, error: sqlite3.DatabaseError) -> None:
        """Set the damaged database aside (unless another process did already),
        start a new one and copy into it the rows that still read."""
        old, rows = self._db if hasattr(self, "_db") else None, []
        if _identity(self.path) == getattr(self, "_identity", _identity(self.path)):
            rows = _salvage(old) if old is not None else []
            if old is not None:
                old.close()
            moved = set_aside(self.path, "the records database", str(error))
            for suffix in ("-wal", "-shm"):
                if moved is not None and os.path.lexists(f"{self.path}{suffix}"):
                    os.rename(f"{self.path}{suffix}", f"{moved}{suffix}")
        elif old is not None:
            old.close()
        self._connect()
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(evaluations)")]
        for row in rows:
            names = [n for n in columns if n in row]
            self._db.execute(f"INSERT OR IGNORE INTO evaluations ({', '.join(names)}) "
                             f"VALUES ({', '.join('?' * len(names))})", [row[n] for n in names])
        log.warning("started a new records database %s, with the %d rows of the damaged one that could be read",
                    self.path, len(rows))

    def _guarded(self, action):
        """Run ``action`` (a function of the connection); a damaged database is
        healed (see ``_heal``) and ``action`` run again."""
        try:
            return action(self._db)
        except sqlite3.DatabaseError as error:
            if not _damaged(error):
                raise
            self._heal(error)
            return action(self._db)

    def _select(self, query: str, args) -> list[Record]:
        def rows(db):
            cursor = db.execute(query, args)
            return [d[0] for d in cursor.description], cursor.fetchall()

        names, found = self._guarded(rows)
        records, bad = [], 0
        for values in found:
            try:
                records.append(_record(dict(zip(names, values))))
            except (ValueError, TypeError, KeyError, AttributeError):
                bad += 1
        if bad:
            self.skipped += bad
            log.warning("skipped %d rows of the records database %s that do not parse (a missing time, an unknown "
                        "outcome, a damaged genome)", bad, self.path)
        return records

    def add(self, record: Record) -> None:
        self._guarded(lambda db: self._insert(db, record))

    def _insert(self, db: sqlite3.Connection, record: Record) -> None:
        r = record.result
        db.execute(
            "INSERT INTO evaluations (operator, target, genome_key, genome, outcome, time, spread, samples, "
            "max_error, message, build_seconds, halide_version, evokernel_version, machine, run_id, created, "
            "predicted, contended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.operator, record.target, record.genome.key, record.genome.to_json(), r.outcome.value, r.time,
             r.spread, r.samples, _finite(r.max_error), r.message, r.build_seconds, record.halide_version,
             record.evokernel_version, record.machine, record.run_id, record.created, _finite(record.predicted),
             int(r.contended)))

    def find(self, operator=None, target=None):
        query, args = "SELECT * FROM evaluations WHERE 1=1", []
        if operator is not None:
            query, args = query + " AND operator = ?", args + [operator]
        if target is not None:
            query, args = query + " AND target = ?", args + [target]
        yield from self._select(query + " ORDER BY id", args)

    def trusted(self, operator, target):
        """As ``Records.trusted``, filtered in SQL (its index covers the query)."""
        return self._select(
            "SELECT * FROM evaluations WHERE operator = ? AND target = ? AND machine = ? AND halide_version = ? "
            "AND evokernel_version = ? AND NOT contended ORDER BY id",
            (operator, target, machine_fingerprint(), *versions()))

    def trusted_family(self, family, target):
        """As ``Records.trusted_family``, filtered in SQL (a range of keys: the index serves it)."""
        return self._select(
            "SELECT * FROM evaluations WHERE operator >= ? AND operator < ? AND target = ? AND machine = ? "
            "AND halide_version = ? AND evokernel_version = ? AND NOT contended ORDER BY id",
            (family + "(", family + chr(ord("(") + 1), target, machine_fingerprint(), *versions()))

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


#: Columns added after the first release: (name, SQL type); a database made before gains them on opening.
ADDED_COLUMNS = (("predicted", "REAL"), ("contended", "INTEGER NOT NULL DEFAULT 0"))


def _add_columns(db: sqlite3.Connection) -> None:
    have = {row[1] for row in db.execute("PRAGMA table_info(evaluations)")}
    for name, kind in ADDED_COLUMNS:
        if name not in have:
            try:
                db.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as error:  # another process added it first
                if "duplicate column" not in str(error).lower():
                    raise


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the database file is damaged (not busy, locked or full)."""
    name = getattr(error, "sqlite_errorname", "")
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(error).lower()
    return "malformed" in text or "not a database" in text


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _salvage(db: sqlite3.Connection) -> list[dict]:
    """The rows of a damaged database that still read: a range of ids that does not
    read is halved until it does, so a damaged page loses its own rows only."""
    try:
        top = db.execute("SELECT max(id) FROM evaluations").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return []

    def read(low: int, high: int) -> list[dict]:  # ids in [low, high)
        try:
            cursor = db.execute("SELECT * FROM evaluations WHERE id >= ? AND id < ? ORDER BY id", (low, high))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, values)) for values in cursor.fetchall()]
        except sqlite3.DatabaseError:
            middle = (low + high) // 2
            return [] if high - low <= 1 else read(low, middle) + read(middle, high)

    return read(0, top + 1)


def _record(row: dict) -> Record:
    """A row as a ``Record``; ``ValueError`` or ``TypeError`` for a row that does
    not parse (an unknown outcome, an ``ok`` without a time, a damaged genome)."""
    if row["outcome"] == Outcome.OK.value and not (isinstance(row["time"], (int, float)) and
                                                   math.isfinite(row["time"]) and row["time"] > 0):
        raise ValueError(f"an ok row needs a positive time, got {row['time']!r}")
    result = Result(row["genome_key"], Outcome(row["outcome"]), row["time"], row["spread"], row["samples"] or 0,
                    row["max_error"], row["message"] or "", row["build_seconds"] or 0.0, bool(row.get("contended")))
    return Record(row["operator"], row["target"], Genome.from_json(row["genome"]), result,
                  row["halide_version"], row["evokernel_version"], row["machine"], row["run_id"], row["created"],
                  row.get("predicted"))


def records(operator=None, target=None, cache_dir=None) -> list[dict]:
    """Everything known about ``operator`` (an Operator or its key) on ``target``,
    one flat dict per evaluation (``pandas.DataFrame(ek.records())`` works).

    >>> import evokernel as ek
    >>> isinstance(ek.records(ek.operators.relu(8)), list)
    True
    """
    key = getattr(operator, "key", operator)
    if key is not None and not isinstance(key, str):
        raise ArgumentError(f"operator must be None, an operator or its key, got {type(operator).__name__}")
    target_string = None if target is None else Target.parse(target).string
    db = open_records("sqlite", resolve(cache_dir))
    try:
        return [r.row() for r in db.find(key, target_string)]
    finally:
        db.close()
