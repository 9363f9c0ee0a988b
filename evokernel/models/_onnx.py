"""Import an ONNX model: static shapes by shape inference, every node mapped to an
evokernel operator where one computes it (Conv with its bias Add, a residual Add
and Relu/Clip fused, as inference engines fuse them; a 1x1 Conv as ``conv1x1``, a matrix product
over its positions), else left to ONNX's NumPy reference.

Weights (initializers) are read, never tuned on: kernels are specialised to shapes.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import operators as ops
from ..errors import EvokernelError, ModelError
from ._network import Network, Step

#: Opsets of the default domain this importer knows (ONNX 1.2 and later).
OPSETS = range(7, 99)
_DTYPES = {1: "float32", 11: "float64"}


def onnx_module():
    """The ``onnx`` package, or a ModelError saying how to install it."""
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - onnx is in the test extra
        raise ModelError("networks need the onnx package: pip install 'evokernel[onnx]'") from error
    return onnx


def import_onnx(model, input_shapes: Mapping[str, tuple] | None = None) -> Network:
    """Read ``model`` (a path, bytes or an ``onnx.ModelProto``) into a ``Network``
    with static shapes; ``input_shapes`` fixes dynamic input dimensions by name.

    >>> import onnx, numpy as np
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    >>> net = import_onnx(helper.make_model(graph), input_shapes={"x": (4, 8)})
    >>> [(s.kind, s.operator.key) for s in net.steps]
    [('Relu', 'relu(shape=4x8,dtype=float32)')]
    """
    onnx = onnx_module()
    proto = _load(onnx, model)
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    if opsets.get("", 0) not in OPSETS:
        raise ModelError(f"the model's ONNX opset {opsets.get('')} is not supported "
                         f"(opsets {OPSETS.start} to {onnx.defs.onnx_opset_version()} are)")
    initializers = {t.name: _array(t) for t in proto.graph.initializer}
    inputs = _inputs(proto, initializers, input_shapes or {})
    proto = _infer(onnx, proto, inputs)
    constants = _constants(proto, initializers)
    shapes = _shapes(proto, constants, inputs)
    steps = _steps(proto, shapes, constants, opsets)
    if not any(s.operator is not None for s in steps):
        kinds = ", ".join(sorted({s.kind for s in steps})) or "none"
        raise ModelError(f"no node of the model is one evokernel computes (its nodes: {kinds})")
    outputs = tuple(o.name for o in proto.graph.output)
    name = proto.graph.name or "model"
    return Network(name, inputs, outputs, constants, steps, proto.SerializeToString(),
                   {value: shape for value, (shape, _) in shapes.items()})


def _load(onnx, model):
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray)):
        proto = _parse(onnx, bytes(model), "the model bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"no ONNX model at {path}" + (" (a directory)" if path.is_dir() else ""))
        proto = _parse(onnx, path.read_bytes(), str(path))
    else:
        raise ModelError(f"a model is a path to an .onnx file, its bytes or an onnx.ModelProto, "
                         f"got {type(model).__name__}")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ModelError(f"the ONNX model is not valid: {str(error).splitlines()[0]}") from error
    return proto


def _parse(onnx, data: bytes, where: str):
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelError(f"{where} is not an ONNX model: {error}") from error
    if not proto.graph.node:
        raise ModelError(f"{where} is not an ONNX model (no graph nodes in it)")
    return proto


def _constants(proto, initializers: dict) -> dict:
    """The initializers, and what Constant nodes and Identity nodes of a constant
    (exporters alias shared weights so) make: values known before the network runs."""
    consts = dict(initializers)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Constant" and "value" in _attrs(node):
            consts[node.output[0]] = _array(_attrs(node)["value"])
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    return consts


def _array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    return np.ascontiguousarray(numpy_helper.to_array(tensor))


def _inputs(proto, constants: dict, given: Mapping[str, tuple]) -> dict:
    """Graph inputs (not initializers) -> (static shape, dtype)."""
    declared = [i for i in proto.graph.input if i.name not in constants]
    unknown = set(given) - {i.name for i in declared}
    if unknown:
        raise ModelError(f"input_shapes names {', '.join(sorted(map(repr, unknown)))}, which the model has not "
                         f"(its inputs: {', '.join(repr(i.name) for i in declared)})")
    out = {}
    for value in declared:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _DTYPES:
            raise ModelError(f"input {value.name!r} has ONNX data type {tensor.elem_type}; evokernel computes "
                             "float32 and float64 tensors")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        shape = _fixed(value.name, dims, given.get(value.name))
        out[value.name] = (shape, np.dtype(_DTYPES[tensor.elem_type]))
    return out


def _fixed(name: str, dims: list, given) -> tuple[int, ...]:
    if given is None:
        dynamic = [d for d in dims if not isinstance(d, int) or d <= 0]
        if dynamic:
            raise ModelError(f"input {name!r} has a dynamic dimension {dynamic[0]!r} (shape {dims}): "
                             f"give its shape, e.g. input_shapes={{{name!r}: (1, ...)}}")
        return tuple(dims)
    try:
        shape = tuple(int(d) for d in given)
    except (TypeError, ValueError):
        raise ModelError(f"input_shapes[{name!r}] must be a tuple of ints, got {given!r}") from None
    if len(shape) != len(dims) or any(d <= 0 for d in shape):
        raise ModelError(f"input_shapes[{name!r}] = {shape} does not fit the model's input of shape {dims}")
    clash = [(d, s) for d, s in zip(dims, shape) if isinstance(d, int) and d > 0 and d != s]
    if clash:
        raise ModelError(f"input_shapes[{name!r}] = {shape} does not fit the model's input of shape {dims}")
    return shape


def _infer(onnx, proto, inputs: dict):
    """A copy of ``proto`` with the inputs' static shapes and every value's inferred."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        if value.name in inputs:
            dims = value.type.tensor_type.shape
            del dims.dim[:]
            for size in inputs[value.name][0]:
                dims.dim.add().dim_value = size
    try:
        return onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx raises InferenceError, or a RuntimeError from its C++ core
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"the input shapes do not fit the graph: {first}") from error


def _shapes(proto, constants: dict, inputs: dict) -> dict:
    """Every value's static shape (and dtype) that shape inference found."""
    out = {name: (shape, dtype) for name, (shape, dtype) in inputs.items()}
    out.update({name: (a.shape, a.dtype) for name, a in constants.items()})
    for value in [*proto.graph.value_info, *proto.graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor.HasField("shape") and all(d is not None for d in dims) and tensor.elem_type in _DTYPES:
            out[value.name] = (tuple(dims), np.dtype(_DTYPES[tensor.elem_type]))
    return out


# -- nodes to steps -------------------------------------------------------------------

class _Skip(Exception):
    """A node that no operator computes; the message says why."""


def _steps(proto, shapes: dict, consts: dict, opsets: dict) -> list[Step]:
    """A step for every node whose outputs are not constants, fused where a Conv
    is followed by its bias, a residual Add and its activation. A fused step runs
    where its last node did (after the residual is made)."""
    nodes = list(proto.graph.node)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
    consumers = Counter(name for n in nodes for name in n.input if name)
    outputs = {o.name for o in proto.graph.output}

    placed, fused = [], set()  # (index of the step's last node, step); nodes in a step

    def sole_reader(value: str, kinds: tuple[str, ...]):
        """The node, not yet in a step, that alone reads ``value`` if it is of one of ``kinds``."""
        if value in outputs or consumers[value] != 1:
            return None
        for j, m in enumerate(nodes):
            if value in m.input and m.op_type in kinds and not m.domain and j not in fused:
                return j
        return None

    for i, node in enumerate(nodes):
        if i in fused or all(out in consts for out in node.output):
            continue
        if node.domain not in ("", "ai.onnx"):
            placed.append((i, _reference(node, names[i], opsets, f"custom domain {node.domain!r}")))
            continue
        try:
            step, taken = _map(node, i, names, nodes, shapes, consts, opsets, sole_reader)
        except _Skip as why:
            placed.append((i, _reference(node, names[i], opsets, str(why))))
            continue
        except EvokernelError as error:  # an operator refused the node's arguments
            placed.append((i, _reference(node, names[i], opsets, str(error))))
            continue
        fused.update(taken)
        placed.append((max(taken), step))
    return [step for _, step in sorted(placed, key=lambda p: p[0])]


def _reference(node, name: str, opsets: dict, reason: str) -> Step:
    return Step((name,), (node.op_type,), tuple(node.output), node=node, reason=reason, opsets=opsets)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dtype(shapes: dict, value: str) -> str:
    if value not in shapes:
        raise _Skip(f"the shape of {value!r} is not static")
    dtype = shapes[value][1]
    if dtype not in (np.float32, np.float64):
        raise _Skip(f"data type {dtype} (float32 and float64 are computed)")
    return str(dtype)


def _shape(shapes: dict, value: str) -> tuple[int, ...]:
    _dtype(shapes, value)
    return tuple(shapes[value][0])


def _const(consts: dict, value: str, what: str) -> np.ndarray:
    if value not in consts:
        raise _Skip(f"its {what} is computed at run time, not a constant of the model")
    return consts[value]


def _map(node, i, names, nodes, shapes, consts, opsets, sole_reader):
    """The step computing ``node`` (with the nodes fused into it) and their indexes."""
    kind, attrs = node.op_type, _attrs(node)
    if kind == "Conv":
        return _conv(node, i, names, nodes, shapes, consts, attrs, sole_reader)
    if kind == "Gemm":
        return _gemm(node, i, names, shapes, consts, attrs), {i}
    if kind == "MatMul":
        (m, k), (_, n) = _matrix(shapes, node.input[0]), _matrix(shapes, node.input[1])
        op = ops.matmul(m, n, k, dtype=_dtype(shapes, node.input[0]))
        return _step(node, names[i], op, [node.input[0], node.input[1]], consts), {i}
    if kind in ("MaxPool", "AveragePool"):
        return _pool(node, i, names, shapes, consts, attrs), {i}
    if kind == "GlobalAveragePool":
        n, c, h, w = _nchw(shapes, node.input[0])
        op = ops.avg_pool2d(n, c, h, w, k=(h, w), dtype=_dtype(shapes, node.input[0]))
        return _step(node, names[i], op, [node.input[0]], consts, shape=(n, c, 1, 1)), {i}
    if kind in ("Relu", "Clip"):
        shape, dtype = _shape(shapes, node.input[0]), _dtype(shapes, node.input[0])
        factory = ops.relu if kind == "Relu" else ops.relu6
        if kind == "Clip" and _activation(node, consts) != "relu6":
            raise _Skip("Clip computes only as Clip(0, 6) (ReLU6)")
        return _step(node, names[i], factory(shape, dtype=dtype), [node.input[0]], consts), {i}
    if kind == "Softmax":
        return _softmax(node, i, names, shapes, consts, attrs, opsets), {i}
    if kind == "Add":
        a, b = _shape(shapes, node.input[0]), _shape(shapes, node.input[1])
        if a != b:
            raise _Skip(f"Add broadcasts {a} with {b} (equal shapes are computed)")
        op = ops.add(a, dtype=_dtype(shapes, node.input[0]))
        return _step(node, names[i], op, [node.input[0], node.input[1]], consts), {i}
    raise _Skip(f"no evokernel operator computes {kind}")


def _step(node, name, op, args, consts, shape=None, fused=()) -> Step:
    """A kernel step; an argument that is a constant of the model is read now."""
    values = tuple(np.ascontiguousarray(consts[a], dtype=op.dtype).reshape(spec.shape) if a in consts else a
                   for a, spec in zip(args, op.inputs))
    chain = [node, *fused]
    names = (name, *[f.name or f.op_type for f in fused])
    return Step(names, tuple(n.op_type for n in chain), (chain[-1].output[0],), op, values, shape)


def _nchw(shapes, value) -> tuple[int, int, int, int]:
    shape = _shape(shapes, value)
    if len(shape) != 4:
        raise _Skip(f"input of rank {len(shape)} (NCHW, rank 4, is computed)")
    return shape


def _matrix(shapes, value) -> tuple[int, int]:
    shape = _shape(shapes, value)
    if len(shape) != 2:
        raise _Skip(f"operand of rank {len(shape)} (matrices are computed)")
    return shape


def _pads(attrs: dict, spatial: int = 2) -> tuple[int, int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise _Skip(f"auto_pad={attrs['auto_pad']!r} (explicit pads are computed)")
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    if pads[:spatial] != pads[spatial:]:
        raise _Skip(f"asymmetric pads {pads}")
    return tuple(pads[:spatial])


def _activation(node, consts) -> str | None:
    """The activation a Relu or Clip node computes: ``"relu"``, ``"relu6"`` for
    Clip(0, 6), None for any other Clip."""
    if node.op_type == "Relu":
        return "relu"
    attrs = _attrs(node)
    if "min" in attrs or "max" in attrs:  # before opset 11: bounds are attributes
        low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    else:  # bounds are optional inputs, constants when the node is a ReLU6
        names = [*node.input[1:3], "", ""][:2]
        if any(v and v not in consts for v in names):
            return None
        low, high = (float(consts[v].reshape(-1)[0]) if v else bound for v, bound in zip(names, (-np.inf, np.inf)))
    return "relu6" if (low, high) == (0.0, 6.0) else None


def _conv(node, i, names, nodes, shapes, consts, attrs, sole_reader):
    n, c_in, h, w = _nchw(shapes, node.input[0])
    weight = _const(consts, node.input[1], "weight")
    if weight.ndim != 4:
        raise _Skip(f"a {weight.ndim - 2}-d convolution (2-d ones are computed)")
    c_out, _, kh, kw = weight.shape
    args, taken, fused = [node.input[0], node.input[1]], {i}, []
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None:
        _const(consts, bias, "bias")
    out, residual = node.output[0], None
    j, other = _sole_add(nodes, out, sole_reader)
    if bias is None and other in consts and consts[other].size == c_out \
            and consts[other].shape in ((c_out, 1, 1), (1, c_out, 1, 1), (c_out,)):
        bias, out = other, nodes[j].output[0]
        taken.add(j)
        fused.append(nodes[j])
        j, other = _sole_add(nodes, out, sole_reader)
    if other is not None and other not in consts and out in shapes and shapes.get(other) == shapes[out]:
        residual, out = other, nodes[j].output[0]
        taken.add(j)
        fused.append(nodes[j])
    activation = None
    j = sole_reader(out, ("Relu", "Clip"))
    if j is not None:
        act = _activation(nodes[j], consts)
        if act is not None:
            activation = act
            taken.add(j)
            fused.append(nodes[j])
    dtype = _dtype(shapes, node.input[0])
    op = ops.conv2d(n, c_in, h, w, c_out, k=(kh, kw), stride=tuple(attrs.get("strides", [1, 1])),
                    pad=_pads(attrs), dilation=tuple(attrs.get("dilations", [1, 1])),
                    groups=int(attrs.get("group", 1)), bias=bias is not None, activation=activation, dtype=dtype,
                    residual=residual is not None)
    args += [v for v in (bias, residual) if v is not None]
    pointwise = op.pointwise()
    if pointwise is not None:
        return _step(node, names[i], pointwise, args, consts, op.output.shape, fused), taken
    return _step(node, names[i], op, args, consts, fused=fused), taken


def _gemm(node, i, names, shapes, consts, attrs) -> Step:
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise _Skip("Gemm with transA or alpha/beta other than 1 (a fully connected layer is computed)")
    batch, k = _matrix(shapes, node.input[0])
    b = _const(consts, node.input[1], "weight")
    weight = b if attrs.get("transB", 0) else b.T  # fc takes the weight as [out, in]
    n = weight.shape[0]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None:
        c = _const(consts, bias, "bias")
        if c.size != n:
            raise _Skip(f"Gemm's C of shape {c.shape} is not a bias of {n} features")
    op = ops.fc(batch, k, n, bias=bias is not None, dtype=_dtype(shapes, node.input[0]))
    return _step(node, names[i], op, [node.input[0], node.input[1], *([bias] if bias else [])],
                 {**consts, node.input[1]: weight})


def _pool(node, i, names, shapes, consts, attrs) -> Step:
    n, c, h, w = _nchw(shapes, node.input[0])
    if any(d != 1 for d in attrs.get("dilations", [1, 1])) or attrs.get("storage_order", 0):
        raise _Skip("pooling with dilations or a column-major index output")
    if len(node.output) > 1 and node.output[1]:
        raise _Skip("MaxPool's indices output")
    k, pad = tuple(attrs["kernel_shape"]), _pads(attrs)
    stride, ceil = tuple(attrs.get("strides", [1, 1])), bool(attrs.get("ceil_mode", 0))
    dtype = _dtype(shapes, node.input[0])
    if node.op_type == "MaxPool":
        op = ops.max_pool2d(n, c, h, w, k, stride=stride, pad=pad, ceil_mode=ceil, dtype=dtype)
    else:
        if any(pad) and not attrs.get("count_include_pad", 0):
            raise _Skip("padded AveragePool without count_include_pad (the window's full area is the divisor)")
        if ceil:
            raise _Skip("AveragePool in ceil mode")
        op = ops.avg_pool2d(n, c, h, w, k, stride=stride, pad=pad, dtype=dtype)
    expected = _shape(shapes, node.output[0])
    if tuple(op.output.shape) != expected:
        raise _Skip(f"pooling output {tuple(op.output.shape)} differs from the model's {expected}")
    return _step(node, names[i], op, [node.input[0]], consts)


def _softmax(node, i, names, shapes, consts, attrs, opsets) -> Step:
    shape = _shape(shapes, node.input[0])
    rank = len(shape)
    axis = int(attrs.get("axis", -1 if opsets.get("", 13) >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    if opsets.get("", 13) >= 13:
        if axis != rank - 1:
            raise _Skip(f"Softmax over axis {axis} of {rank} (the last axis is computed)")
        flat = shape
    else:  # before opset 13: over the input flattened to 2-d at the axis
        flat = (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))
    op = ops.softmax(flat, dtype=_dtype(shapes, node.input[0]))
    return _step(node, names[i], op, [node.input[0]], consts, shape=shape if flat != shape else None)


def _sole_add(nodes, value: str, sole_reader) -> tuple[int | None, str | None]:
    """The Add that alone reads ``value`` and the one other value it adds to it
    (None, None where there is no such Add)."""
    j = sole_reader(value, ("Add",))
    other = [v for v in nodes[j].input if v != value] if j is not None else []
    return (j, other[0]) if len(other) == 1 else (None, None)
