"""The cache stays bounded: a search keeps only a few of the libraries it links,
a killed run's scratch and the files of interrupted writes are removed, and
``prune_cache`` / ``evokernel cache --prune`` remove the rest of what is not needed
and say how much they reclaimed, keeping every winner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import evokernel as ek
from evokernel.cli import main
from evokernel.codegen import ENV_VAR, native_dir
from evokernel.codegen._scratch import SCRATCH_KEEP

HOUR = 3600


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_fifo()]


def size(root: Path) -> int:
    return sum(p.lstat().st_size for p in files(root))


def aged(path: Path, seconds: float) -> Path:
    """``path`` as if it had last changed ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def tune(op, cache, **options):
    return ek.tune(op, **{"budget": 2, "seed": 0, "evaluator": "local", "cache_dir": cache, "progress": False,
                          **options})


def test_prune_removes_what_is_not_needed_keeps_the_winners_and_says_how_much(tuned, cache, capsys,
                                                                              monkeypatch):
    shutil.copytree(tuned(ek.operators.relu((4, 40))).cache_dir, cache, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("scratch"))
    native = native_dir(cache)
    kept = {p: p.read_bytes() for p in files(cache / "kernels") if p.suffix != ".lock"}
    entry = next((cache / "kernels").glob("*/kernel.o")).parent
    runtime = native / "libevokernel_runtime_0123456789abcdef.so"  # no checksum record: another version's
    junk = {
        native / "kernel_0123.so": ("loose kernel libraries", HOUR),  # as earlier versions left them
        native / ".libevokernel_runtime_x.so.json.abcd.partial": ("leftovers of interrupted writes", 2 * HOUR),
        cache / ".records.x.partial": ("leftovers of interrupted writes", 2 * HOUR),
        cache / "records.sqlite3.damaged-20260101-000000-abcd": ("damaged files set aside", 0),
        entry / "kernel.o.damaged-20260101-000000-abcd": ("damaged files set aside", 0),
        entry / ".kernel.o.x.partial": ("files of earlier winners and interrupted writes", 0),
        runtime: ("runtimes of other versions", 2 * HOUR),
    }
    for path, (_, age) in junk.items():
        path.write_bytes(b"j" * 700)
        aged(path, age)
    young = native / ".being-written.partial"
    young.write_bytes(b"y")  # a write in progress: left alone

    before = size(cache)
    monkeypatch.setenv(ENV_VAR, str(cache))
    assert main(["cache"]) == 0
    report = capsys.readouterr().out
    assert report.startswith(f"would remove {len(junk)} files") and size(cache) == before
    assert main(["cache", "--prune"]) == 0
    report = capsys.readouterr().out
    reclaimed = before - size(cache)
    assert reclaimed == len(junk) * 700
    assert report.startswith(f"removed {len(junk)} files, 4.8 KiB; the cache holds")
    for what, _ in junk.values():
        assert what in report
    assert not any(path.exists() for path in junk) and young.exists()
    assert all(path.read_bytes() == data for path, data in kept.items()), "every winner kept"
    x = np.linspace(-1, 1, 160, dtype=np.float32).reshape(4, 40)
    assert np.array_equal(ek.load(ek.operators.relu((4, 40)), cache_dir=cache)(x), np.maximum(x, 0))
    assert ek.prune_cache(cache).reclaimed == 0, "nothing left to remove"


def test_repeated_tunes_keep_the_cache_bounded_and_tidy_the_leftovers_of_killed_runs(cache):
    """Tuned again and again in one process, an operator's cache holds one winner,
    the records and a bounded scratch of libraries; each tune removes the scratch
    of killed runs and the files of their interrupted writes."""
    native = native_dir(cache)
    dead = native / "scratch" / "999999-gone"  # a scratch whose process is gone (no lock held)
    dead.mkdir(parents=True)
    (dead / "kernel_1.so").write_bytes(b"x")
    aged(dead, HOUR)
    partial = cache / ".records.sqlite3.x.partial"
    partial.write_bytes(b"half")
    aged(partial, 2 * HOUR)
    op, counts = ek.operators.relu((8, 24)), []
    for seed in range(3):
        tune(op, cache, budget=3, seed=seed, retune=True)
        assert not dead.exists() and not partial.exists()
        counts.append(len(files(native)))
        assert len(files(cache / "kernels")) <= 4  # kernel.o, the library, meta.json (and its lock beside)
    linked = len(ek.records(op, cache_dir=cache)) + 3 * 3  # each evaluation, and the finalists retimed
    assert linked > SCRATCH_KEEP, "enough libraries linked to need trimming"
    assert max(counts) <= SCRATCH_KEEP + 4, counts  # the runtime, its record and lock, the scratch's own lock


@pytest.mark.slow
def test_the_cache_stays_bounded_over_twenty_tunes(tmp_path):
    """Twenty tunes in a fresh process, of twenty operators: what is left is the
    twenty winners, the records and the runtime; the scratch leaves with the process."""
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import evokernel as ek
        for i in range(20):
            ek.tune(ek.operators.relu((4, 8 + i)), budget=4, seed=0, evaluator="local", cache_dir={str(cache)!r},
                    progress=False)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=900)
    native = [p.name for p in files(native_dir(cache))]
    assert all(name.startswith("libevokernel_runtime_") for name in native), native
    assert len(list((cache / "kernels").glob("*/kernel-*.so"))) == 20
    assert len(files(cache / "kernels")) == 20 * 4
    assert size(cache) < 4 << 20
    assert ek.prune_cache(cache).reclaimed == 0
