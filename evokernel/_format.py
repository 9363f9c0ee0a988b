"""Text formatting shared by reports, progress bars and the command line."""

from __future__ import annotations


def format_seconds(seconds: float | None) -> str:
    """A duration in the unit that reads best.

    >>> format_seconds(3e-8), format_seconds(0.000683), format_seconds(0.1729), format_seconds(75.0)
    ('0.03 us', '683 us', '172.9 ms', '75 s')
    """
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds * 1e6:.4g} us"


def format_failures(failures: dict) -> str:
    """Failures by kind, as one phrase.

    >>> format_failures({"wrong_result": 2, "compile_error": 1}), format_failures({})
    ('compile_error 1, wrong_result 2', 'none')
    """
    return ", ".join(f"{kind} {n}" for kind, n in sorted(failures.items()) if n) or "none"
