"""Genomes: one schedule as plain, hashable, JSON-serialisable data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields

INLINE, ROOT = -1, 0
_ADDED_LATER = ("rfactor", "tasks", "host", "rblock")


@dataclass(frozen=True)
class StageGene:
    """How one stage is scheduled.

    location  -1 inline, 0 root, k >= 1 computed at the k-th loop (outermost first)
              of its consumer.
    tiles     per pure variable (outer, inner) split factors; 1 means no split.
    order     permutation of variable indices, outermost first, for the tile loops.
    vector    index of the variable whose innermost loop is vectorised (-1: none),
    width     with this many lanes.
    parallel  number of outermost loops fused and run in parallel.
    unroll    per pure variable, the unroll factor of its innermost serial loop.
    rsplit    per reduction variable, the factor of its inner split (1: none).
    rdepth    pure loops (innermost first, after the vector loop) nested inside the
              reduction loops; 0 keeps the reduction just outside the vector loop.
    runroll   whether the inner reduction splits are unrolled.
    rfactor   lanes of a vectorised partial reduction (Halide's ``rfactor``) along the
              first reduction variable, for reductions over contiguous memory
              (a row of a matrix-vector product, softmax's row sums); 1: none.
    tasks     parallel tasks per thread: the parallel loop is cut into ``threads *
              tasks`` stretches of consecutive iterations; 0: one task per iteration.
    host      1: ``location`` counts the loops of the consumer's own consumer that
              enclose the consumer (a packed copy of a weight panel, made once per
              panel and shared by every tile the consumer computes inside it);
              0: the consumer's loops.
    rblock    1: the outer loops of the split reduction variables go outside the
              stage's loops (inside its parallel ones), so one block of the
              reduction's operands stays in cache while every tile of the stage
              uses it, and the stage's values stay in memory between blocks (a
              BLAS kernel's blocking of K); 0: all reduction loops at ``rdepth``.
    """

    location: int = ROOT
    tiles: tuple[tuple[int, int], ...] = ()
    order: tuple[int, ...] = ()
    vector: int = -1
    width: int = 1
    parallel: int = 0
    unroll: tuple[int, ...] = ()
    rsplit: tuple[int, ...] = ()
    rdepth: int = 0
    runroll: int = 0
    rfactor: int = 1
    tasks: int = 0
    host: int = 0
    rblock: int = 0

    def to_dict(self) -> dict:
        """Plain data; genes added after the first release are left out at their
        default, so the keys of genomes recorded before them stay the same."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.name not in _ADDED_LATER or getattr(self, f.name) != f.default}

    @classmethod
    def from_dict(cls, data: dict) -> "StageGene":
        """Parse a stage gene; anything but ints in the expected layout is a ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"a stage gene is a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown stage gene fields: {sorted(unknown)}")
        lists = ("tiles", "order", "unroll", "rsplit")
        values = {name: _integer(name, v) for name, v in data.items() if name not in lists}
        if "tiles" in data:
            values["tiles"] = tuple(_integers("tiles", t, 2) for t in _sequence("tiles", data["tiles"]))
        for name in ("order", "unroll", "rsplit"):
            if name in data:
                values[name] = _integers(name, data[name])
        return cls(**values)


@dataclass(frozen=True)
class Genome:
    """A whole schedule: one ``StageGene`` per stage, in the space's stage order.

    >>> g = Genome((StageGene(vector=0, width=8),))
    >>> Genome.from_json(g.to_json()) == g
    True
    """

    stages: tuple[StageGene, ...]

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict) -> "Genome":
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise ValueError("a genome is a mapping with a list of 'stages'")
        return cls(tuple(StageGene.from_dict(s) for s in data["stages"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Genome":
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> str:
        """Stable hash of the genome (the same on every machine and run)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:20]

    def replace_stage(self, index: int, gene: StageGene) -> "Genome":
        return Genome(self.stages[:index] + (gene,) + self.stages[index + 1:])


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"stage gene field {name!r} needs integers, got {value!r}")
    return value


def _sequence(name: str, value) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"stage gene field {name!r} must be a list, got {value!r}")
    return list(value)


def _integers(name: str, value, length: int | None = None) -> tuple[int, ...]:
    items = _sequence(name, value)
    if length is not None and len(items) != length:
        raise ValueError(f"stage gene field {name!r} needs lists of {length} integers, got {value!r}")
    return tuple(_integer(name, v) for v in items)


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


__all__ = ["Genome", "StageGene", "INLINE", "ROOT"]
