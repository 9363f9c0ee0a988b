"""The ``evokernel::`` PyTorch operators: each calls one layer's tuned kernel on
zero-copy NumPy views of its tensors, writing into a preallocated output tensor.

A layer's kernel is found by its *slot* name (a string argument of the op), so the
ops are ordinary ``torch.library.custom_op`` s: fake implementations let
``torch.compile`` and ``torch.export`` trace through them, and their backward
raises ``NoGradientError`` naming the layer (kernels are inference only).

Where PyTorch's ATen runs on OpenMP (its x86 and ARM Linux wheels), a kernel called
by an op runs its parallel loops on PyTorch's OpenMP threads, not on Halide's own
pool: the threads PyTorch leaves spinning after its ops then do the kernel's work,
instead of sharing the cores with it.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import weakref
from pathlib import Path
from typing import Optional

import torch

from ..codegen import openmp_calls, use_openmp
from ..errors import KernelCallError, NoGradientError
from ..store import Kernel

NAMESPACE = "evokernel"
_slots: "weakref.WeakValueDictionary[str, Slot]" = weakref.WeakValueDictionary()
_numbers = itertools.count()


class Slot:
    """One layer's kernel as the ops call it: the output shape PyTorch sees, and
    weights that needed a contiguous copy, kept until the parameter changes."""

    def __init__(self, layer: str, kernel: Kernel, output_shape: tuple[int, ...]):
        self.layer, self.kernel, self.output_shape = layer, kernel, tuple(output_shape)
        self.name = f"{layer}#{next(_numbers)}"
        self.copies: dict[int, tuple[torch.Tensor, tuple, torch.Tensor]] = {}  # input index -> (source, state, copy)
        _slots[self.name] = self

    def __deepcopy__(self, memo) -> "Slot":
        return self  # a copy of the optimized module calls the same kernels (its weights are read per call)

    def run(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The kernel's output for ``tensors`` (the operator's inputs, in its order)."""
        specs = self.kernel.signature.inputs
        if len(tensors) != len(specs):
            raise KernelCallError(f"layer {self.layer!r} takes {len(specs)} tensors, got {len(tensors)}")
        for tensor, spec in zip(tensors, specs):
            self._check(tensor, spec)
        arrays = [self._contiguous(i, t).detach().numpy().reshape(spec.shape)
                  for i, (t, spec) in enumerate(zip(tensors, specs))]
        out = torch.empty(self.output_shape, dtype=torch.float32)
        with openmp_calls():
            self.kernel(*arrays, out=out.numpy().reshape(self.kernel.signature.output.shape))
        return out

    def _check(self, tensor: torch.Tensor, spec) -> None:
        if (tensor.device.type != "cpu" or tensor.dtype != torch.float32 or tensor.layout != torch.strided
                or tensor.numel() != math.prod(spec.shape)):
            raise KernelCallError(f"layer {self.layer!r}: its kernel takes {spec.name} as a CPU float32 tensor of "
                                  f"{math.prod(spec.shape)} elements, got {tensor.dtype} of shape "
                                  f"{tuple(tensor.shape)} on {tensor.device}")

    def _contiguous(self, index: int, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``, or its contiguous copy; a weight's copy is made once per version
        of the parameter (the source is held, so its identity cannot be reused)."""
        if tensor.is_contiguous():
            return tensor
        if index == 0:  # the activation changes every call
            return tensor.contiguous()
        state = (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor._version)
        kept = self.copies.get(index)
        if kept is None or kept[1] != state:
            kept = (tensor, state, tensor.detach().contiguous())
            self.copies[index] = kept
        return kept[2]


def aten_openmp() -> int | None:
    """The address of ``GOMP_parallel`` in the OpenMP runtime PyTorch's ATen runs
    its parallel work on, or None: another backend, or a build whose library is
    not where the wheels keep it."""
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        aten = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"), mode=os.RTLD_NOLOAD)
        return ctypes.cast(aten.GOMP_parallel, ctypes.c_void_p).value  # found among its dependencies
    except (OSError, AttributeError):
        return None


def find_slot(name: str) -> Slot:
    """The live slot called ``name``."""
    found = _slots.get(name)
    if found is None:
        raise KernelCallError(f"no evokernel layer {name!r} is alive in this process (the module that held it "
                              "was deleted, or it was optimized in another process)")
    return found


def _run(name: str, *tensors: Optional[torch.Tensor]) -> torch.Tensor:
    return find_slot(name).run(*(t for t in tensors if t is not None))


def _fake(name: str, first: torch.Tensor) -> torch.Tensor:
    return first.new_empty(find_slot(name).output_shape)


# -- the operators -------------------------------------------------------------------

@torch.library.custom_op(f"{NAMESPACE}::conv2d", mutates_args=())
def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
           slot: str) -> torch.Tensor:
    """A 2-D convolution (and the residual and activation fused into it) on a tuned kernel."""
    return _run(slot, input, weight, bias, residual)


@torch.library.custom_op(f"{NAMESPACE}::linear", mutates_args=())
def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], slot: str) -> torch.Tensor:
    """A fully connected layer on a tuned kernel."""
    return _run(slot, input, weight, bias)


@torch.library.custom_op(f"{NAMESPACE}::pool2d", mutates_args=())
def pool2d(input: torch.Tensor, slot: str) -> torch.Tensor:
    """Max or average pooling on a tuned kernel."""
    return _run(slot, input)


@torch.library.custom_op(f"{NAMESPACE}::relu", mutates_args=())
def relu(input: torch.Tensor, slot: str) -> torch.Tensor:
    """ReLU on a tuned kernel."""
    return _run(slot, input)


@torch.library.custom_op(f"{NAMESPACE}::softmax", mutates_args=())
def softmax(input: torch.Tensor, slot: str) -> torch.Tensor:
    """Softmax over the last dimension on a tuned kernel."""
    return _run(slot, input)


@torch.library.custom_op(f"{NAMESPACE}::no_gradient", mutates_args=())
def no_gradient(grad: torch.Tensor, slot: str, shape: list[int]) -> torch.Tensor:
    """What a backward through a kernel computes: an error naming the layer. An op,
    not a raise, so that ``torch.compile`` can trace the backward graph of a module
    called with gradients enabled; it fails when the backward really runs."""
    found = _slots.get(slot)
    layer = found.layer if found is not None else slot
    raise NoGradientError(f"layer {layer!r} runs on an evokernel kernel, which computes no gradient (inference "
                          "only): train the original module, or run this one under torch.no_grad()")


@no_gradient.register_fake
def _(grad, slot, shape):
    return grad.new_empty(shape)


def _with_weights(input, weight, bias, slot):
    return _fake(slot, input)


def _conv_fake(input, weight, bias, residual, slot):
    return _fake(slot, input)


def _unary(input, slot):
    return _fake(slot, input)


def _setup(ctx, inputs, output) -> None:
    ctx.slot = inputs[-1]
    ctx.shapes = [list(t.shape) if isinstance(t, torch.Tensor) else None for t in inputs[:-1]]


def _backward(ctx, grad):
    grads = [None if shape is None else torch.ops.evokernel.no_gradient(grad, ctx.slot, shape)
             for shape in ctx.shapes]
    return (*grads, None)


for _op, _fake_impl in ((conv2d, _conv_fake), (linear, _with_weights), (pool2d, _unary), (relu, _unary),
                        (softmax, _unary)):
    _op.register_fake(_fake_impl)
    _op.register_autograd(_backward, setup_context=_setup)

_openmp = aten_openmp()
if _openmp is not None:
    use_openmp(_openmp)

#: The ops by the kind of layer they compute.
OPS = {"conv2d": torch.ops.evokernel.conv2d.default, "linear": torch.ops.evokernel.linear.default,
       "pool2d": torch.ops.evokernel.pool2d.default, "relu": torch.ops.evokernel.relu.default,
       "softmax": torch.ops.evokernel.softmax.default}
