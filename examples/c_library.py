"""Tune a convolution and a matmul, export them as a C library, call it from C.

    python examples/c_library.py
    EVOKERNEL_EXAMPLE_BUDGET=2m python examples/c_library.py   # a longer search

Writes ekdemo.h, libekdemo.so and libekdemo.a into a temporary directory (or the
directory given as the first argument), compiles examples/c_library/main.c against
the shared and the static library with ``cc``, runs both and checks what they
computed against NumPy. The budget is a duration ("20s") or a number of evaluations
("8"), for each kernel.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import evokernel as ek

budget = os.environ.get("EVOKERNEL_EXAMPLE_BUDGET", "20s")
budget = int(budget) if budget.isdigit() else budget

ops = {
    "conv": ek.operators.conv2d(n=1, c_in=16, h=28, w=28, c_out=32, k=3, pad=1, bias=True, activation="relu"),
    "matmul": ek.operators.matmul(m=128, n=96, k=64),
}
kernels = {name: ek.tune(op, budget=budget, seed=0, evaluator="local") for name, op in ops.items()}

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ekdemo-"))
lib = ek.export_c(kernels, out, name="ekdemo")  # ekdemo_conv(...), ekdemo_matmul(...)
print(f"wrote {lib.header}, {lib.shared.name} and {lib.static.name}")

rng = np.random.default_rng(0)
inputs = {name: op.random_inputs(rng) for name, op in ops.items()}
for name, arrays in inputs.items():
    for spec, array in zip(ops[name].inputs, arrays):
        array.tofile(out / f"{name}_{spec.name.lower()}.bin")

main_c = Path(__file__).with_name("c_library") / "main.c"
builds = {
    "shared": [f"-L{out}", "-lekdemo", f"-Wl,-rpath,{out}"],
    "static": [str(lib.static), "-lpthread", "-ldl", "-lm"],
}
for kind, link in builds.items():
    exe = out / f"demo_{kind}"
    subprocess.run(["cc", "-O2", "-Wall", f"-I{out}", str(main_c), "-o", str(exe), *link], check=True)
    for name in ops:
        (out / f"{name}_out.bin").unlink(missing_ok=True)
    print(f"{kind}: " + subprocess.run([str(exe), str(out)], check=True, capture_output=True, text=True).stdout.strip())
    for name, op in ops.items():
        result = np.fromfile(out / f"{name}_out.bin", np.float32).reshape(op.output.shape)
        rtol, atol = op.tolerance
        assert np.allclose(result, op.reference(*inputs[name]), rtol=rtol, atol=atol), f"{name} ({kind}) disagrees"
    print(f"{kind}: conv and matmul match NumPy")

for name, kernel in kernels.items():
    print(f"{name}: {kernel.time_ms:.3f} ms per call ({kernel.speedup or 0:.1f}x the unscheduled pipeline)")
