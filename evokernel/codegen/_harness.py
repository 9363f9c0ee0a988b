"""The kernel harness: a program of the target's platform that loads a runtime
library and a kernel library and calls the kernel as the runner's worker process
does through ctypes (``_harness.c`` says how). It lets a kernel of another platform
run in a process of its own, under an emulator such as qemu-user, while the checking
and timing protocol stays in Python."""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import cache
from importlib import metadata, resources
from pathlib import Path

from filelock import FileLock

from ._native import run_tool
from ._toolchain import toolchain


@cache
def _source() -> str:
    return resources.files(__package__).joinpath("_harness.c").read_text()


def harness_program(target: str, directory: Path) -> Path:
    """Build (once, under a file lock) the harness for ``target``'s platform into
    ``directory``, with that platform's toolchain; raises ``BuildError`` without one."""
    tools = toolchain(target)
    cc = tools.cc()
    text = f"{tools.platform}\n{cc}\n{metadata.version('halide')}\n{_source()}"
    path = directory / f"evokernel_harness_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if path.exists():
        return path
    import halide as hl

    with FileLock(str(path) + ".lock"):
        if path.exists():
            return path
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            src, exe = Path(tmp, "harness.c"), Path(tmp, path.name)
            src.write_text(_source())
            run_tool([cc, "-std=gnu11", "-O2", "-Wall", "-Werror", f"-I{Path(hl.__file__).parent / 'include'}",
                      "-o", str(exe), str(src), "-ldl"])
            os.replace(exe, path)
    return path
