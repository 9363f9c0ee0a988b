"""Export a tuned ONNX model to ONNX Runtime: a custom-op shared library with the
tuned kernels, and a copy of the model whose tuned nodes call them.

The library's ``RegisterCustomOps`` (what
``SessionOptions.register_custom_ops_library`` calls) adds one custom-op domain with
one op per kernel and wired shapes (``_onnxruntime_ops.c``). ONNX Runtime refuses
two custom-op domains of the same name in one session ("Domain already set in
registry", measured with onnxruntime 1.32: from two libraries, or one library
registered twice into the same ``SessionOptions``), so every library's domain is
``evokernel.<digest>``, the digest of what the library computes: two different
libraries load side by side into one session, and one library into any number of
sessions.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from .._format import format_seconds, table
from ._c import (ExportError, ExportedKernel, check_identifier, combined_object, entries, link_shared, output_dir,
                 sanitize, wrappers)
from ._onnxruntime_timing import Profile, profiles

DOMAIN = "evokernel"
_TABLE_MARK = "/* EK_OP_TABLE */"
_MAX_TENSORS = 8  # EK_MAX_TENSORS in the C file: inputs and the output of one op
_MAX_RANK = 16  # EK_MAX_RANK


@dataclass(frozen=True)
class _Op:
    """One custom op: a kernel and the ONNX shapes of the values it is wired to."""

    name: str
    entry: ExportedKernel
    shapes: tuple[tuple[int, ...], ...]  # the inputs', then the output's


@dataclass(frozen=True)
class _Rewrite:
    """A tuned step of the network as one custom node: its nodes' indexes in the
    graph, its op, its inputs (value names, or arrays to store) and its output."""

    indexes: tuple[int, ...]
    name: str
    op: _Op
    args: tuple
    output: str


# -- reading the model ---------------------------------------------------------------
def _onnx():
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - onnx comes with tune_model
        raise ExportError("export_onnxruntime needs the onnx package: pip install 'evokernel[onnx]'") from error
    return onnx


def _network(model):
    """The network of ``model`` (an ``ek.TunedModel``), or ``ExportError``."""
    network = getattr(model, "network", None)
    if network is None or not hasattr(network, "value_shapes") or not getattr(network, "model_bytes", b""):
        raise ExportError(f"export_onnxruntime rewrites a tuned ONNX model: pass an ek.TunedModel (from "
                          f"ek.tune_model or ek.load_model), got {type(model).__name__}")
    return network


def _node_names(nodes) -> list[str]:
    """Node names as the importer gives them (``<op_type>_<index>`` when unnamed)."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]


def _chain(nodes, names: list[str], step) -> tuple[int, ...]:
    """The indexes of the graph nodes that ``step`` computes: its first node by
    name, then each fused node, the reader of the one before."""
    try:
        indexes = [names.index(step.nodes[0])]
    except ValueError:
        raise ExportError(f"step {step.name} names a node the model has not: was the model changed?") from None
    for fused in step.nodes[1:]:
        value = nodes[indexes[-1]].output[0]
        found = [j for j, n in enumerate(nodes) if value in n.input and (n.name or n.op_type) == fused]
        if len(found) != 1:
            raise ExportError(f"step {step.name}: cannot find its node {fused!r} reading {value!r}")
        indexes.append(found[0])
    if nodes[indexes[-1]].output[0] != step.outputs[0]:
        raise ExportError(f"step {step.name} ends in {step.outputs[0]!r}, its nodes in "
                          f"{nodes[indexes[-1]].output[0]!r}")
    return tuple(indexes)


# -- planning the ops -----------------------------------------------------------------
def _kernels_of(model, network) -> dict:
    """Operator key -> Kernel of every tuned step, checked to run in the library."""
    tuned = {k.signature.key: k for k in getattr(model, "kernels", [])}
    used = {s.operator.key for s in network.steps if s.operator is not None and s.operator.key in tuned}
    if not used:
        raise ExportError(f"{network.name}: no step of the model has a tuned kernel (nothing to export)")
    for key in sorted(used):
        kernel = tuned[key]
        if kernel.target.is_gpu:
            raise ExportError(f"{key} is tuned for {kernel.target.string}: the ONNX Runtime library runs CPU "
                              "kernels only")
        if kernel.signature.output.dtype != "float32":
            raise ExportError(f"{key} computes {kernel.signature.output.dtype}: the ONNX Runtime library runs "
                              "float32 kernels only")
    return {key: tuned[key] for key in sorted(used)}


def _wired_shapes(step, shapes: dict) -> tuple[tuple[int, ...], ...]:
    """The ONNX shapes of the values ``step``'s op reads and writes (a kernel's
    constant argument: its own shape); each holds its kernel tensor's elements."""
    op = step.operator
    out = []
    for arg, spec in zip((*step.args, step.outputs[0]), (*op.inputs, op.output)):
        shape = tuple(arg.shape) if isinstance(arg, np.ndarray) else shapes.get(arg, tuple(spec.shape))
        if math.prod(shape) != math.prod(spec.shape):
            raise ExportError(f"step {step.name}: value {arg if isinstance(arg, str) else 'constant'!r} of shape "
                              f"{shape} does not hold the {math.prod(spec.shape)} elements of {spec.name} "
                              f"{tuple(spec.shape)}")
        if len(shape) > _MAX_RANK:
            raise ExportError(f"step {step.name}: a value of rank {len(shape)} (at most {_MAX_RANK} are exported)")
        out.append(shape)
    if len(out) > _MAX_TENSORS:
        raise ExportError(f"step {step.name}: {len(out) - 1} inputs (at most {_MAX_TENSORS - 1} are exported)")
    return tuple(out)


def _plan(network, proto, kernels: dict, items: dict) -> list[_Rewrite]:
    """One rewrite per step that has a kernel, calling one op per kernel and wired shapes."""
    nodes = list(proto.graph.node)
    names = _node_names(nodes)
    shapes = network.value_shapes
    ops: dict[tuple, _Op] = {}
    counts: Counter = Counter()
    rewrites = []
    for step in network.steps:
        if step.operator is None or step.operator.key not in kernels:
            continue
        wired = _wired_shapes(step, shapes)
        key = (step.operator.key, wired)
        if key not in ops:
            family = sanitize(step.operator.family) or "kernel"
            ops[key] = _Op(f"{family}_{counts[family]}", items[step.operator.key], wired)
            counts[family] += 1
        rewrites.append(_Rewrite(_chain(nodes, names, step), step.name, ops[key], step.args, step.outputs[0]))
    return rewrites


def _ops_of(rewrites: list[_Rewrite]) -> list[_Op]:
    """The ops ``rewrites`` call, each once, in their order."""
    return list({r.op.name: r.op for r in rewrites}.values())


# -- the library -------------------------------------------------------------------------
def _c_string(text: str) -> str:
    """``text`` as a C string literal (printable ASCII; anything else becomes '?')."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"').replace("?", "\\?") + '"'


def _table(ops: list[_Op]) -> str:
    lines, rows = [], []
    for i, op in enumerate(ops):
        args = ", ".join(f"t[{j}]" for j in range(len(op.shapes)))
        lines.append(f"static int ek_call{i}(float *const *t) {{ return {op.entry.name}({args}); }}")
        for j, shape in enumerate(op.shapes):
            lines.append(f"static const int64_t ek_dims{i}_{j}[] = {{{', '.join(map(str, shape)) or '1'}}};")
        shapes = ", ".join(f"{{{len(s)}, ek_dims{i}_{j}}}" for j, s in enumerate(op.shapes))
        lines.append(f"static const struct ek_shape ek_shapes{i}[] = {{{shapes}}};")
        rows.append(f"    {{EK_CUSTOM_OP, {_c_string(op.name)}, {_c_string(op.entry.kernel.signature.key)}, "
                    f"{len(op.shapes) - 1}, ek_shapes{i}, ek_call{i}}},")
    return "\n".join([*lines, "", "static struct ek_op ek_ops[] = {", *rows, "};"])


def _domain(name: str, ops: list[_Op]) -> str:
    """``evokernel.<digest>``: the digest of the library's name, ops and kernels."""
    digest = hashlib.sha256(name.encode())
    for op in ops:
        digest.update(repr((op.name, op.entry.kernel.signature.key, op.shapes)).encode())
        digest.update(hashlib.sha256(op.entry.object_bytes).digest())
    return f"{DOMAIN}.{digest.hexdigest()[:16]}"


@cache
def _ops_source() -> str:
    return resources.files(__package__).joinpath("_onnxruntime_ops.c").read_text()


def _library(ops: list[_Op], name: str, tmp: Path) -> tuple[Path, str]:
    """The library of ``ops`` (with the kernels they call) and its domain, built
    under ``tmp`` unless the same library was built there already."""
    domain = _domain(name, ops)
    work = tmp / domain
    path = work / f"lib{name}.so"
    if not path.exists():
        work.mkdir()
        items = list({op.entry.name: op.entry for op in ops}.values())
        head, tail = _ops_source().split(_TABLE_MARK)
        source = "\n".join([f"#define EK_DOMAIN {_c_string(domain)}", wrappers(items, name), head, _table(ops),
                            tail])
        obj = combined_object(items, source, ["RegisterCustomOps", f"{name}_set_num_threads"], work)
        link_shared(obj, path, items[0].target)
    return path, domain


# -- the rewritten model -------------------------------------------------------------------
def _fresh(taken: set[str], base: str) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _rewritten(onnx, proto, rewrites: list[_Rewrite], domain: str):
    """A copy of ``proto`` whose tuned nodes are custom nodes of ``domain``."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {t.name for t in graph.initializer} \
        | {v.name for v in graph.input}
    replaced = {i for r in rewrites for i in r.indexes}
    node_names = {n.name for i, n in enumerate(graph.node) if i not in replaced}
    inserted = {max(r.indexes): _custom_node(graph, r, domain, taken, node_names) for r in rewrites}
    # each custom node after every input is made, before the output is read
    nodes = [inserted.get(i, n) for i, n in enumerate(graph.node) if i not in replaced or i in inserted]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    _finish(model, domain)
    return model


def _custom_node(graph, rewrite: _Rewrite, domain: str, taken: set[str], node_names: set[str]):
    """The custom node of ``rewrite``, its constant arguments added to ``graph``
    as initializers under names not in ``taken``."""
    from onnx import helper, numpy_helper

    inputs = []
    for i, arg in enumerate(rewrite.args):
        if isinstance(arg, str):
            inputs.append(arg)
            continue
        inputs.append(_fresh(taken, f"{sanitize(rewrite.name) or 'step'}_evokernel_arg{i}"))
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arg, np.float32), inputs[-1]))
    return helper.make_node(rewrite.op.name, inputs, [rewrite.output], name=_fresh(node_names, rewrite.name),
                            domain=domain, doc_string=f"evokernel: {rewrite.op.entry.kernel.signature.key}")


def _finish(model, domain: str | None) -> None:
    """Import ``domain``; where the IR version wants it, declare initializers as inputs."""
    from onnx import helper

    if domain is not None:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    graph = model.graph
    if model.ir_version < 4:  # initializers were graph inputs too then
        known = {v.name for v in graph.input}
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                           for t in graph.initializer if t.name not in known)


def _drop_unused(graph) -> None:
    """Remove the initializers (and their graph inputs) and value infos of values
    that no node reads or writes any more: the replaced nodes' weights and links."""
    read = {v for n in graph.node for v in n.input} | {o.name for o in graph.output}
    made = {v for n in graph.node for v in n.output}
    unused = {t.name for t in graph.initializer if t.name not in read}
    kept = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [v for v in graph.input if v.name not in unused]
    del graph.input[:]
    graph.input.extend(inputs)
    infos = [v for v in graph.value_info if v.name in read | made]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _model_file(network, directory: Path) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", network.name).strip("._") or "model"
    return directory / f"{stem}.evokernel.onnx"


# -- the public function ---------------------------------------------------------------------
def export_onnxruntime(model, directory, name: str = "evokernel_ort",
                       min_speedup: float | None = None) -> tuple[Path, Path]:
    """Write ``lib<name>.so`` and ``<model>.evokernel.onnx`` into ``directory``:
    ONNX Runtime runs the tuned kernels of ``model`` (an ``ek.TunedModel``) for
    the nodes they were tuned for. Returns the two paths.

    Only a tuned model can be exported: the library's ops are wired to the model's
    nodes (a list of kernels has no graph to rewrite; ``export_c`` takes those).
    The rewritten model is a copy of the original in which every step with a
    kernel (Conv with its bias and activation, Gemm, pooling, Softmax, Add...) is
    one node of the library's custom-op domain ``evokernel.<digest>``, reading the
    same values plus its weights stored in the kernel's layout; nodes without a
    kernel stay ONNX Runtime's. Each op accepts exactly the float32 shapes it was
    tuned for (an input of another shape is an error status, raised by ONNX
    Runtime) and needs ONNX Runtime 1.16 or later (C API version 16). The library
    exports only ``RegisterCustomOps`` and ``<name>_set_num_threads``.

    ``min_speedup`` leaves to ONNX Runtime every node its own kernels run nearly as
    fast: the whole model is run by ONNX Runtime (installed here) with its own
    kernels and with a kernel for every tuned node, side by side, its profiler
    timing each node where it runs in the graph, and a kernel less than
    ``min_speedup`` times faster there than ONNX Runtime's nodes for the same step,
    or not timed there (ONNX Runtime fuses a residual add into a convolution), is
    left out (``1.0``: the faster of the two runs each node). Beside the model,
    ``<model>.evokernel.report.txt`` lists every tuned node with its tuned time,
    those times where measured, and where it runs.

    Threads: the kernels' parallel loops run on the session's intra-op threads
    (``intra_op_num_threads``; ONNX Runtime 1.17 or later), as ONNX Runtime's own
    kernels do, so the cores are never shared by two thread pools and the session's
    settings apply to every node. With ONNX Runtime 1.16 they run on the library's
    own Halide thread pool (one worker per core, or ``HL_NUM_THREADS``; capped with
    ``ctypes.CDLL(lib).<name>_set_num_threads(n)``); there, set
    ``session.intra_op.allow_spinning`` to ``"0"`` so that idle ONNX Runtime
    workers yield the cores to it.

    >>> import tempfile, numpy as np, onnxruntime as ort, evokernel as ek
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    >>> net = ek.tune_model(helper.make_model(graph), budget=2, evaluator="local", progress=False)
    >>> lib, path = ek.export_onnxruntime(net, tempfile.mkdtemp())
    >>> options = ort.SessionOptions(); options.register_custom_ops_library(str(lib))
    >>> session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    >>> a = np.random.rand(4, 16).astype(np.float32) - 0.5
    >>> bool(np.array_equal(session.run(None, {"x": a})[0], np.maximum(a, 0)))
    True
    """
    check_identifier(name, "the library name")
    if min_speedup is not None and (isinstance(min_speedup, bool) or not isinstance(min_speedup, (int, float))
                                    or not math.isfinite(min_speedup) or min_speedup <= 0):
        raise ExportError(f"min_speedup must be a positive number, got {min_speedup!r}")
    network = _network(model)
    onnx = _onnx()
    kernels = _kernels_of(model, network)
    directory = output_dir(directory)
    items = dict(zip(kernels, entries(list(kernels.values()), name)))
    proto = onnx.ModelProto()
    proto.ParseFromString(network.model_bytes)
    rewrites = _plan(network, proto, kernels, items)
    lib, model_path = directory / f"lib{name}.so", _model_file(network, directory)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".evokernel-export") as tmp:
        tmp = Path(tmp)
        timed = None if min_speedup is None else _timed(onnx, proto, network, rewrites, name, tmp)
        times = {} if timed is None else _step_times(proto, rewrites, *timed)
        kept = [r for r in rewrites if _kept(times.get(r.name), min_speedup)]
        report = _report(rewrites, kept, times, min_speedup, timed)
        if not kept:
            raise ExportError(f"no tuned node is at least {min_speedup}x faster than ONNX Runtime's:\n{report}")
        built, domain = _library(_ops_of(kept), name, tmp)  # the trial library where every op is kept
        rewritten = _rewritten(onnx, proto, kept, domain)
        try:
            onnx.checker.check_model(rewritten)
        except (onnx.checker.ValidationError, ValueError) as error:  # a bug here, never the user's
            raise ExportError(f"the rewritten model is not valid ONNX: {str(error).splitlines()[0]}") from error
        (tmp / model_path.name).write_bytes(rewritten.SerializeToString())
        (tmp / "report.txt").write_text(report)
        built.replace(lib)
        (tmp / model_path.name).replace(model_path)
        (tmp / "report.txt").replace(model_path.with_suffix(".report.txt"))
    return lib, model_path


def _timed(onnx, proto, network, rewrites: list[_Rewrite], name: str, tmp: Path) -> tuple[Profile, Profile]:
    """The model profiled in ONNX Runtime side by side as it is and with every
    rewrite (a trial library with every op), the custom nodes' times by step name."""
    trial, domain = _library(_ops_of(rewrites), name, tmp)
    everything = _rewritten(onnx, proto, rewrites, domain)
    found = profiles({"onnxruntime": proto.SerializeToString(), "evokernel": everything.SerializeToString()},
                     str(trial), network.value_shapes, tmp)
    step_of = {r.output: r.name for r in rewrites}
    custom = {n.name: step_of[n.output[0]] for n in everything.graph.node if n.domain == domain}
    ours = found["evokernel"]
    return found["onnxruntime"], Profile(ours.seconds, {custom[n]: t for n, t in ours.nodes.items() if n in custom})


def _step_times(proto, rewrites: list[_Rewrite], theirs: Profile, ours: Profile
                ) -> dict[str, "tuple[float, float] | str"]:
    """Step name -> seconds per run of ONNX Runtime's nodes for the step and of its
    custom node, each in its whole model (or why they are not known). ONNX
    Runtime's optimised graph names a node as the model does, after its output
    value (``<value>_nchwc``: a node of its blocked-channel layout), or after the
    first node of a fusion (``<name>/MatMulAddFusion``); its layout reorders
    belong to no step."""
    owner = {}
    for r in rewrites:
        for i in r.indexes:
            node = proto.graph.node[i]
            owner.update(dict.fromkeys([v for v in (node.name, *node.output) if v], r.name))
    spent: dict[str, float] = {}
    for node, seconds in theirs.nodes.items():
        name = node.removesuffix("_nchwc")
        base, _, fusion = name.rpartition("/")
        step = owner.get(base if fusion.endswith("Fusion") else name)
        if step is not None:
            spent[step] = spent.get(step, 0.0) + seconds
    times = {}
    for r in rewrites:
        if r.name not in spent:
            times[r.name] = "not timed: ONNX Runtime computes it inside another node"
        elif r.name not in ours.nodes:
            times[r.name] = "not timed: the profile has no time for its custom node"
        else:
            times[r.name] = (spent[r.name], ours.nodes[r.name])
    return times


def _kept(times: "tuple[float, float] | str | None", min_speedup: float | None) -> bool:
    """Whether a step runs its kernel: always without ``min_speedup``; with it,
    where both times are known and ONNX Runtime's is at least ``min_speedup``
    times the kernel's (a step ONNX Runtime computes inside another node, a
    residual add in a convolution say, costs it next to nothing)."""
    if min_speedup is None:
        return True
    return isinstance(times, tuple) and times[0] / times[1] >= min_speedup


def _report(rewrites: list[_Rewrite], kept: list[_Rewrite], times: dict, min_speedup: float | None,
            timed: "tuple[Profile, Profile] | None") -> str:
    """The report written beside the model: every tuned node, its times, where it runs."""
    rows, names = [], {r.name for r in kept}
    for r in rewrites:
        measured = times.get(r.name)
        ort, ours = measured if isinstance(measured, tuple) else (None, None)
        rows.append([r.name, r.op.name, format_seconds(r.op.entry.kernel.stats.time), format_seconds(ort),
                     format_seconds(ours), f"{ort / ours:.2f}x" if ours else "",
                     "evokernel" if r.name in names else "ONNX Runtime", measured if isinstance(measured, str) else ""])
    rule = "" if min_speedup is None else \
        f" (nodes under {min_speedup}x ONNX Runtime's speed, each timed in the whole model, left to ONNX Runtime)"
    whole = "" if timed is None else (
        f"The whole model per run, profiled: {format_seconds(timed[0].seconds)} on ONNX Runtime's kernels, "
        f"{format_seconds(timed[1].seconds)} with every tuned node on evokernel kernels.\n")
    head = ["node", "op", "tuned", "ONNX Runtime", "evokernel in ONNX Runtime", "speedup", "runs in", "note"]
    return f"{len(kept)} of {len(rewrites)} tuned nodes on evokernel kernels{rule}\n{whole}\n{table(head, rows)}\n"
