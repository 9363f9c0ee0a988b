"""Export tuned kernels as one Tengine plugin (a shared library Tengine lite 1.4+
loads with ``load_tengine_plugin(name, path, init)``).

Tengine operators map onto evokernel's: convolution (grouped, depthwise, with bias
and fused ReLU/ReLU6) -> ``conv2d``; fully connected -> ``fc``; max/avg pooling ->
``max_pool2d``/``avg_pool2d``; softmax -> ``softmax``; ReLU, ReLU6 -> ``relu``,
``relu6``. A kernel's node_ops scores only the nodes it matches exactly (the C side
is ``_tengine_plugin.c``); what Tengine can express but an operator cannot compute
(average pooling over padding, whose divisor differs between model flavours;
float64) is refused here, never approximated.
"""

from __future__ import annotations

import math
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

from .. import operators as ops
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
    if isinstance(op, ops.Conv2d):
        params = [*op.kernel, *op.stride, *op.padding, *op.dilation, op.groups, _ACTIVATIONS[op.activation], op.c_out]
        return OP_CONV, "conv", params, [_shape(s) for s in specs]
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
                      "depthwise_conv2d, fc, max/avg pooling, softmax, relu and relu6")


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
                          release: str = "evokernel_plugin_release", tengine_headers=None, target=None) -> Path:
    """Write one shared library that Tengine loads with
    ``load_tengine_plugin(name, path, init)`` and unloads with
    ``unload_tengine_plugin(name, release)``.

    ``init`` registers one node_ops per kernel (``register_builtin_node_ops``,
    resolved in the host process); each scores 8000 (above Tengine's own kernels)
    for nodes whose parameters, tensor shapes and dtype match its kernel exactly,
    0 otherwise, and runs on Tengine's thread count. ``release`` unregisters them.
    Only a C compiler is needed: the plugin declares the Tengine structures it reads,
    unless ``tengine_headers`` names Tengine's ``source/`` directory to use its headers.
    The plugin exports ``init``, ``release`` and the kernels' C functions only (its
    Halide runtime stays private). ``target`` (a CPU target, e.g. ``"arm-64-linux"``
    for Tengine on an ARM board) compiles every kernel's schedule for it, linked with
    that platform's cross toolchain where it is not this machine's.

    >>> import tempfile, pathlib, evokernel as ek
    >>> kernel = ek.tune(ek.operators.relu((1, 8, 4, 4)), budget=2, seed=0, evaluator="local")
    >>> plugin = ek.export_tengine_plugin([kernel], pathlib.Path(tempfile.mkdtemp()) / "libek.so")
    >>> plugin.name
    'libek.so'
    """
    check_identifier(init, "init")
    check_identifier(release, "release")
    if init == release:
        raise ExportError(f"init and release must be different functions, both are {init!r}")
    items = entries(kernels, "evokernel", target)
    if {init, release} & {e.name for e in items}:
        raise ExportError(f"init/release names {init!r}, {release!r} clash with a kernel function")
    includes = []
    if tengine_headers is not None:
        headers = Path(tengine_headers).expanduser()
        if not (headers / _HEADER_CHECK).is_file():
            raise ExportError(f"tengine_headers={str(tengine_headers)!r} is not Tengine's source/ directory "
                              f"(no {_HEADER_CHECK} in it)")
        includes = [headers]
    try:
        path = Path(path).expanduser()
    except TypeError as error:
        raise ExportError(f"path must be a file path, got {path!r}") from error
    directory = output_dir(path.parent)
    head, tail = _plugin_source().split(_TABLE_MARK)
    defines = [f"#define EK_INIT {init}", f"#define EK_RELEASE {release}"]
    if includes:
        defines.append("#define EK_TENGINE_HEADERS 1")
    source = "\n".join([*defines, wrappers(items, "evokernel"), head, _table(items), tail])
    with tempfile.TemporaryDirectory(dir=directory, prefix=".evokernel-export") as tmp:
        tmp = Path(tmp)
        obj = combined_object(items, source, [init, release, *(e.name for e in items)], tmp, includes)
        link_shared(obj, tmp / "plugin.so", items[0].target)
        (tmp / "plugin.so").replace(path)
    return path
