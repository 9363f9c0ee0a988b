"""Where and with what a result was made: this machine's fingerprint and the versions
of Halide and of evokernel's schedule encoding. Timings are trusted only where all
three match."""

from __future__ import annotations

import hashlib
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import halide as hl

from .._version import __version__
from ..genome import SCHEDULE_ENCODING


@lru_cache(maxsize=1)
def machine_fingerprint() -> str:
    """A short hash of what makes timings comparable: CPU model, core count,
    architecture and the features Halide sees on this host."""
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
    return metadata.version("halide"), f"{__version__}+schedules.{SCHEDULE_ENCODING}"
