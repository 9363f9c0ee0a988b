"""``KernelCall``: the module that replaces a layer in the optimized graph. It calls
the layer's ``evokernel::`` op on the input it was tuned for and the layer itself
(PyTorch) on any other: another shape, dtype, device or a non-contiguous tensor."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import Layer
from ._ops import OPS, Slot


class KernelCall(nn.Module):
    """One layer (or a layer and its activation) on its tuned kernel.

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
        object.__setattr__(self, "_fallback", layer.fallback)
        if layer.module is not None:
            self.weight_shape = torch.Size(layer.module.weight.shape)
            self.has_bias = layer.module.bias is not None

    def forward(self, x):
        if self._layer is not None:
            weight, bias = self._layer.weight, self._layer.bias
            if self._fits(x) and self._fits_params(weight, bias):
                return self._op(x, weight, bias, self.slot_name)
        elif self._fits(x):
            return self._op(x, self.slot_name)
        for step in self._fallback:
            x = step(x)
        return x

    def _fits(self, x) -> bool:
        """``x`` is what the kernel was tuned for: a contiguous CPU float32 tensor of
        the tuned shape."""
        return (isinstance(x, torch.Tensor) and x.layout == torch.strided and x.device.type == "cpu"
                and x.dtype == torch.float32 and x.shape == self.input_shape and x.is_contiguous())

    def _fits_params(self, weight, bias) -> bool:
        ok = (weight.layout == torch.strided and weight.device.type == "cpu" and weight.dtype == torch.float32
              and weight.shape == self.weight_shape and (bias is not None) == self.has_bias)
        if ok and bias is not None:
            ok = (bias.layout == torch.strided and bias.device.type == "cpu" and bias.dtype == torch.float32
                  and bias.shape == self.weight_shape[:1])
        return ok

    def extra_repr(self) -> str:
        return f"{self.kind}: {self.key}"
