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


def table(head: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Rows under a header, as aligned text or a markdown table.

    >>> print(table(["a", "bb"], [["1", "2"]]))
    a  bb
    1  2
    >>> print(table(["a", "bb"], [["1", "2"]], markdown=True))
    | a | bb |
    |---|---|
    | 1 | 2 |
    """
    if markdown:
        return "\n".join([f"| {' | '.join(head)} |", "|" + "---|" * len(head),
                          *(f"| {' | '.join(map(str, r))} |" for r in rows)])
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def format_bytes(count: int) -> str:
    """A size in bytes as a short text.

    >>> format_bytes(512), format_bytes(42_000), format_bytes(3 * 2**30)
    ('512 B', '41.0 KiB', '3.0 GiB')
    """
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
