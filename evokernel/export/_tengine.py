"""Export tuned kernels as one Tengine plugin (a shared library Tengine lite 1.4+
loads with ``load_tengine_plugin(name, path, init)``).

Tengine operators map onto evokernel's: convolution (grouped, depthwise, with bias
and fused ReLU/ReLU6) -> ``conv2d``, or ``conv1x1`` (1x1, stride 1, no padding, one
group); fully connected -> ``fc``; max/avg pooling ->
``max_pool2d``/``avg_pool2d``; softmax -> ``softmax``; ReLU, ReLU6 -> ``relu``,
``relu6``. A kernel's node_ops scores only the nodes it matches exactly (the C side
is ``_tengine_plugin.c``); what Tengine can express but an operator cannot compute
(average pooling over padding, whose divisor differs between model flavours;
float64) is refused here, never approximated.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

from .. import operators as ops
from .._format import format_seconds, table
from ..store import Kernel
from ._c import (ExportedKernel, ExportError, check_identifier, combined_object, entries, link_shared, output_dir,
                        wrappers)

OP_CONV, OP_FC, OP_POOL, OP_RELU, OP_RELU6, OP_SOFTMAX = 15, 26, 49, 56, 57, 72
_FAMILIES = {"conv": 0, "fc": 1, "pool": 2, "softmax": 3, "relu": 4, "relu6": 5}  # EK_CONV... in the C file
_ACTIVATIONS = {None: -1, "relu": 0, "relu6": 6}  # conv_param.activation
_TABLE_MARK = "/* EK_KERNEL_TABLE */"
_HEADER_CHECK = Path("device", "cpu", "cpu_node.h")


def _operator(entry: ExportedKernel) -> ops.Operator:
    kernel = entry.kernel
    if kernel.operator is None:  # loading already rebuilt every built-in operator
        raise ExportError(f"{kernel.signature.key}: a custom operator; the Tengine plugin exports built-in "
                          "operators only")
    return kernel.operator


def _shape(dims, any_rank: bool = False, lead: int = -1) -> tuple[int, tuple[int, ...]]:
    """An ``ek_shape``: exact dims, or (any rank) the element count and leading dim."""
    if any_rank:
        return 0, (math.prod(dims), lead)
    return len(dims), tuple(dims)


def describe(op: ops.Operator) -> tuple[int, str, list[int], list[tuple]]:
    """(Tengine op type, family, parameters, expected tensor shapes) of ``op``, or
    ``ExportError`` if Tengine has no operator that it computes exactly."""
    if op.dtype != "float32":
        raise ExportError(f"{op.key}: the Tengine plugin runs float32 kernels only")
    specs = [s.shape for s in (*op.inputs, op.output)]
    if getattr(op, "residual", False):
        raise ExportError(f"{op.key}: Tengine's convolution has no residual input; tune the model's residual "
                          "Add apart from its convolution to export it")
    if isinstance(op, ops.Conv2d):
        params = [*op.kernel, *op.stride, *op.padding, *op.dilation, op.groups, _ACTIVATIONS[op.activation], op.c_out]
        return OP_CONV, "conv", params, [_shape(s) for s in specs]
    if isinstance(op, ops.Conv1x1):  # any image of its positions: the weights' count fixes c_in
        params = [1, 1, 1, 1, 0, 0, 1, 1, 1, _ACTIVATIONS[op.activation], op.c_out]
        return OP_CONV, "conv", params, [_shape(s, True, s[0]) for s in specs]
    if isinstance(op, ops.FullyConnected):  # Tengine's fc reads any [batch, ...] input as [batch, k]
        shapes = [_shape(specs[0], True, op.batch), _shape(specs[1]), *map(_shape, specs[2:-1]),
                  _shape(specs[-1], True, op.batch)]
        return OP_FC, "fc", [op.out_features], shapes
    if isinstance(op, ops.Pool2d):
        if op.method == "avg" and op.padding != (0, 0):
            raise ExportError(f"{op.key}: average pooling over padding is not exported (Tengine's divisor at the "
                              "border depends on the model's flavour); tune it with pad=0")
        covers = op.kernel == (op.h, op.w) and op.padding == (0, 0)
        params = [op.method == "avg", *op.kernel, *op.stride, *op.padding, covers]
        return OP_POOL, "pool", [int(p) for p in params], [_shape(s) for s in specs]
    if isinstance(op, ops.Softmax):  # over the last axis: rows x length, any rank with that memory
        return OP_SOFTMAX, "softmax", [math.prod(op.shape[:-1]), op.shape[-1]], [_shape(s, True) for s in specs]
    if isinstance(op, (ops.Relu, ops.Relu6)):
        family = "relu" if isinstance(op, ops.Relu) else "relu6"
        return OP_RELU if family == "relu" else OP_RELU6, family, [], [_shape(s, True) for s in specs]
    raise ExportError(f"{op.key}: no Tengine operator computes {op.family}; the plugin exports conv2d, "
                      "depthwise_conv2d, conv1x1, fc, max/avg pooling, softmax, relu and relu6")


def _table(items: list[ExportedKernel]) -> str:
    adapters, rows = [], []
    for i, entry in enumerate(items):
        op_type, family, params, shapes = describe(_operator(entry))
        args = ", ".join(f"t[{j}]" for j in range(len(entry.args)))
        adapters.append(f"static int ek_call{i}(float *const *t) {{ return {entry.name}({args}); }}")
        shape_text = ", ".join(f"{{{rank}, {{{', '.join(map(str, dims))}}}}}" for rank, dims in shapes)
        rows.append(f"    {{EK_OPS, {op_type}, {_FAMILIES[family]}, {len(shapes) - 1}, "
                    f"{{{', '.join(str(int(p)) for p in params) or '0'}}}, {{{shape_text}}}, ek_call{i}}},")
    return "\n".join([*adapters, "", "static struct ek_kernel ek_kernels[] = {", *rows, "};"])


@cache
def _plugin_source() -> str:
    return resources.files(__package__).joinpath("_tengine_plugin.c").read_text()


def export_tengine_plugin(kernels, path, init: str = "evokernel_plugin_init",
                          release: str = "evokernel_plugin_release", tengine_headers=None, target=None,
                          engine_times=None, min_speedup: float | None = None) -> Path:
    """Write one shared library that Tengine loads with
    ``load_tengine_plugin(name, path, init)`` and unloads with
    ``unload_tengine_plugin(name, release)``, and beside it ``<name>.report.txt``:
    every kernel with its tuned time, Tengine's time where known, and whether it
    is in the plugin.

    ``init`` registers one node_ops per kernel (``register_builtin_node_ops``,
    resolved in the host process); each scores 8000 (above Tengine's own kernels)
    for nodes whose parameters, tensor shapes and dtype match its kernel exactly,
    0 otherwise, and runs on Tengine's thread count. ``release`` unregisters them;
    while a graph still holds one of them (prerun, not yet destroyed) it refuses,
    returns -1 and keeps the plugin's code mapped: postrun and destroy graphs
    before the unload.

    ``engine_times`` maps kernels (or their operator keys) to Tengine's own time
    for the same node in seconds, as measured on the engine (its per-node
    profile); with ``min_speedup``, a kernel less than that many times faster
    than Tengine's is left out, so Tengine keeps the node.

    Only a C compiler is needed: the plugin declares the Tengine structures it
    reads, unless ``tengine_headers`` names Tengine's include directories to use
    its headers: the ``source/`` directory, and the configured build directory
    that holds the ``defines.h`` CMake generates (a path or a list of paths).
    The plugin exports ``init``, ``release`` and the kernels' C functions only (its
    Halide runtime stays private). ``target`` (a CPU target, e.g. ``"arm-64-linux"``
    for Tengine on an ARM board) compiles every kernel's schedule for it, linked with
    that platform's cross toolchain where it is not this machine's.

    >>> import tempfile, pathlib, evokernel as ek
    >>> kernel = ek.tune(ek.operators.relu((1, 8, 4, 4)), budget=2, seed=0, evaluator="local")
    >>> plugin = ek.export_tengine_plugin([kernel], pathlib.Path(tempfile.mkdtemp()) / "libek.so")
    >>> plugin.name, plugin.with_suffix(".report.txt").exists()
    ('libek.so', True)
    """
    check_identifier(init, "init")
    check_identifier(release, "release")
    if init == release:
        raise ExportError(f"init and release must be different functions, both are {init!r}")
    items = entries(kernels, "evokernel", target)
    if {init, release} & {e.name for e in items}:
        raise ExportError(f"init/release names {init!r}, {release!r} clash with a kernel function")
    includes = _include_dirs(tengine_headers)
    try:
        path = Path(path).expanduser()
    except TypeError as error:
        raise ExportError(f"path must be a file path, got {path!r}") from error
    times = _engine_times(engine_times, items)
    if min_speedup is not None and (engine_times is None or not isinstance(min_speedup, (int, float))
                                    or not min_speedup > 0):
        raise ExportError(f"min_speedup must be a positive number, given with engine_times to compare with; got "
                          f"min_speedup={min_speedup!r}" + ("" if engine_times is not None else " without them"))
    kept = [e for e in items if _kept(e, times, min_speedup)]
    report = _report(items, kept, times, min_speedup)
    if not kept:
        raise ExportError(f"no kernel is at least {min_speedup}x faster than Tengine's:\n{report}")
    directory = output_dir(path.parent)
    head, tail = _plugin_source().split(_TABLE_MARK)
    defines = ["#define _GNU_SOURCE 1", f"#define EK_INIT {init}", f"#define EK_RELEASE {release}"]
    if includes:
        defines.append("#define EK_TENGINE_HEADERS 1")
    source = "\n".join([*defines, wrappers(kept, "evokernel"), head, _table(kept), tail])
    with tempfile.TemporaryDirectory(dir=directory, prefix=".evokernel-export") as tmp:
        tmp = Path(tmp)
        obj = combined_object(kept, source, [init, release, *(e.name for e in kept)], tmp, includes)
        link_shared(obj, tmp / "plugin.so", kept[0].target)
        (tmp / "report.txt").write_text(report)
        (tmp / "plugin.so").replace(path)
        (tmp / "report.txt").replace(path.with_suffix(".report.txt"))
    return path


def _include_dirs(tengine_headers) -> list[Path]:
    """Tengine's include directories, checked to hold what the plugin includes."""
    if tengine_headers is None:
        return []
    single = isinstance(tengine_headers, (str, Path))
    try:
        dirs = [Path(d).expanduser() for d in ([tengine_headers] if single else tengine_headers)]
    except TypeError as error:
        raise ExportError(f"tengine_headers must be a directory or a list of them, got {tengine_headers!r}") from error
    for header, what in ((_HEADER_CHECK, "Tengine's source/ directory"),
                         (Path("defines.h"), "the configured build directory that holds the defines.h CMake "
                                             "generates (graph/node.h includes it)")):
        if not any((d / header).is_file() for d in dirs):
            raise ExportError(f"tengine_headers={[str(d) for d in dirs]} has no {header}: pass {what} too")
    return dirs


def _engine_times(engine_times, items: list[ExportedKernel]) -> dict[str, float]:
    """Tengine's time (seconds) per exported kernel name, from a mapping keyed by
    kernel or operator key."""
    if engine_times is None:
        return {}
    if not isinstance(engine_times, Mapping):
        raise ExportError(f"engine_times must map kernels or operator keys to seconds, got "
                          f"{type(engine_times).__name__}")
    by_key = {k.signature.key if isinstance(k, Kernel) else str(k): v for k, v in engine_times.items()}
    unknown = set(by_key) - {e.kernel.signature.key for e in items}
    if unknown:
        raise ExportError(f"engine_times names operators that are not exported: {', '.join(sorted(unknown))}")
    times = {}
    for e in items:
        value = by_key.get(e.kernel.signature.key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ExportError(f"engine_times[{e.kernel.signature.key!r}] must be a positive time in seconds, "
                              f"got {value!r}")
        times[e.name] = float(value)
    return times


def _kept(entry: ExportedKernel, times: dict[str, float], min_speedup: float | None) -> bool:
    if min_speedup is None or entry.name not in times:
        return True
    return times[entry.name] / entry.kernel.stats.time >= min_speedup


def _report(items, kept, times: dict[str, float], min_speedup) -> str:
    rows, names = [], {e.name for e in kept}
    for e in items:
        engine = times.get(e.name)
        speedup = f"{engine / e.kernel.stats.time:.2f}x" if engine else ""
        rows.append([e.name, format_seconds(e.kernel.stats.time), format_seconds(engine) if engine else "",
                     speedup, "plugin" if e.name in names else "Tengine"])
    rule = f" (kernels under {min_speedup}x left to Tengine)" if min_speedup is not None else ""
    return (f"{len(kept)} of {len(items)} kernels in the plugin{rule}\n\n"
            + table(["kernel", "tuned", "Tengine", "speedup", "runs in"], rows) + "\n")
