"""What is stored beside a kernel's artifact: ``KernelMeta`` and the values it holds.

The same metadata travels from the tuner through the cache, ``Kernel``, bundles,
exporters and the command line, as one frozen dataclass; on disk it is the JSON of
``to_dict``. ``from_dict`` reads it back and names what is wrong with damaged data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

from ..errors import CacheError, EvokernelError
from ..genome import Genome
from ..operators import Operator, TensorSpec
from ..search import Budget
from ..target import Target
from ._provenance import machine_fingerprint, versions


@dataclass(frozen=True)
class Signature:
    """What calling a kernel needs to know of its operator: key, array specs, cost.
    Stored with every kernel, so a bundle loads even where its operator's code
    (a custom operator) is not at hand."""

    key: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    flops: int
    bytes_moved: int

    @classmethod
    def of(cls, operator: Operator) -> "Signature":
        return cls(operator.key, tuple(operator.inputs), operator.output, int(operator.flops),
                   int(operator.bytes_moved))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Signature":
        spec = lambda d: TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])  # noqa: E731
        return cls(data["key"], tuple(spec(d) for d in data["inputs"]), spec(data["output"]),
                   int(data["flops"]), int(data["bytes_moved"]))


@dataclass(frozen=True)
class TuningStats:
    """How a kernel was found: best and baseline (unscheduled) seconds, the best
    time after each evaluation (``history``) and the wall seconds since the start
    at which each evaluation finished (``history_seconds``; empty for kernels tuned
    before it was recorded), outcomes by kind, budget and seed; for a search with a
    cost model, ``rank_correlation`` (Spearman) between the times it predicted and
    those measured, over the ``predicted`` correct candidates it ranked before they
    were measured (``None`` and 0 otherwise)."""

    time: float
    spread: float
    baseline: float | None
    history: tuple[float, ...] = ()
    history_seconds: tuple[float, ...] = ()
    outcomes: dict = field(default_factory=dict)
    elapsed: float = 0.0
    budget: str = ""
    seed: int | None = None
    rank_correlation: float | None = None
    predicted: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TuningStats":
        baseline = data.get("baseline")
        return cls(**{**data, "time": float(data["time"]), "baseline": None if baseline is None else float(baseline),
                      "history": tuple(map(float, data.get("history", ()))),
                      "history_seconds": tuple(map(float, data.get("history_seconds", ())))})

    @property
    def failures(self) -> dict[str, int]:
        """Evaluations that did not give a correct time, by kind."""
        return {kind: n for kind, n in sorted(self.outcomes.items()) if kind != "ok" and n}


@dataclass(frozen=True)
class KernelMeta:
    """Everything known of a tuned kernel but its code: the operator (key, arguments
    and call signature), target and machine, the winning genome and its schedule
    code, how it was found (stats, budget), the versions that made it and when."""

    operator: str
    operator_args: dict
    signature: Signature
    target: str
    machine: str
    genome: Genome
    schedule: str
    stats: TuningStats
    budget: Budget
    halide_version: str
    evokernel_version: str
    created: float

    @classmethod
    def new(cls, operator: Operator, target: Target, genome: Genome, schedule: str, stats: TuningStats,
            budget: Budget) -> "KernelMeta":
        """The metadata of a kernel tuned now, on this machine."""
        args = json.loads(json.dumps(operator.to_dict()))  # as it reads back: tuples become lists
        return cls(operator.key, args, Signature.of(operator), target.string, machine_fingerprint(),
                   genome, schedule, stats, budget, *versions(), time.time())

    def to_dict(self) -> dict:
        return {"operator": self.operator, "operator_args": self.operator_args,
                "signature": self.signature.to_dict(), "target": self.target, "machine": self.machine,
                "genome": self.genome.to_dict(), "schedule": self.schedule, "stats": self.stats.to_dict(),
                "budget": self.budget.to_dict(), "halide_version": self.halide_version,
                "evokernel_version": self.evokernel_version, "created": self.created}

    @classmethod
    def from_dict(cls, data: dict, where: str = "kernel metadata") -> "KernelMeta":
        """Read ``to_dict`` data back; ``CacheError`` naming ``where`` and the field
        for anything missing or malformed."""
        if not isinstance(data, dict):
            raise CacheError(f"{where}: metadata is {type(data).__name__}, not an object")
        readers = {"operator": _text, "operator_args": _object, "signature": Signature.from_dict,
                   "target": _text, "machine": _text, "genome": Genome.from_dict, "schedule": _text,
                   "stats": TuningStats.from_dict, "budget": Budget.from_dict, "halide_version": _text,
                   "evokernel_version": _text, "created": float}
        values = {}
        for name, read in readers.items():
            if name not in data:
                raise CacheError(f"{where}: metadata has no {name!r}")
            try:
                values[name] = read(data[name])
            except (EvokernelError, KeyError, TypeError, ValueError, AttributeError) as error:
                raise CacheError(f"{where}: unusable {name!r} in the metadata ({type(error).__name__}: {error})") \
                    from error
        return cls(**values)


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _object(value) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value
