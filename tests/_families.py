"""Operators of every family on small, awkward shapes, and the helpers that check them,
shared by tests throughout this directory.

Imported as ``from _families import ...``: pytest puts this directory on sys.path
because tests/conftest.py lives here. Each entry is (test id, operator).
"""

from __future__ import annotations

import random

import halide as hl
import numpy as np

import evokernel as ek
from evokernel import codegen
from evokernel.codegen import default_threads
from evokernel.evaluators import Context, LocalEvaluator, Protocol, Settings
from evokernel.genome import ScheduleSpace
from evokernel.operators import Stage
from evokernel.target import Target

#: One (or two) operators per family; primes and sizes below one vector register.
FAMILIES = [
    ("matmul", ek.operators.matmul(37, 53, 29)),
    ("matmul-tiny", ek.operators.matmul(3, 3, 3)),
    ("fc", ek.operators.fc(3, 37, 29, bias=True)),
    ("conv2d", ek.operators.conv2d(1, 3, 11, 13, 5, k=3, pad=1, bias=True, activation="relu")),
    ("conv2d-groups-stride2", ek.operators.conv2d(2, 4, 9, 7, 6, k=3, stride=2, pad=1, groups=2)),
    ("depthwise", ek.operators.depthwise_conv2d(1, 3, 10, 11, k=3, stride=2, pad=1)),
    ("conv1x1", ek.operators.conv1x1(2, 5, 7, 37, bias=True, activation="relu")),
    ("max_pool", ek.operators.max_pool2d(1, 3, 11, 13, k=3, stride=2, pad=1)),
    ("avg_pool", ek.operators.avg_pool2d(1, 2, 7, 9, k=2)),
    ("relu", ek.operators.relu((37, 53))),
    ("relu-tiny", ek.operators.relu((3,))),
    ("relu6", ek.operators.relu6((5, 7, 3))),
    ("add", ek.operators.add((37, 29))),
    ("softmax", ek.operators.softmax((7, 37))),
    ("softmax-rank1", ek.operators.softmax((3,))),
]

FAMILY_IDS = [name for name, _ in FAMILIES]
OPERATORS = [op for _, op in FAMILIES]


def space_of(op, lanes: int | None = None, threads: int = 2, registers: int = 16) -> ScheduleSpace:
    """The schedule space ``tune`` would search for ``op`` on this host (with
    ``registers`` vector registers, whatever the host has)."""
    lanes = lanes or Target.parse("host").natural_vector_size(op.dtype)
    return ScheduleSpace.from_algorithm(op.algorithm(), lanes, threads, registers=registers)


def seeded(seed) -> random.Random:
    return random.Random(seed)


def random_draws(seeds=(0, 1, 2)) -> list[list]:
    """[family, seed, key, JSON] of the random genome each seed draws per family:
    the same in every process."""
    from evokernel.genome import random_genome

    out = []
    for name, op in FAMILIES:
        space = space_of(op, lanes=16, threads=2)
        for seed in seeds:
            g = random_genome(space, seeded(seed))
            out.append([name, seed, g.key, g.to_json()])
    return out


def fresh_inputs(op, seed: int) -> list[np.ndarray]:
    """Inputs the tuner never saw (it draws from seeds 0..n), scaled a little."""
    rng = np.random.default_rng(10_000 + seed)
    return [a * np.asarray(3.0, a.dtype) for a in op.random_inputs(rng)]


def assert_close(op, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == op.output.shape and got.dtype == np.dtype(op.dtype)
    rtol, atol = op.tolerance
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * 3)


def box_blur_operator(h: int = 19, w: int = 23):
    """A two-stage custom operator (a separable 3x3 box blur), as in
    examples/custom_operator.py, on awkward sizes."""

    def algorithm(params):
        (image,) = params
        x, y = hl.Var("x"), hl.Var("y")
        blur_x, out = hl.Func("blur_x"), hl.Func("out")
        blur_x[x, y] = image[x, y] + image[x + 1, y] + image[x + 2, y]
        out[x, y] = (blur_x[x, y] + blur_x[x, y + 1] + blur_x[x, y + 2]) * hl.f32(1 / 9)
        return [Stage(blur_x, (w - 2, h)), Stage(out, (w - 2, h - 2))]

    def reference(image):
        window = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (3, 3))
        return window.mean(axis=(-2, -1))

    return ek.operators.custom("box_blur_test", [("image", (h, w))], (h - 2, w - 2), algorithm, reference,
                               flops=9 * (h - 2) * (w - 2), reduction_length=9)


#: Check once, time once: for tests about outcomes, not speed.
QUICK = Settings(protocol=Protocol(warmup=0, min_calls=1, max_calls=1, min_time=0.0),
                 min_run_timeout=5.0, first_run_timeout=30.0)


def prepared(op, seed: int = 0, settings: Settings = QUICK, evaluator=None):
    """An evaluator (default: a LocalEvaluator) prepared the way ``tune`` prepares one."""
    target = Target.parse("host")
    threads = default_threads()
    space = space_of(op, threads=threads)
    context = Context(op, target, space, threads, codegen.cache_dir(), seed)
    evaluator = evaluator or LocalEvaluator()
    evaluator.settings = settings
    evaluator.prepare(context)
    return evaluator, context
