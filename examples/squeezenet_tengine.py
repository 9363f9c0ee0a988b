"""Tune every convolution, pooling and softmax shape of SqueezeNet v1.1 (227x227
input) and export them as one Tengine plugin.

    python examples/squeezenet_tengine.py [PLUGIN_PATH]
    EVOKERNEL_EXAMPLE_BUDGET=30s python examples/squeezenet_tengine.py   # longer searches

The budget ("10s", or a number of evaluations such as "4") is per distinct shape.
Tengine (lite 1.4+) then runs the model with these kernels wherever a node matches
one exactly, and with its own kernels elsewhere:

    load_tengine_plugin("evokernel", "libsqueezenet_evokernel.so", "evokernel_plugin_init");
    ... create_graph, prerun_graph, run_graph ...
    postrun_graph, destroy_graph       /* every graph that ran the plugin's kernels */
    unload_tengine_plugin("evokernel", "evokernel_plugin_release");

The unload comes last: while a prerun graph still holds the plugin's kernels, the
release refuses (returns -1) and the plugin stays loaded.
"""

import os
import sys
import tempfile
from pathlib import Path

import evokernel as ek

budget = os.environ.get("EVOKERNEL_EXAMPLE_BUDGET", "10s")
budget = int(budget) if budget.isdigit() else budget
ops = ek.operators


def conv(c_in, size, c_out, k=1, stride=1, pad=0):
    # Tengine fuses each ReLU into the convolution before it; every SqueezeNet conv has a bias
    return ops.conv2d(1, c_in, size, size, c_out, k=k, stride=stride, pad=pad, bias=True, activation="relu")


def fire(c_in, size, squeeze, expand):
    """Squeeze 1x1, then expand 1x1 and 3x3 (pad 1), concatenated (expand * 2 channels)."""
    return [conv(c_in, size, squeeze), conv(squeeze, size, expand), conv(squeeze, size, expand, k=3, pad=1)]


def squeezenet_v1_1():
    """The layers of torchvision's squeezenet1_1, with their shapes at 227x227."""
    layers = [conv(3, 227, 64, k=3, stride=2)]                      # -> 113x113
    layers.append(ops.max_pool2d(1, 64, 113, 113, k=3, stride=2, ceil_mode=True))     # -> 56
    layers += fire(64, 56, 16, 64) + fire(128, 56, 16, 64)
    layers.append(ops.max_pool2d(1, 128, 56, 56, k=3, stride=2, ceil_mode=True))      # -> 28
    layers += fire(128, 28, 32, 128) + fire(256, 28, 32, 128)
    layers.append(ops.max_pool2d(1, 256, 28, 28, k=3, stride=2, ceil_mode=True))      # -> 14
    layers += fire(256, 14, 48, 192) + fire(384, 14, 48, 192) + fire(384, 14, 64, 256) + fire(512, 14, 64, 256)
    layers.append(conv(512, 14, 1000))                              # conv10 (after dropout)
    layers.append(ops.avg_pool2d(1, 1000, 14, 14, k=14))            # global average pool
    layers.append(ops.softmax((1, 1000)))                           # Tengine: [1, 1000, 1, 1], axis 1
    return layers


layers = squeezenet_v1_1()
distinct = list({op.key: op for op in layers}.values())
print(f"SqueezeNet v1.1: {len(layers)} layers, {len(distinct)} distinct shapes; budget {budget} each")

kernels = []
for i, op in enumerate(distinct, 1):
    kernel = ek.tune(op, budget=budget, seed=0, evaluator="local")
    kernels.append(kernel)
    print(f"[{i:2}/{len(distinct)}] {kernel.time_ms:9.3f} ms  {op.key}")

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "libsqueezenet_evokernel.so"
plugin = ek.export_tengine_plugin(kernels, path)
total = sum(k.time_ms * sum(op.key == k.signature.key for op in layers) for k in kernels)
print(f"wrote {plugin} ({plugin.stat().st_size // 1024} KiB): {len(kernels)} kernels, "
      f"{total:.2f} ms per image for the tuned layers")
