"""PyTorch integration: ``ek.torch.optimize(model, example_input, budget=...)``
returns the module with tuned kernels for the layers they compute, called through
``evokernel::`` custom ops (``torch.compile`` and ``torch.export`` trace through
them) and PyTorch for everything else. Needs PyTorch 2.4 or later
(``pip install 'evokernel[torch]'``).
"""

try:
    import torch as _torch  # noqa: F401  (the real PyTorch: imports are absolute)
except ImportError as error:  # pragma: no cover - torch is in the test extra
    raise ImportError("evokernel.torch needs PyTorch 2.4 or later: pip install 'evokernel[torch]'") from error

from ._call import KernelCall
from ._optimize import Kernels, optimize

__all__ = ["optimize", "KernelCall", "Kernels"]
