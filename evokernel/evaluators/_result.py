"""Typed outcomes of evaluating one candidate schedule."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Outcome(str, enum.Enum):
    OK = "ok"
    COMPILE_ERROR = "compile_error"
    COMPILE_TIMEOUT = "compile_timeout"
    RUN_CRASH = "run_crash"
    RUN_TIMEOUT = "run_timeout"
    WRONG_RESULT = "wrong_result"


@dataclass(frozen=True)
class Result:
    """What became of one genome: ``time`` is the median seconds of one call
    (``ok`` only), ``spread`` the interquartile range over the median;
    ``contended``: measured while another evaluation ran on the machine (its time
    may be that of a shared machine: it is not trusted later)."""

    genome_key: str
    outcome: Outcome
    time: float | None = None
    spread: float | None = None
    samples: int = 0
    max_error: float | None = None
    message: str = ""
    build_seconds: float = 0.0
    contended: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def to_dict(self) -> dict:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data
