"""Networks: import an ONNX model, tune all its operators under one budget, run it.

``ek.tune_model(path, budget=...)`` returns a ``TunedModel``; ``ek.load_model``
reads one saved with ``TunedModel.save``.
"""

from ._model import TunedModel, load_model
from ._network import Network, Step
from ._onnx import import_onnx
from ._scheduler import Task, TaskScheduler, tune_model, tune_operators

__all__ = ["tune_model", "TunedModel", "load_model", "import_onnx", "Network", "Step", "TaskScheduler", "Task", "tune_operators"]
