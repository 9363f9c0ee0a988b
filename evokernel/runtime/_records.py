"""The records: every evaluation ever made, durably, in SQLite (WAL mode).

One row per evaluation, written (and committed) as it completes, so a tuning run
killed at any moment loses at most the candidate in flight. Several processes may
write at once: SQLite serialises writers and the busy timeout waits for the lock.
A row carries the machine fingerprint, the Halide version and evokernel's version
with its schedule encoding: rows from elsewhere are kept, but only rows of this
machine and these versions are trusted for timing (the same genome decodes to
another schedule when the encoding changes).
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterator

from ..errors import CacheError
from ..evaluators import Outcome, Result
from ..genome import Genome

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


@lru_cache(maxsize=1)
def machine_fingerprint() -> str:
    """A short hash of what makes timings comparable: CPU model, core count,
    architecture and the features Halide sees on this host."""
    import halide as hl

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    text = f"{platform.machine()}|{model}|{os.cpu_count()}|{hl.get_host_target().to_string()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def versions() -> tuple[str, str]:
    """(Halide version, evokernel version with its schedule encoding's)."""
    from .. import __version__
    from ..genome import SCHEDULE_ENCODING

    return metadata.version("halide"), f"{__version__}+schedules.{SCHEDULE_ENCODING}"


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


class Records:
    """The evaluation database of one cache directory.

    >>> import tempfile, pathlib
    >>> db = Records(pathlib.Path(tempfile.mkdtemp()) / "records.sqlite3")
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

    def add(self, operator: str, target: str, genome: Genome, result: Result, run_id: str) -> None:
        """Store one evaluation, committed before returning."""
        halide_version, evokernel_version = versions()
        r = result
        self._db.execute(
            "INSERT INTO evaluations (operator, target, genome_key, genome, outcome, time, spread, samples, "
            "max_error, message, build_seconds, halide_version, evokernel_version, machine, run_id, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (operator, target, genome.key, genome.to_json(), r.outcome.value, r.time, r.spread, r.samples,
             _finite(r.max_error), r.message, r.build_seconds, halide_version, evokernel_version,
             machine_fingerprint(), run_id, time.time()))

    def find(self, operator: str | None = None, target: str | None = None,
             trusted_only: bool = False) -> Iterator[Record]:
        """Stored evaluations, oldest first, filtered by operator key and target."""
        query, args = "SELECT * FROM evaluations WHERE 1=1", []
        if operator is not None:
            query, args = query + " AND operator = ?", args + [operator]
        if target is not None:
            query, args = query + " AND target = ?", args + [target]
        if trusted_only:
            query += " AND machine = ? AND halide_version = ? AND evokernel_version = ?"
            args += [machine_fingerprint(), *versions()]
        cursor = self._db.execute(query + " ORDER BY id", args)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            yield _record(dict(zip(names, values)))

    def close(self) -> None:
        self._db.close()


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
    from ..target import Target
    from ._paths import cache_dir as resolve

    key = getattr(operator, "key", operator)
    target_string = None if target is None else Target.parse(target).string
    db = Records(resolve(cache_dir) / "records.sqlite3")
    try:
        return [r.row() for r in db.find(key, target_string)]
    finally:
        db.close()


__all__ = ["Records", "Record", "records", "machine_fingerprint", "versions"]
