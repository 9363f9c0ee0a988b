"""``optimize``: trace a PyTorch module, tune a kernel for each distinct layer it can
compute under one budget, and return a copy of the module's graph that calls them.

The module is traced with ``torch.fx.symbolic_trace`` and its shapes propagated on
fake tensors, rather than captured with ``torch.export``: fx keeps each layer as a
call of the user's own submodule, so the optimized module shares the model's
parameters (read at every call, so a fine-tuned model keeps working) and falls back
on the very layer it replaced, where ``export`` would decompose layers into aten ops
over lifted copies of the weights. Fake tensors compute nothing and leave the
model's buffers (batch-norm statistics) as they are.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter

import torch
from torch import fx, nn

from ..codegen import host_platform, platform
from ..errors import ArgumentError, ModelError, TargetError
from ..models import tune_operators
from ..target import Target
from ._call import KernelCall
from ._layers import Layer, find_layers
from ._ops import Slot

#: The attribute of the optimized module that holds its kernel layers.
KERNELS = "evokernel"


class Kernels(nn.Module):
    """The optimized module's ``evokernel`` attribute: its kernel layers (children,
    by layer name), and by name the layers left to PyTorch (``pytorch``: why) and
    those whose tuning failed (``failed``: why); ``summary`` of the tuning run."""

    def __init__(self, pytorch: dict[str, str], failed: dict[str, str], summary: dict):
        super().__init__()
        self.pytorch, self.failed, self.summary = pytorch, failed, summary

    @property
    def layers(self) -> dict[str, str]:
        """Layer name -> the operator key of the kernel computing it."""
        return {call.layer_name: call.key for call in self.children()}


def optimize(model, example_input, budget="10m", target="host", seed: int | None = None, *, retune: bool = False,
             evaluator="ray", strategy="ga", records="sqlite", threads: int | None = None, cache_dir=None,
             progress=None) -> fx.GraphModule:
    """``model`` with tuned kernels for every layer they compute, as a module.

    Conv2d (with the eval-mode BatchNorm2d that alone reads its output folded into
    it, the residual add and then the ReLU/ReLU6 that alone read the result;
    grouped and depthwise too),
    Linear, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU and Softmax over
    the last dimension, as modules or functions, at the shapes of ``example_input``
    (a tensor, or a tuple of the forward's tensors) get a kernel each, tuned under
    one ``budget`` shared among the distinct ones; the other arguments are
    ``ek.tune_model``'s. Everything else stays PyTorch's.

    The result is a ``torch.fx.GraphModule`` sharing the model's layers and
    parameters (the model itself is not changed). A kernel layer calls its
    ``evokernel::`` op on a contiguous CPU float32 input of the tuned shape, and the
    original layer on any other input. It works under ``torch.compile`` and
    ``torch.export``; it is for inference: a backward through a kernel raises
    ``NoGradientError``. ``result.evokernel`` tells which layers run on kernels.

    >>> import torch, evokernel as ek
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh()).eval()
    >>> x = torch.randn(4, 16)
    >>> fast = ek.torch.optimize(model, x, budget=2, evaluator="local", progress=False)
    >>> fast.evokernel.layers
    {'0': 'fc(batch=4,in_features=16,out_features=8,bias=True,dtype=float32)'}
    >>> torch.allclose(fast(x), model(x), atol=1e-5)
    True
    """
    _check_module(model)
    inputs = _example_tensors(example_input)
    target = _cpu_target(target)
    gm = trace(model, inputs)
    layers, pytorch = find_layers(gm)
    if not layers:
        kinds = ", ".join(sorted({type(m).__name__ for m in model.modules() if next(m.children(), None) is None}))
        raise ModelError(f"no layer of the model is one evokernel computes at these shapes (its modules: {kinds}"
                         + "".join(f"; {name}: {why}" for name, why in list(pytorch.items())[:5]) + ")")
    tasks = _tasks(layers)
    kernels, failed, summary = tune_operators(
        tasks, target, budget, seed, name=type(model).__name__, retune=retune, evaluator=evaluator,
        strategy=strategy, records=records, threads=threads, cache_dir=cache_dir, progress=progress)
    failed_layers = {layer.name: failed[layer.operator.key] for layer in layers if layer.operator.key in failed}
    gm.add_module(KERNELS, Kernels(pytorch, failed_layers, summary))
    _replace(gm, [layer for layer in layers if layer.operator.key in kernels], kernels)
    return gm


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(getattr(model, KERNELS, None), Kernels):
        raise ArgumentError("model is already optimized by evokernel: optimize the original module")
    if hasattr(model, KERNELS):
        raise ArgumentError(f"model has an attribute {KERNELS!r}, the name the optimized module gives its kernels")


def _example_tensors(example) -> tuple[torch.Tensor, ...]:
    """The forward's example arguments: a tensor, or a tuple or list of tensors."""
    tensors = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    for i, t in enumerate(tensors):
        where = "example_input" if len(tensors) == 1 and not isinstance(example, (tuple, list)) else f"example_input[{i}]"
        if not isinstance(t, torch.Tensor):
            raise ArgumentError(f"{where} must be a torch.Tensor (or example_input a tuple of them), "
                                f"got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ArgumentError(f"{where} is on {t.device}: evokernel's kernels run on CPU tensors, so give a CPU "
                                "example (and call the optimized module on CPU tensors)")
    if not tensors:
        raise ArgumentError("example_input is empty: give the tensor (or tuple of tensors) the forward takes")
    return tensors


def _cpu_target(target) -> Target:
    """``target`` parsed; it must compile for this machine's CPU, where the module runs."""
    parsed = Target.parse(target)
    if parsed.is_gpu:
        raise TargetError(f"target {parsed.string!r} offloads to {parsed.gpu_api}, but a PyTorch module optimized "
                          "by evokernel calls its kernels on CPU tensors: give a CPU target such as 'host'")
    if platform(parsed) != host_platform():
        raise TargetError(f"target {parsed.string!r} compiles for {platform(parsed)}, but the optimized module "
                          f"calls its kernels here ({host_platform()}): give 'host' or a target of this machine")
    return parsed


def trace(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """``model`` traced by torch.fx, each node's output shape and dtype found on fake
    tensors (``node.meta["tensor_meta"]``); the model is neither run nor changed."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, NotImplementedError... from the user's code
        raise ModelError(f"the model cannot be traced by torch.fx ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
                         "data-dependent control flow in forward is the usual cause") from error
    gm.training = model.training  # not gm.train(): that would set the model's own layers
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    try:  # ShapeProp prints the traceback of a failing node: the error below says it once
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm, fake_mode=fake).propagate(*(fake.from_tensor(t) for t in inputs))
    except Exception as error:
        cause = error.__cause__ or error
        raise ModelError(f"the model does not run on the example input: {type(cause).__name__}: "
                         f"{str(cause).strip().splitlines()[0] if str(cause).strip() else ''}") from error
    return gm


def _tasks(layers: list[Layer]) -> dict:
    """Distinct operators by key, with how many layers use each."""
    counts = Counter(layer.operator.key for layer in layers)
    first = {layer.operator.key: layer.operator for layer in reversed(layers)}
    return {key: (first[key], counts[key]) for key in counts}


def _replace(gm: fx.GraphModule, layers: list[Layer], kernels: dict) -> None:
    """Each layer's nodes replaced by one call of its ``KernelCall``."""
    container, graph = getattr(gm, KERNELS), gm.graph
    replaced: dict[fx.Node, fx.Node] = {}  # a layer's last node -> the call that took its place
    for layer in layers:
        attr = _attribute(container, layer.name)
        container.add_module(attr, KernelCall(layer, Slot(layer.name, kernels[layer.operator.key], layer.output_shape)))
        last = layer.nodes[-1]
        inputs = (layer.input,) if layer.residual is None else (layer.input, layer.residual)
        with graph.inserting_after(last):
            node = graph.call_module(f"{KERNELS}.{attr}", tuple(replaced.get(i, i) for i in inputs))
        node.meta = dict(last.meta)
        replaced[last] = node
        last.replace_all_uses_with(node)
        for old in reversed(layer.nodes):
            graph.erase_node(old)
    graph.lint()
    gm.recompile()


def _attribute(container: nn.Module, name: str) -> str:
    """A free attribute name of ``container`` for the layer ``name``."""
    base = re.sub(r"\W", "_", name)
    attr, n = base, 1
    while hasattr(container, attr):
        attr, n = f"{base}_{n}", n + 1
    return attr
