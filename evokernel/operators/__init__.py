"""The operator library: NN operators as Halide algorithms with NumPy references.

>>> from evokernel import operators as ops
>>> ops.conv2d(n=1, c_in=3, h=224, w=224, c_out=64, k=7, stride=2, pad=3).output.shape
(1, 64, 112, 112)
"""

from ._base import Algorithm, Operator, Stage, TensorSpec, constrain, input_param
from ._conv import Conv1x1, Conv2d, conv1x1, conv2d, depthwise_conv2d
from ._custom import CustomOperator, custom
from ._elementwise import Add, Relu, Relu6, add, relu, relu6
from ._matmul import FullyConnected, MatMul, fc, matmul
from ._pool import Pool2d, avg_pool2d, max_pool2d
from ._registry import factories, factory, from_dict
from ._softmax import Softmax, softmax

__all__ = [
    "from_dict", "factories", "factory",
    # factories
    "matmul", "fc", "conv2d", "depthwise_conv2d", "conv1x1", "max_pool2d", "avg_pool2d",
    "relu", "relu6", "add", "softmax", "custom",
    # operator classes
    "MatMul", "FullyConnected", "Conv2d", "Conv1x1", "Pool2d", "Relu", "Relu6", "Add", "Softmax", "CustomOperator",
    # the contract
    "Operator", "Stage", "Algorithm", "TensorSpec", "input_param", "constrain",
]
