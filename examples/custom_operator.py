"""Tune an operator of your own: a 3x3 box blur written as two Halide stages.

Run it with ``python examples/custom_operator.py`` (budget: ``$EVOKERNEL_EXAMPLE_BUDGET``,
a duration or a plain number of evaluations, default 30s). The operator is
``out[i, j] = mean(image[i:i+3, j:j+3])`` over a ``[H, W]`` image (no padding, so
the output is ``[H-2, W-2]``), computed separably: a horizontal 3-tap sum
``blur_x`` then a vertical one, ``out``. evokernel evolves a schedule for both
stages (where ``blur_x`` is computed, tiling, vectorization, parallelism...) and
checks every candidate against the NumPy reference.
"""

from __future__ import annotations

import os

import halide as hl
import numpy as np

import evokernel as ek
from evokernel.operators import Stage, custom

H, W = 1024, 768


def box_blur(params: list[hl.ImageParam]) -> list[Stage]:
    """The Halide algorithm. Halide numbers dims the other way round from NumPy:
    ``image[x, y]`` is ``image[y, x]`` in NumPy (x is the column)."""
    (image,) = params
    x, y = hl.Var("x"), hl.Var("y")
    blur_x, out = hl.Func("blur_x"), hl.Func("out")
    blur_x[x, y] = image[x, y] + image[x + 1, y] + image[x + 2, y]
    out[x, y] = (blur_x[x, y] + blur_x[x, y + 1] + blur_x[x, y + 2]) * hl.f32(1 / 9)
    # Stage extents are in Halide order over the region the consumer reads.
    return [Stage(blur_x, (W - 2, H)), Stage(out, (W - 2, H - 2))]


def box_blur_reference(image: np.ndarray) -> np.ndarray:
    """The same in NumPy (float64, evokernel casts back to float32)."""
    window = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (3, 3))
    return window.mean(axis=(-2, -1))


def make_op():
    return custom(
        "box_blur3x3",
        inputs=[("image", (H, W))],
        output_shape=(H - 2, W - 2),
        algorithm=box_blur,
        reference=box_blur_reference,
        flops=9 * (H - 2) * (W - 2),
        reduction_length=9,
    )


def main() -> None:
    op = make_op()
    print("tuning", op.key)
    budget = os.environ.get("EVOKERNEL_EXAMPLE_BUDGET", "30s")
    kernel = ek.tune(op, target="host", budget=int(budget) if budget.isdigit() else budget, seed=0,
                     evaluator="local")
    print(kernel.report())

    image = np.random.default_rng(0).uniform(-1, 1, (H, W)).astype(np.float32)
    y = kernel(image)
    rtol, atol = op.tolerance
    np.testing.assert_allclose(y, op.reference(image), rtol=rtol, atol=atol)
    print("matches the NumPy reference:", y.shape)


if __name__ == "__main__":
    main()
