"""Tune a matrix multiplication for this CPU and call it on NumPy arrays.

    python examples/quickstart.py [budget]      # default budget: 20s
"""

import sys

import numpy as np

import evokernel as ek

budget = sys.argv[1] if len(sys.argv) > 1 else "20s"
op = ek.operators.matmul(m=512, n=512, k=512)
kernel = ek.tune(op, target="host", budget=budget, seed=0)

a = np.random.rand(512, 512).astype(np.float32)
b = np.random.rand(512, 512).astype(np.float32)
c = kernel(a, b)
assert np.allclose(c, a @ b, rtol=1e-4, atol=1e-3), "tuned kernel disagrees with NumPy"

print(kernel.report())
print("\nwinning schedule:\n" + kernel.schedule)
