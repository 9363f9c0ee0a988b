"""A timing made while another evaluation ran on the machine is marked
``contended`` and not trusted: a later run measures that genome again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import evokernel as ek
from evokernel.evaluators._activity import Activity, activity_dir

HOLD = ("import sys\n"
        "from evokernel.evaluators._activity import Activity\n"
        "a = Activity().__enter__()\n"
        "print('registered', flush=True)\n"
        "sys.stdin.read()\n")


def test_an_evaluation_is_seen_while_it_runs_and_not_after_its_process_is_killed():
    mine, other = Activity(), Activity()
    with mine:
        assert other.others() == 1 and mine.others() == 0
        with mine:  # reentrant
            pass
        assert other.others() == 1
    assert other.others() == 0
    held = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert held.stdout.readline().strip() == "registered"
    assert mine.others() == 1
    os.kill(held.pid, signal.SIGKILL)
    held.wait()
    assert mine.others() == 0, "a killed process's evaluation does not count"
    assert not list(activity_dir().glob("*.lock")), "its registration was cleared"


def test_timings_made_beside_another_evaluation_are_not_trusted_and_are_measured_again(cache):
    op = ek.operators.relu((33, 17))
    another = Activity()
    with another:  # another tuning process of this machine, as far as the tuner can tell
        ek.tune(op, budget=4, seed=0, evaluator="local", cache_dir=cache)
    rows = ek.records(op, cache_dir=cache)
    assert len(rows) == 4 and all(r["contended"] and not r["trusted"] for r in rows)
    first = {r["genome_key"] for r in rows}

    ek.tune(op, budget=6, seed=0, evaluator="local", cache_dir=cache)
    later = ek.records(op, cache_dir=cache)[4:]
    assert first <= {r["genome_key"] for r in later}, "the contended timings were measured again"
    assert all(not r["contended"] and r["trusted"] for r in later)


#: A tune of its own, in its own cache, run twice at once.
TUNE = ("import sys, evokernel as ek\n"
        "k = ek.tune(ek.operators.matmul(64, 48, 32), budget='4s', seed=0, evaluator='local', cache_dir=sys.argv[1],"
        " progress=False)\n"
        "rows = ek.records(ek.operators.matmul(64, 48, 32), cache_dir=sys.argv[1])\n"
        "print(sum(r['contended'] for r in rows), len(rows))\n")


def test_two_processes_tuning_at_once_mark_their_timings(tmp_path):
    """Two tuning processes started together: the timings each made while the other
    ran are marked; none of them is trusted for a later resume."""
    caches = [tmp_path / "a", tmp_path / "b"]
    for c in caches:
        c.mkdir(mode=0o700)
    runs = [subprocess.Popen([sys.executable, "-c", TUNE, str(c)], stdout=subprocess.PIPE, text=True)
            for c in caches]
    counts = [tuple(map(int, run.communicate(timeout=300)[0].split())) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    for contended, total in counts:
        assert total > 0 and contended > 0, counts
