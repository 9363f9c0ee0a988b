"""Tune a matrix multiplication for this CPU and call it on NumPy arrays.

    python examples/quickstart.py
    EVOKERNEL_EXAMPLE_BUDGET=2m python examples/quickstart.py   # a longer search

The budget is a duration ("30s", "2m") or a plain number of evaluations ("50").
"""

import os

import numpy as np

import evokernel as ek

budget = os.environ.get("EVOKERNEL_EXAMPLE_BUDGET", "30s")
budget = int(budget) if budget.isdigit() else budget

op = ek.operators.matmul(m=512, n=512, k=512)
# evaluator="local" builds and times in this process and one worker; the default,
# "ray", builds candidates in parallel on a local Ray instance (or your cluster).
kernel = ek.tune(op, target="host", budget=budget, seed=0, evaluator="local")

a = np.random.rand(512, 512).astype(np.float32)
b = np.random.rand(512, 512).astype(np.float32)
c = kernel(a, b)
assert np.allclose(c, a @ b, rtol=1e-4, atol=1e-3), "tuned kernel disagrees with NumPy"

print(kernel.report())  # times, speedup over the unscheduled pipeline, failures, schedule code
print(f"\nkernel(a, b) matches a @ b; {kernel.time_ms:.3f} ms per call")
