"""The task scheduler's choices: which operator gets the next slice, and when an
operator is left alone."""

from __future__ import annotations

import evokernel as ek
from evokernel.models import Task
from evokernel.models._scheduler import MIN_GAIN, _slice


def test_the_next_slice_goes_where_it_saves_the_most_network_time():
    op = ek.operators.relu(64)
    frequent = Task(op, count=4, bests=[2e-3, 1.8e-3])     # 10% better in its last slice, 4 occurrences
    rare = Task(op, count=1, bests=[5e-3, 4.0e-3])         # 20% better, once
    stuck = Task(op, count=2, bests=[9e-3, 9e-3])          # no progress: the floor rate only
    gains = {name: t.expected_gain() for name, t in (("frequent", frequent), ("rare", rare), ("stuck", stuck))}
    assert max(gains, key=gains.get) == "rare"             # 1 x 4 ms x 0.2 beats 4 x 1.8 ms x 0.1
    assert gains["stuck"] == 2 * 9e-3 * MIN_GAIN
    assert stuck.rate() == 0.0 < MIN_GAIN                  # the scheduler retires it


def test_a_task_with_nothing_known_is_promising():
    task = Task(ek.operators.relu(64), count=1)
    assert task.rate() == 1.0


def test_slices_divide_the_first_round_among_operators():
    assert _slice(ek.Budget(seconds=600), 25).seconds == 12.0
    assert _slice(ek.Budget(evaluations=100), 10).evaluations == 5
    assert _slice(ek.Budget(seconds=10), 100).seconds == 2.0            # never below the shortest slice
