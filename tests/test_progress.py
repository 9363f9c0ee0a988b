"""Progress of a tuning run: the live bar in a terminal (a real pseudo-terminal),
silence in a pipe or with --quiet, and the snapshots a callable receives."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

import pytest

import evokernel as ek

TUNE = ["tune", "relu", "shape=3,50", "--budget", "3", "--evaluator", "local", "--seed", "0"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(cache):
    return {**os.environ, "EVOKERNEL_CACHE_DIR": str(cache), "TERM": "xterm-256color", "COLUMNS": "160"}


def run_in_terminal(args, cache) -> tuple[int, str]:
    """Run ``python -m evokernel ARGS`` with stderr on a pseudo-terminal; return
    (exit status, what the terminal showed, escape codes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    process = subprocess.Popen([sys.executable, "-m", "evokernel", *args], stdout=subprocess.DEVNULL,
                               stderr=slave, stdin=subprocess.DEVNULL, env=_env(cache))
    os.close(slave)
    rc = process.wait(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return rc, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_bar_appears_in_a_terminal(cache):
    rc, shown = run_in_terminal(TUNE, cache)
    assert rc == 0, shown
    assert "relu(shape=3x50" in shown
    assert "evaluations 3 | best " in shown
    assert "speedup " in shown and "failures: none" in shown


def test_quiet_silences_the_bar_in_a_terminal(cache):
    rc, shown = run_in_terminal([*TUNE, "--quiet"], cache)
    assert rc == 0, shown
    assert "evaluations" not in shown


def test_no_bar_in_a_pipe(cache):
    done = subprocess.run([sys.executable, "-m", "evokernel", *TUNE], capture_output=True, text=True, timeout=300,
                          env=_env(cache))
    assert done.returncode == 0, done.stderr
    assert "evaluations 3 |" not in done.stderr + done.stdout
    assert "\x1b[" not in done.stderr
    assert "check: matches" in done.stdout


def test_a_callable_sees_every_evaluation():
    seen: list[ek.TuningProgress] = []
    op = ek.operators.relu((5, 33))
    kernel = ek.tune(op, budget=5, seed=0, evaluator="local", progress=seen.append)
    assert [p.evaluations for p in seen] == [1, 2, 3, 4, 5]
    assert all(p.operator == op.key and p.baseline == kernel.stats.baseline for p in seen)
    bests = [p.best for p in seen]
    assert bests == sorted(bests, reverse=True)  # the best time never gets worse
    assert bests[-1] == pytest.approx(min(kernel.stats.history))
    assert seen[-1].fraction == 1.0 and seen[-1].speedup == pytest.approx(kernel.stats.baseline / bests[-1])
    assert [p.elapsed for p in seen] == sorted(p.elapsed for p in seen)
    assert len(kernel.stats.history_seconds) == 5
    assert list(kernel.stats.history_seconds) == sorted(kernel.stats.history_seconds)


def test_failures_are_counted_by_kind():
    """A wrong reference makes every candidate a wrong_result: the snapshots say so."""
    wrong = ek.operators.custom("off_by_one", inputs=[("x", (40,))], output_shape=(40,), algorithm=_relu,
                                reference=lambda x: x + 1.0)
    seen: list[ek.TuningProgress] = []
    with pytest.raises(ek.TuningError):
        ek.tune(wrong, budget=3, seed=0, evaluator="local", progress=seen.append)
    assert seen[-1].failures == {"wrong_result": 3} and seen[-1].best is None


def _relu(params):
    import halide as hl

    (x,), i, out = params, hl.Var("i"), hl.Func("out")
    out[i] = hl.max(x[i], 0.0)
    return out


@pytest.mark.parametrize("progress", ["yes", 1, object()])
def test_progress_must_be_a_bool_none_or_callable(progress):
    with pytest.raises(TypeError, match="progress must be"):
        ek.tune(ek.operators.relu(8), budget=2, evaluator="local", progress=progress)
