"""Tune one ResNet-50 layer: a 3x3 convolution, 64 -> 64 channels over 56x56, with
its bias and ReLU fused, and compare it with NumPy.

    python examples/conv_resnet_layer.py
    EVOKERNEL_EXAMPLE_BUDGET=2m python examples/conv_resnet_layer.py

The budget is a duration ("30s", "2m") or a plain number of evaluations ("50").
With matplotlib installed (pip install 'evokernel[plot]') the search is drawn to
conv_resnet_layer.png.
"""

import os
import time

import numpy as np

import evokernel as ek

budget = os.environ.get("EVOKERNEL_EXAMPLE_BUDGET", "30s")
budget = int(budget) if budget.isdigit() else budget

# conv2_x of ResNet-50: NCHW input, weights [c_out, c_in, kh, kw], bias [c_out].
op = ek.operators.conv2d(n=1, c_in=64, h=56, w=56, c_out=64, k=3, stride=1, pad=1, bias=True, activation="relu")
print("tuning", op.key, "with budget", budget)
kernel = ek.tune(op, budget=budget, seed=0, evaluator="local")

x, weight, bias = op.random_inputs(np.random.default_rng(0))
start = time.perf_counter()
expected = op.reference(x, weight, bias)
numpy_ms = (time.perf_counter() - start) * 1e3
y = kernel(x, weight, bias)
rtol, atol = op.tolerance
np.testing.assert_allclose(y, expected, rtol=rtol, atol=atol)

print(kernel.report())
print(f"\noutput {y.shape} matches the NumPy reference; tuned {kernel.time_ms:.3f} ms per call, "
      f"NumPy reference {numpy_ms:.1f} ms, {op.flops / 1e9:.2f} GFLOP")
try:
    print("search drawn to", kernel.plot("conv_resnet_layer.png"))
except ek.EvokernelError as error:  # matplotlib is an optional extra
    print(error)
