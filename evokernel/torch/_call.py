"""``KernelCall``: the module that replaces a layer in the optimized graph. It calls
the layer's ``evokernel::`` op on the input it was tuned for and the layer itself
(PyTorch) on any other: another shape, dtype, device or a non-contiguous tensor.
A conv with a batch norm folded into it takes the folded weight and bias, computed
once per version of the tensors they come from, and runs the original layers while
the batch norm is in training mode."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import ADD_RESIDUAL, Layer
from ._ops import OPS, Slot


class KernelCall(nn.Module):
    """One layer (or a layer and its activation) on its tuned kernel; a conv with a
    fused residual add takes the residual as its second input.

    The original layer is held, not registered as a child: it stays where it is in
    the module tree, so the optimized module's parameters and ``state_dict`` are
    the model's own, read at every call.
    """

    def __init__(self, layer: Layer, slot: Slot):
        super().__init__()
        self.layer_name, self.kind, self.slot_name, self.key = layer.name, layer.kind, slot.name, layer.operator.key
        self.input_shape = torch.Size(layer.input_shape)
        self._slot = slot  # keeps the kernel alive as long as this module
        self._op = OPS[layer.kind]
        object.__setattr__(self, "_layer", layer.module)
        object.__setattr__(self, "_norm", layer.norm)
        object.__setattr__(self, "_fallback", layer.fallback)
        self._folded = None  # (source tensors, their state, folded weight, folded bias)
        if layer.module is not None:
            self.weight_shape = torch.Size(layer.module.weight.shape)
            self.has_bias = layer.module.bias is not None

    def forward(self, x, residual=None):
        if self._fits(x) and (residual is None or self._fits_residual(residual)):
            weights = self.weights()
            if weights is not None:
                return self._op(*self.arguments(x, weights, residual))
        for step in self._fallback:
            x = x + residual if step is ADD_RESIDUAL else step(x)
        return x

    def arguments(self, x, weights: tuple, residual=None) -> tuple:
        """Its op's arguments: the input, the ``weights``, the residual of a conv
        (None where it has none) and the slot's name."""
        return (x, *weights, *((residual,) if self.kind == "conv2d" else ()), self.slot_name)

    def weights(self) -> tuple[torch.Tensor, ...] | None:
        """The tensors the kernel takes after the input, read now: none for a layer
        without weights, else its weight and bias (folded with its batch norm);
        None where the kernel cannot take them, so PyTorch's layers run."""
        if self._layer is None:
            return ()
        weight, bias = self._layer.weight, self._layer.bias
        if not self._fits_params(weight, bias):
            return None
        if self._norm is None:
            return weight, bias
        return self._fold(weight, bias) if self._fits_norm() else None

    def _fold(self, weight, bias) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv's weight and bias with its batch norm folded in, kept until one of
        the tensors they come from is replaced or changed in place. Computed afresh
        while traced, and where gradients are recorded (so a backward reaches the op)."""
        norm = self._norm
        sources = (weight, bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        if (torch.compiler.is_compiling() or any(t is not None and type(t) not in _PLAIN for t in sources)
                or (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in sources))):
            return fold(weight, bias, norm)
        state = (norm.eps, *(None if t is None else (t.data_ptr(), t._version) for t in sources))
        kept = self._folded
        if kept is None or kept[1] != state or any(a is not b for a, b in zip(kept[0], sources)):
            with torch.no_grad():
                kept = (sources, state, *fold(weight, bias, norm))
            self._folded = kept
        return kept[2], kept[3]

    def _fits(self, x) -> bool:
        """``x`` is what the kernel was tuned for: a contiguous CPU float32 tensor of
        the tuned shape."""
        return (isinstance(x, torch.Tensor) and x.layout == torch.strided and x.device.type == "cpu"
                and x.dtype == torch.float32 and x.shape == self.input_shape and x.is_contiguous())

    def _fits_residual(self, residual) -> bool:
        """The residual is a contiguous CPU float32 tensor of the output's shape."""
        return (isinstance(residual, torch.Tensor) and residual.layout == torch.strided
                and residual.device.type == "cpu" and residual.dtype == torch.float32
                and residual.shape == self._slot.output_shape and residual.is_contiguous())

    def _fits_params(self, weight, bias) -> bool:
        ok = (weight.layout == torch.strided and weight.device.type == "cpu" and weight.dtype == torch.float32
              and weight.shape == self.weight_shape and (bias is not None) == self.has_bias)
        if ok and bias is not None:
            ok = (bias.layout == torch.strided and bias.device.type == "cpu" and bias.dtype == torch.float32
                  and bias.shape == self.weight_shape[:1])
        return ok

    def _fits_norm(self) -> bool:
        """The batch norm can be folded now: in eval mode, with running statistics,
        its tensors CPU float32 vectors of the conv's output channels."""
        norm = self._norm
        if norm.training or norm.running_mean is None or norm.running_var is None:
            return False
        return all(t is None or (t.layout == torch.strided and t.device.type == "cpu" and t.dtype == torch.float32
                                 and t.shape == self.weight_shape[:1])
                   for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var))

    def extra_repr(self) -> str:
        return f"{self.kind}: {self.key}"


_PLAIN = (torch.Tensor, nn.Parameter)


def fold(weight: torch.Tensor, bias: torch.Tensor | None, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv's weight and bias with the eval-mode batch norm after it folded in:
    ``scale = gamma / sqrt(running_var + eps)``, ``w * scale`` per output channel and
    ``(b - running_mean) * scale + beta``."""
    scale = 1 / torch.sqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = (-norm.running_mean if bias is None else bias - norm.running_mean) * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return (weight * scale[:, None, None, None]).contiguous(), shift
