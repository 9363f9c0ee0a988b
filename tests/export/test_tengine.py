"""ek.export_tengine_plugin, run by a faithful stand-in for Tengine.

Tengine is on no package registry these machines reach, so ``tengine_host/host.c``
does to the plugin what Tengine lite 1.4 - 1.5 does (per /work/shared/tengine-abi.md,
read from Tengine's source and checked on a build): it dlopens the plugin and calls
its init; it exports ``register_builtin_node_ops``, ``unregister_builtin_node_ops``
and ``get_ir_graph_tensor`` from the executable (``-rdynamic``), where Tengine's
library provides them; it lays out nodes, tensors and op parameters in Tengine's own
structures (the byte offsets measured on a Tengine build are asserted at compile
time) with only the bytes each needs; it keeps the strictly highest score against a
built-in kernel of score 4000 registered first; it calls init_node, prerun, run
(twice), postrun and release_node, then release, checks that nothing stays
registered, and dlcloses. The host runs under AddressSanitizer, and once under
valgrind, which also sees the plugin's (uninstrumented) memory accesses. The same
host, cross-compiled for AArch64, loads the plugin exported for ARM and runs it
under qemu-aarch64.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _arm import ARM, CROSS_CC, needs_arm, qemu

import evokernel as ek
from evokernel.export._tengine import describe

HOST_SOURCE = Path(__file__).parent / "tengine_host" / "host.c"
OP_CONV, OP_FC, OP_POOL, OP_RELU, OP_RELU6, OP_SOFTMAX = 15, 26, 49, 56, 57, 72
ops = ek.operators

CASES = {  # the kernels in the plugin; node(op) is the Tengine node each one computes
    "conv_b2_relu": ops.conv2d(2, 4, 7, 7, 8, k=3, stride=2, pad=1, bias=True, activation="relu"),
    "conv_g4_relu6": ops.conv2d(1, 8, 6, 6, 8, k=3, pad=1, groups=4, bias=True, activation="relu6"),
    "depthwise_b2": ops.depthwise_conv2d(2, 8, 6, 6, k=3, pad=1),  # no bias, no activation
    "conv1x1_b2_relu6": ops.conv1x1(2, 6, 8, 35, bias=True, activation="relu6"),
    "fc": ops.fc(2, 32, 10),
    "maxpool_ceil": ops.max_pool2d(1, 4, 8, 8, k=3, stride=2, ceil_mode=True),
    "maxpool_pad": ops.max_pool2d(2, 4, 8, 8, k=3, stride=2, pad=1),
    "avgpool_global": ops.avg_pool2d(1, 8, 5, 5, k=5),
    "softmax": ops.softmax((2, 10)),
    "relu": ops.relu((1, 4, 5, 5)),
}


def conv_param(op, **change) -> str:
    """A Tengine conv_param for ``op``, as a graph builder fills it."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = op.kernel, op.stride, op.padding, op.dilation
    fields = dict(kh=kh, kw=kw, sh=sh, sw=sw, ph0=ph, ph1=ph, pw0=pw, pw1=pw, dh=dh, dw=dw, cin=op.c_in,
                  cout=op.c_out, group=op.groups, act={None: -1, "relu": 0, "relu6": 6}[op.activation], wino=0)
    fields.update(change)
    return "conv " + " ".join(map(str, fields.values()))


def node(op) -> tuple[int, str]:
    """(op type, parameters) of the Tengine node that ``op`` computes."""
    if isinstance(op, ops.Conv1x1):  # a 1x1 conv over an image of its positions
        op = ops.conv2d(op.n, op.c_in, op.positions, 1, op.c_out, k=1, bias=op.bias, activation=op.activation)
    if isinstance(op, ops.Conv2d):
        return OP_CONV, conv_param(op)
    if isinstance(op, ops.FullyConnected):
        return OP_FC, f"fc {op.out_features}"
    if isinstance(op, ops.Pool2d):
        (kh, kw), (sh, sw), (ph, pw), (fh, fw) = op.kernel, op.stride, op.padding, op.far_padding
        is_global = int(op.kernel == (op.h, op.w))
        return OP_POOL, f"pool {int(op.method == 'avg')} {kh} {kw} {sh} {sw} {ph} {fh} {pw} {fw} {is_global} 0"
    if isinstance(op, ops.Softmax):
        return OP_SOFTMAX, f"softmax {len(op.shape) - 1}"
    return OP_RELU, "relu 0"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    exe = tmp_path_factory.mktemp("host") / "host"
    subprocess.run(["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g", "-fsanitize=address", "-rdynamic",
                    "-o", str(exe), str(HOST_SOURCE), "-ldl"], check=True)
    return exe


@pytest.fixture(scope="module")
def kernels(tuned):
    return {name: tuned(op, budget=2) for name, op in CASES.items()}


@pytest.fixture(scope="module")
def plugin(kernels, tmp_path_factory):
    return ek.export_tengine_plugin(list(kernels.values()), tmp_path_factory.mktemp("plugin") / "libek.so",
                                    init="my_init", release="my_release")


def run_host(host, plugin, tmp: Path, op, op_type: int, param: str, shapes=None, threads: int = 2,
             prefix=(), init="my_init", release="my_release", extra=(), rc=0) -> tuple[list, np.ndarray | None, list]:
    """Run one node through the host; returns what it printed (its stdout lines, or
    its stderr when ``rc`` is not 0), the output tensor and the inputs."""
    rng = np.random.default_rng(1)
    if shapes is None:
        inputs = op.random_inputs(rng)
        shapes = [a.shape for a in inputs] + [op.output.shape]
    else:
        inputs = [rng.standard_normal(shape).astype(np.float32) for shape in shapes[:-1]]
    lines = [f"op {op_type}", f"threads {threads}", f"param {param}"]
    for i, (a, shape) in enumerate(zip(inputs, shapes)):
        a.astype(np.float32).tofile(tmp / f"in{i}.bin")
        lines.append(f"input {tmp / f'in{i}.bin'} {len(shape)} {' '.join(map(str, shape))}")
    lines.append(f"output {tmp / 'out.bin'} {len(shapes[-1])} {' '.join(map(str, shapes[-1]))}")
    (tmp / "spec").write_text("\n".join([*lines, *extra]) + "\n")
    done = subprocess.run([*prefix, str(host), str(plugin), init, release, str(tmp / "spec")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == rc, done.stderr
    printed = done.stdout.splitlines() if rc == 0 else done.stderr
    out = np.fromfile(tmp / "out.bin", np.float32) if (tmp / "out.bin").exists() else None
    return printed, out, inputs


@pytest.mark.parametrize("name", CASES)
def test_plugin_computes_each_node_like_numpy(host, plugin, tmp_path, name):
    op = CASES[name]
    printed, out, inputs = run_host(host, plugin, tmp_path, op, *node(op))
    assert printed[0] == "score 8000 plugin"
    rtol, atol = op.tolerance
    np.testing.assert_allclose(out.reshape(op.output.shape), op.reference(*inputs), rtol=rtol, atol=atol)


def test_any_rank_with_the_same_memory_matches(host, plugin, tmp_path):
    """Tengine's fc takes a [batch, c, h, w] input (its output is then [batch, n, 1, 1]),
    and a softmax may run over c of [n, c, 1, 1]: the same memory as the kernels'."""
    fc, softmax = CASES["fc"], CASES["softmax"]
    printed, out, inputs = run_host(host, plugin, tmp_path, fc, *node(fc), shapes=[(2, 8, 2, 2), (10, 32), (10,),
                                                                                     (2, 10, 1, 1)])
    assert printed[0] == "score 8000 plugin"
    np.testing.assert_allclose(out.reshape(2, 10), fc.reference(inputs[0].reshape(2, 32), *inputs[1:]),
                               rtol=1e-4, atol=1e-4)
    printed, out, inputs = run_host(host, plugin, tmp_path, softmax, OP_SOFTMAX, "softmax 1",
                                    shapes=[(2, 10, 1, 1), (2, 10, 1, 1)])
    assert printed[0] == "score 8000 plugin"
    np.testing.assert_allclose(out.reshape(2, 10), softmax.reference(inputs[0].reshape(2, 10)), rtol=1e-5, atol=1e-6)


def test_a_1x1_conv_kernel_serves_every_image_of_its_positions(host, plugin, tmp_path):
    """Its positions flattened, a 1x1 conv computes the same on a 5x7 image as on a
    7x5 or 35x1 one; a 1x1 conv of other channels whose input has as many elements
    (its weights do not) stays Tengine's."""
    for h, w in ((5, 7), (7, 5), (35, 1)):
        conv = ops.conv2d(2, 6, h, w, 8, k=1, bias=True, activation="relu6")
        shapes = [(2, 6, h, w), (8, 6, 1, 1), (8,), (2, 8, h, w)]
        printed, out, inputs = run_host(host, plugin, tmp_path, conv, *node(conv), shapes=shapes)
        assert printed[0] == "score 8000 plugin", (h, w)
        rtol, atol = conv.tolerance
        np.testing.assert_allclose(out.reshape(shapes[-1]), conv.reference(*inputs), rtol=rtol, atol=atol)
    (tmp_path / "out.bin").unlink()
    other = ops.conv2d(2, 3, 10, 7, 8, k=1, bias=True, activation="relu6")
    printed, out, _ = run_host(host, plugin, tmp_path, other, *node(other),
                               shapes=[(2, 3, 10, 7), (8, 3, 1, 1), (8,), (2, 8, 10, 7)])
    assert printed == ["score 4000 builtin"] and out is None


MISMATCHES = {  # name: (case, op type, param, shapes): every one must fall back to the built-in kernel
    "batch": ("conv_g4_relu6", OP_CONV, None, [(2, 8, 6, 6), (8, 2, 3, 3), (8,), (2, 8, 6, 6)]),
    "pad": ("conv_g4_relu6", OP_CONV, dict(ph1=2), None),
    "activation": ("conv_b2_relu", OP_CONV, dict(act=-1), None),
    "relu6 vs relu": ("conv_g4_relu6", OP_CONV, dict(act=0), None),
    "group": ("conv_g4_relu6", OP_CONV, dict(group=2), [(1, 8, 6, 6), (8, 4, 3, 3), (8,), (1, 8, 6, 6)]),
    "dilation": ("conv_g4_relu6", OP_CONV, dict(dh=2), None),
    "no bias": ("conv_b2_relu", OP_CONV, None, [(2, 4, 7, 7), (8, 4, 3, 3), (2, 8, 4, 4)]),
    "fc outputs": ("fc", OP_FC, "fc 11", None),
    "pool method": ("maxpool_pad", OP_POOL, "pool 1 3 3 2 2 1 1 1 1 0 0", None),
    "floor output": ("maxpool_ceil", OP_POOL, "pool 0 3 3 2 2 0 0 0 0 0 0", [(1, 4, 8, 8), (1, 4, 3, 3)]),
    "softmax axis": ("softmax", OP_SOFTMAX, "softmax 0", None),
    "leaky relu": ("relu", OP_RELU, "relu 0.1", None),
    "op type": ("relu", OP_RELU6, "none", None),
}


@pytest.mark.parametrize("name", MISMATCHES)
def test_a_node_that_differs_in_anything_scores_zero(host, plugin, tmp_path, name):
    case, op_type, param, shapes = MISMATCHES[name]
    op = CASES[case]
    if param is None or isinstance(param, dict):
        param = conv_param(op, **(param or {}))
    if name == "no bias":
        op = ops.conv2d(2, 4, 7, 7, 8, k=3, stride=2, pad=1, activation="relu")
    printed, out, _ = run_host(host, plugin, tmp_path, op, op_type, param, shapes)
    assert printed == ["score 4000 builtin"]
    assert out is None


@pytest.mark.parametrize("threads", [1, 3])
def test_halide_thread_pool_follows_the_graph_thread_count(host, kernels, plugin, tmp_path, threads):
    """The host counts its threads after the runs: the plugin's Halide pool has
    threads - 1 workers beside the calling thread (Halide's default here: one per
    core), once a kernel with a parallel loop has run."""
    name = next((n for n, k in kernels.items() if ".parallel(" in k.schedule), None)
    assert name is not None, "no tuned kernel has a parallel loop (the first genomes searched all have one)"
    op = CASES[name]
    printed, _, _ = run_host(host, plugin, tmp_path, op, *node(op), threads=threads)
    assert printed == ["score 8000 plugin", f"threads {threads}"]


def test_unloading_while_a_graph_is_bound_is_refused_and_keeps_the_code(host, plugin, tmp_path):
    """As Tengine's unload (release, then dlclose) between prerun and postrun: the
    release refuses, nothing is unregistered, and the runs after the dlclose still
    find the plugin's code (the host would fault otherwise); the final release works."""
    op = CASES["conv_b2_relu"]
    printed, out, inputs = run_host(host, plugin, tmp_path, op, *node(op), extra=["unload_bound"])
    assert printed[:2] == ["score 8000 plugin", "release refused"]
    np.testing.assert_allclose(out.reshape(op.output.shape), op.reference(*inputs), rtol=1e-4, atol=1e-4)


def _header_tree(root: Path) -> list[Path]:
    """A stand-in for Tengine's include directories: its structures (as the plugin
    declares them) in source/device/cpu/cpu_node.h, the other headers the plugin
    includes present, and source/graph/node.h including the defines.h that CMake
    writes into the build tree, as Tengine's does."""
    source, build = root / "source", root / "build" / "source"
    plugin = (Path(ek.__file__).parent / "export" / "_tengine_plugin.c").read_text()
    declared = plugin.split("#else", 1)[1].split("#endif", 1)[0]
    headers = ["device/cpu/cpu_graph.h", "device/cpu/cpu_module.h", "graph/graph.h", "graph/tensor.h",
               *(f"operator/prototype/{n}_param.h" for n in ("convolution", "fc", "pooling", "relu", "softmax"))]
    for name, text in [("device/cpu/cpu_node.h", declared), ("graph/node.h", '#include "defines.h"\n'),
                       *((h, "") for h in headers)]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(f"#pragma once\n#include <stddef.h>\n#include <stdint.h>\n{text}")
    build.mkdir(parents=True)
    (build / "defines.h").write_text("#pragma once\n#define TENGINE_STAND_IN 1\n")
    return [source, build]


def test_builds_against_tengine_headers_from_source_and_build_trees(host, kernels, tmp_path):
    source, build = _header_tree(tmp_path / "tengine")
    with pytest.raises(ek.ExportError, match="defines.h"):
        ek.export_tengine_plugin([kernels["relu"]], tmp_path / "p.so", tengine_headers=source)
    plugin = ek.export_tengine_plugin([kernels["relu"]], tmp_path / "p.so", init="my_init", release="my_release",
                                      tengine_headers=[source, build])
    op = CASES["relu"]
    printed, out, inputs = run_host(host, plugin, tmp_path, op, *node(op))
    assert printed[0] == "score 8000 plugin"
    np.testing.assert_allclose(out.reshape(op.output.shape), op.reference(*inputs))


def test_kernels_slower_than_tengine_are_left_to_it_and_reported(host, kernels, tmp_path):
    """With Tengine's per-node times, min_speedup leaves out the kernels that do not
    beat it by that much: their nodes go to the built-in kernel."""
    fast, slow = kernels["relu"], kernels["conv_b2_relu"]
    times = {fast: fast.stats.time * 3, slow.signature.key: slow.stats.time * 0.5}
    plugin = ek.export_tengine_plugin([fast, slow], tmp_path / "p.so", init="my_init", release="my_release",
                                      engine_times=times, min_speedup=1.2)
    report = plugin.with_suffix(".report.txt").read_text()
    assert report.startswith("1 of 2 kernels in the plugin") and "3.00x" in report and "0.50x" in report
    conv, relu = CASES["conv_b2_relu"], CASES["relu"]
    assert run_host(host, plugin, tmp_path, conv, *node(conv))[0] == ["score 4000 builtin"]
    assert run_host(host, plugin, tmp_path, relu, *node(relu))[0][0] == "score 8000 plugin"
    with pytest.raises(ek.ExportError, match="positive time"):
        ek.export_tengine_plugin([fast], tmp_path / "q.so", engine_times={fast: -1.0})
    with pytest.raises(ek.ExportError, match="no kernel is at least 9"):
        ek.export_tengine_plugin([fast, slow], tmp_path / "q.so", engine_times=times, min_speedup=9)


def test_a_node_reshaped_after_prerun_is_refused_not_miscomputed(host, plugin, tmp_path):
    op = CASES["conv_b2_relu"]
    message, out, _ = run_host(host, plugin, tmp_path, op, *node(op), extra=["reshape"], rc=1)
    assert "a node callback failed" in message
    assert np.isnan(out).all()  # run() wrote nothing


#: The plugin for ARM boards: the operators of Tengine's usual CPU graphs, with an ARM feature set.
ARM_PLUGIN = ("conv_b2_relu", "depthwise_b2", "fc", "maxpool_ceil", "softmax")
ARM_TARGET = f"{ARM}-arm_dot_prod"


@pytest.fixture(scope="module")
def arm_host(tmp_path_factory):
    exe = tmp_path_factory.mktemp("arm_host") / "host"
    subprocess.run([CROSS_CC, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g", "-rdynamic", "-o", str(exe),
                    str(HOST_SOURCE), "-ldl"], check=True)
    return exe


@pytest.fixture(scope="module")
def arm_plugin(kernels, tmp_path_factory):
    return ek.export_tengine_plugin([kernels[name] for name in ARM_PLUGIN],
                                   tmp_path_factory.mktemp("arm_plugin") / "libek.so", init="my_init",
                                   release="my_release", target=ARM_TARGET)


@needs_arm
@pytest.mark.parametrize("name", ARM_PLUGIN)
def test_aarch64_plugin_computes_each_node_like_numpy_under_qemu(arm_host, arm_plugin, tmp_path, name):
    assert arm_plugin.read_bytes()[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    op = CASES[name]
    printed, out, inputs = run_host(arm_host, arm_plugin, tmp_path, op, *node(op), prefix=qemu())
    assert printed[0] == "score 8000 plugin"
    rtol, atol = op.tolerance
    np.testing.assert_allclose(out.reshape(op.output.shape), op.reference(*inputs), rtol=rtol, atol=atol)


@needs_arm
def test_aarch64_plugin_leaves_a_node_it_was_not_tuned_for_to_tengine(arm_host, arm_plugin, tmp_path):
    op = CASES["conv_b2_relu"]
    printed, out, _ = run_host(arm_host, arm_plugin, tmp_path, op, OP_CONV, conv_param(op, act=-1), prefix=qemu())
    assert printed == ["score 4000 builtin"] and out is None


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_no_memory_errors_under_valgrind(tmp_path):
    """ASan sees the host's accesses; valgrind also sees the plugin's own. Valgrind
    decodes no AVX-512, so this kernel is tuned for AVX2."""
    exe = tmp_path / "host_plain"
    subprocess.run(["cc", "-std=gnu11", "-g", "-rdynamic", "-o", str(exe), str(HOST_SOURCE), "-ldl"], check=True)
    op = CASES["conv_g4_relu6"]
    kernel = ek.tune(op, target="x86-64-linux-avx-avx2-f16c-fma-sse41", budget=2, seed=0, evaluator="local")
    plugin = ek.export_tengine_plugin([kernel], tmp_path / "libek.so", init="my_init", release="my_release")
    valgrind = ["valgrind", "--error-exitcode=99", "--quiet"]
    printed, out, inputs = run_host(exe, plugin, tmp_path, op, *node(op), prefix=valgrind)
    assert printed[0] == "score 8000 plugin"
    np.testing.assert_allclose(out.reshape(op.output.shape), op.reference(*inputs), rtol=1e-4, atol=1e-4)


def test_plugin_exports_only_init_release_and_kernels(kernels, plugin):
    listing = subprocess.run(["nm", "-D", "--defined-only", str(plugin)], capture_output=True, text=True,
                             check=True).stdout
    names = {line.split()[-1] for line in listing.splitlines()}
    assert {"my_init", "my_release"} <= names
    assert all(n in ("my_init", "my_release") or n.startswith("evokernel_") for n in names)
    assert len(names) == 2 + len(kernels)


@pytest.mark.parametrize("kwargs, message", [
    (dict(init="init-fn"), "C identifier"),
    (dict(release="9lives"), "C identifier"),
    (dict(init="same", release="same"), "different"),
    (dict(tengine_headers="/nonexistent"), "source/ directory"),
    (dict(tengine_headers=3), "directory or a list"),
    (dict(engine_times=[1.0]), "engine_times must map"),
    (dict(engine_times={"relu": 1.0}), "not exported: relu"),
    (dict(min_speedup=1.2), "without them"),
])
def test_bad_arguments_name_the_problem(kernels, tmp_path, kwargs, message):
    with pytest.raises(ek.ExportError, match=message):
        ek.export_tengine_plugin([kernels["relu"]], tmp_path / "p.so", **kwargs)


@pytest.mark.parametrize("op, message", [
    (ops.avg_pool2d(1, 2, 6, 6, k=3, pad=1), "average pooling over padding"),
    (ops.matmul(4, 4, 4), "no Tengine operator"),
    (ops.relu(8, dtype="float64"), "float32 kernels only"),
    (ops.conv2d(1, 4, 6, 6, 4, k=3, pad=1, residual=True), "no residual input"),
    (ops.conv1x1(1, 4, 4, 36, residual=True), "no residual input"),
])
def test_operators_tengine_cannot_express_are_refused(op, message):
    """Checked on the operator before anything is built (tuning them would add nothing)."""
    with pytest.raises(ek.ExportError, match=message):
        describe(op)
