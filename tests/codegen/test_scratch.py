"""Each process links into a scratch directory of its own, keeps only its newest
libraries there, and removes it when it ends; a killed process's scratch is removed
by the next process that looks, a running one's never."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from evokernel.codegen import Removal, native_dir, prune_native
from evokernel.codegen._scratch import SCRATCH_KEEP, trim


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def test_trim_keeps_the_newest_libraries_of_a_scratch_directory(tmp_path):
    for i in range(SCRATCH_KEEP + 9):
        (tmp_path / f"kernel_{i:02d}.so").write_bytes(b"x")
        aged(tmp_path / f"kernel_{i:02d}.so", 100 - i)
    trim(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"kernel_{i:02d}.so" for i in range(9, SCRATCH_KEEP + 9)]


SCRATCH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from evokernel.codegen._scratch import scratch_dir
    directory = scratch_dir(Path(sys.argv[1]))
    (directory / "kernel_0.so").write_bytes(b"x" * 1000)
    print(directory, flush=True)
    if sys.argv[2] == "wait":
        time.sleep(600)
""")


def test_a_killed_process_scratch_is_removed_a_running_one_kept_an_ended_one_gone(cache):
    native = native_dir(cache)
    ended = subprocess.run([sys.executable, "-c", SCRATCH, str(native), "end"], capture_output=True, text=True,
                           check=True)
    assert not Path(ended.stdout.strip()).exists(), "a process that ends removes its scratch"
    proc = subprocess.Popen([sys.executable, "-c", SCRATCH, str(native), "wait"], stdout=subprocess.PIPE, text=True)
    try:
        directory = Path(proc.stdout.readline().strip())
        removal = Removal()
        prune_native(native, removal, everything=True)
        assert directory.is_dir() and not removal.removed, "a running process's scratch is kept"
    finally:
        proc.kill()
        proc.wait()
    assert directory.is_dir()
    removal = Removal()
    prune_native(native, removal)
    assert not directory.exists()
    assert removal.removed["scratch of ended processes"] == (2, 1000 + len(f"{proc.pid}\n"))
