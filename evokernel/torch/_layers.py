"""Which nodes of a traced module a kernel computes, and as which operator:
Conv2d (with the eval-mode BatchNorm2d that alone reads its output folded into it,
the residual add that alone reads the result and the ReLU or ReLU6 that alone
reads that fused, as ONNX exporters and the ONNX importer do; grouped and
depthwise too), Linear, MaxPool2d,
AvgPool2d, AdaptiveAvgPool2d with windows that tile the input, ReLU and Softmax
over the last dimension; modules and their functional forms. Everything else, and
every layer a kernel cannot compute exactly as PyTorch does, stays PyTorch's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from operator import add, iadd
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import operators as ops
from ..errors import OperatorArgumentError
from ..operators import Operator


@dataclass(eq=False)
class Layer:
    """Nodes of the graph computed as one kernel: ``nodes[0]`` reads ``input``,
    ``nodes[-1]`` gives the result. ``module`` holds the weight (and bias) the
    kernel reads, ``norm`` the batch norm folded into it, ``residual`` the node
    whose output a residual add adds; ``fallback`` computes the same with PyTorch,
    step by step (``ADD_RESIDUAL``: that add)."""

    name: str
    kind: str
    operator: Operator
    nodes: tuple[fx.Node, ...]
    input: fx.Node
    module: nn.Module | None
    fallback: tuple[Callable, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    norm: nn.BatchNorm2d | None = None
    residual: fx.Node | None = None


#: The fallback step of a fused residual add (the residual is the layer's second input).
ADD_RESIDUAL = "add the residual"


class _Skip(Exception):
    """A layer that stays PyTorch's; the message says why."""


def find_layers(gm: fx.GraphModule) -> tuple[list[Layer], dict[str, str]]:
    """The layers of ``gm`` (shapes propagated) a kernel computes, and the
    layers of those kinds that stay PyTorch's, by name, with the reason."""
    layers, skipped, taken = [], {}, set()
    for node in gm.graph.nodes:
        if node in taken:
            continue
        try:
            layer = _layer(gm, node, taken)
        except (_Skip, OperatorArgumentError) as why:
            skipped[_name(node)] = str(why)
            continue
        if layer is not None:
            if any(other.name == layer.name for other in layers):  # a module called twice
                layer.name = f"{layer.name} ({node.name})"
            layers.append(layer)
            taken.update(layer.nodes)
    return layers, skipped


def _layer(gm: fx.GraphModule, node: fx.Node, taken: set) -> Layer | None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if type(module) is nn.Conv2d:  # exact types: a subclass may compute something else
            return _conv(gm, node, module, taken)
        maker = _MODULES.get(type(module))
        return maker(gm, node, module) if maker is not None else None
    activation = _activation(gm, node)
    if activation is not None:
        return _relu(node, *activation)
    if _is_softmax(node):
        return _softmax(node, _softmax_dim(node), functools.partial(torch.softmax, dim=-1))
    return None


def _name(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


# -- shapes -------------------------------------------------------------------------

def _meta(node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if meta is None or not hasattr(meta, "shape"):
        raise _Skip("its input is not a single tensor of known shape")
    if meta.dtype != torch.float32:
        raise _Skip(f"data type {meta.dtype} (float32 is computed)")
    return tuple(meta.shape)


def _input(node: fx.Node) -> tuple[fx.Node, tuple[int, ...]]:
    if not node.args or not isinstance(node.args[0], fx.Node):
        raise _Skip("its input is not a tensor of the graph")
    return node.args[0], _meta(node.args[0])


def _nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise _Skip(f"input of rank {len(shape)} (NCHW, rank 4, is computed)")
    return shape


def _params(module: nn.Module) -> None:
    for name, p in (("weight", module.weight), ("bias", module.bias)):
        if p is not None and (p.dtype != torch.float32 or p.device.type != "cpu"):
            raise _Skip(f"its {name} is {p.dtype} on {p.device} (float32 on the CPU is computed)")


def _make(name, kind, operator, nodes, input_node, module, fallback, input_shape, norm=None, residual=None) -> Layer:
    expected = _meta(nodes[-1])
    if math.prod(operator.output.shape) != math.prod(expected):
        raise _Skip(f"the kernel's output {operator.output.shape} differs from PyTorch's {expected}")
    return Layer(name, kind, operator, tuple(nodes), input_node, module, tuple(fallback), input_shape, expected,
                 norm, residual)


# -- activations --------------------------------------------------------------------

_RELU_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}
_RELU_METHODS = {"relu": "relu", "relu_": "relu"}
_FALLBACK = {"relu": torch.relu, "relu6": F.relu6}


def _activation(gm: fx.GraphModule, node: fx.Node) -> tuple[str, Callable, bool] | None:
    """(``"relu"`` or ``"relu6"``, PyTorch's way to compute it, in place?) for an
    activation node of one tensor; None for any other node."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        kind = {nn.ReLU: "relu", nn.ReLU6: "relu6"}.get(type(module))
        return (kind, module, module.inplace) if kind else None
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        inplace = node.target is torch.relu_ or bool(node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False))
        return _RELU_FUNCTIONS[node.target], _FALLBACK[_RELU_FUNCTIONS[node.target]], inplace
    if node.op == "call_method" and node.target in _RELU_METHODS and len(node.args) == 1:
        return "relu", torch.relu, node.target.endswith("_")
    return None


def _sole_activation(gm: fx.GraphModule, node: fx.Node):
    """The activation node that alone reads ``node``'s output, with its kind and
    fallback; None if there is none."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    found = _activation(gm, user)
    if found is None or user.args[0] is not node:
        return None
    return user, found[0], found[1]


def _relu(node: fx.Node, kind: str, fallback: Callable, inplace: bool) -> Layer:
    source, shape = _input(node)
    if inplace and (source.op == "placeholder" or len(source.users) > 1):
        raise _Skip("an in-place activation whose input is read elsewhere or is an input of the module")
    if not shape:
        raise _Skip("a 0-d tensor")
    factory = ops.relu if kind == "relu" else ops.relu6
    operator = factory(shape if len(shape) <= 4 else (math.prod(shape),))
    return _make(_name(node), "relu", operator, [node], source, None, [fallback], shape)


# -- layers with weights ------------------------------------------------------------

def _conv(gm: fx.GraphModule, node: fx.Node, module: nn.Conv2d, taken: set) -> Layer:
    source, shape = _input(node)
    n, c, h, w = _nchw(shape)
    if module.padding_mode != "zeros":
        raise _Skip(f"padding_mode={module.padding_mode!r} (zero padding is computed)")
    _params(module)
    nodes, fallback, activation = [node], [module], None
    norm = _sole_norm(gm, node)
    if norm is not None:
        nodes.append(norm[0])
        fallback.append(norm[1])
    shortcut = _sole_residual_add(nodes[-1], taken)
    if shortcut is not None:
        nodes.append(shortcut[0])
        fallback.append(ADD_RESIDUAL)
    fused = _sole_activation(gm, nodes[-1])
    if fused is not None:
        user, activation, step = fused
        nodes.append(user)
        fallback.append(step)
    operator = ops.conv2d(n, c, h, w, module.out_channels, k=module.kernel_size, stride=module.stride,
                          pad=_padding(module), dilation=module.dilation, groups=module.groups,
                          bias=module.bias is not None or norm is not None, activation=activation,
                          residual=shortcut is not None)
    operator = operator.pointwise() or operator
    name = "+".join(_name(m) for m in nodes)
    return _make(name, "conv2d", operator, nodes, source, module, fallback, shape,
                 norm[1] if norm else None, shortcut[1] if shortcut else None)


_ADDS = (add, iadd, torch.add)


def _sole_residual_add(node: fx.Node, taken: set) -> tuple[fx.Node, fx.Node] | None:
    """The add that alone reads ``node``'s output, not yet in a layer, and the node
    whose output of the same shape it adds (a residual block's shortcut); None
    if there is none."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op != "call_function" or user.target not in _ADDS or user in taken or user.kwargs \
            or len(user.args) != 2 or node not in user.args:
        return None
    other = user.args[1] if user.args[0] is node else user.args[0]
    if not isinstance(other, fx.Node) or other is node:
        return None
    try:
        return (user, other) if _meta(other) == _meta(node) else None
    except _Skip:
        return None


def _sole_norm(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, nn.BatchNorm2d] | None:
    """The batch-norm node that alone reads ``node``'s output, and its module, if
    it can be folded into the conv; None otherwise."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op != "call_module" or user.args != (node,) or user.kwargs:
        return None
    module = gm.get_submodule(user.target)
    if type(module) is not nn.BatchNorm2d or _unfoldable(module) is not None:
        return None
    return user, module


def _unfoldable(module: nn.BatchNorm2d) -> str | None:
    """Why the batch norm cannot be folded into a conv; None if it can."""
    if module.training:
        return "batch norm in training mode (it normalizes by each batch's statistics; in eval mode it is folded)"
    if not module.track_running_stats or module.running_mean is None or module.running_var is None:
        return "batch norm without running statistics (it normalizes by each batch's statistics)"
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(module, name)
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            return f"batch norm whose {name} is {t.dtype} on {t.device} (float32 on the CPU is folded)"
    return None


def _norm_module(gm: fx.GraphModule, node: fx.Node, module: nn.BatchNorm2d) -> Layer:
    """A batch norm not folded into the conv before it: it stays PyTorch's."""
    raise _Skip(_unfoldable(module) or "batch norm not after a Conv2d whose output it alone reads (only such a "
                "batch norm is folded, into that conv)")


def _padding(module: nn.Conv2d) -> tuple[int, int]:
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        spans = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
        if any(s % 2 for s in spans):
            raise _Skip("padding='same' with an even kernel span (padded unevenly)")
        return tuple(s // 2 for s in spans)
    return tuple(module.padding)


def _linear(gm: fx.GraphModule, node: fx.Node, module: nn.Linear) -> Layer:
    source, shape = _input(node)
    if not shape or shape[-1] != module.in_features:
        raise _Skip(f"input of shape {shape} for {module.in_features} features")
    _params(module)
    operator = ops.fc(math.prod(shape[:-1]), module.in_features, module.out_features, bias=module.bias is not None)
    return _make(_name(node), "linear", operator, [node], source, module, [module], shape)


# -- pooling, softmax -----------------------------------------------------------------

def _max_pool(gm: fx.GraphModule, node: fx.Node, module: nn.MaxPool2d) -> Layer:
    source, shape = _input(node)
    if module.return_indices or _pair(module.dilation) != (1, 1):
        raise _Skip("max pooling with indices or dilation")
    operator = ops.max_pool2d(*_nchw(shape), k=module.kernel_size, stride=module.stride or module.kernel_size,
                              pad=module.padding, ceil_mode=module.ceil_mode)
    return _exact_pool(node, operator, source, module, shape)


def _avg_pool(gm: fx.GraphModule, node: fx.Node, module: nn.AvgPool2d) -> Layer:
    source, shape = _input(node)
    if module.ceil_mode or module.divisor_override is not None:
        raise _Skip("average pooling in ceil mode or with a divisor_override")
    if _pair(module.padding) != (0, 0) and not module.count_include_pad:
        raise _Skip("padded average pooling without count_include_pad (the window's full area is the divisor)")
    operator = ops.avg_pool2d(*_nchw(shape), k=module.kernel_size, stride=module.stride or module.kernel_size,
                              pad=module.padding)
    return _exact_pool(node, operator, source, module, shape)


def _adaptive_avg_pool(gm: fx.GraphModule, node: fx.Node, module: nn.AdaptiveAvgPool2d) -> Layer:
    source, shape = _input(node)
    n, c, h, w = _nchw(shape)
    out_h, out_w = _meta(node)[-2:]
    if h % out_h or w % out_w:
        raise _Skip(f"adaptive pooling of {h}x{w} to {out_h}x{out_w} (windows that tile the input are computed)")
    window = (h // out_h, w // out_w)
    operator = ops.avg_pool2d(n, c, h, w, k=window, stride=window)
    return _exact_pool(node, operator, source, module, shape)


def _exact_pool(node, operator, source, module, shape) -> Layer:
    expected = _meta(node)
    if tuple(operator.output.shape) != expected:
        raise _Skip(f"pooling output {tuple(operator.output.shape)} differs from PyTorch's {expected}")
    return _make(_name(node), "pool2d", operator, [node], source, None, [module], shape)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


_SOFTMAX_FUNCTIONS = (F.softmax, torch.softmax)


def _is_softmax(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in _SOFTMAX_FUNCTIONS)
            or (node.op == "call_method" and node.target == "softmax"))


def _softmax_dim(node: fx.Node):
    """The dim a softmax node reduces over; a node that also casts is skipped."""
    dtype_at = 3 if node.target is F.softmax else 2  # F.softmax(input, dim, _stacklevel, dtype)
    dtype = node.kwargs.get("dtype", node.args[dtype_at] if len(node.args) > dtype_at else None)
    if dtype is not None:
        raise _Skip(f"softmax computed in {dtype}")
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)


def _softmax_module(gm: fx.GraphModule, node: fx.Node, module: nn.Softmax) -> Layer:
    return _softmax(node, module.dim, module)


def _softmax(node: fx.Node, dim, fallback: Callable) -> Layer:
    source, shape = _input(node)
    if not isinstance(dim, int) or not shape or dim not in (-1, len(shape) - 1):
        raise _Skip(f"softmax over dim={dim!r} of a rank-{len(shape)} tensor (the last dimension is computed)")
    flat = shape if len(shape) <= 4 else (math.prod(shape[:-1]), shape[-1])
    return _make(_name(node), "softmax", ops.softmax(flat), [node], source, None, [fallback], shape)


def _relu_module(gm: fx.GraphModule, node: fx.Node, module) -> Layer:
    return _relu(node, *_activation(gm, node))


_MODULES = {nn.Linear: _linear, nn.MaxPool2d: _max_pool, nn.AvgPool2d: _avg_pool,
            nn.AdaptiveAvgPool2d: _adaptive_avg_pool, nn.ReLU: _relu_module, nn.ReLU6: _relu_module,
            nn.Softmax: _softmax_module, nn.BatchNorm2d: _norm_module}
