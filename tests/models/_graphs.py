"""Small ONNX networks built with ``onnx.helper`` for the network tests."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def small_cnn(batch="n", seed: int = 0, opset: int = OPSET):
    """conv+bias+ReLU, a depthwise conv with ReLU6 (Clip), max pool, a residual
    Add, a Sigmoid (no operator computes it), global average pool, Flatten, Gemm
    and Softmax; input ``x`` [batch, 4, 12, 12]."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.uniform(-0.5, 0.5, shape).astype(np.float32)  # noqa: E731
    inits = [_init("w1", w(8, 4, 3, 3)), _init("b1", w(8)), _init("w2", w(8, 1, 3, 3)), _init("b2", w(8, 1, 1)),
             _init("lo", np.array(0.0)), _init("hi", np.array(6.0)), _init("wf", w(10, 8)), _init("bf", w(10))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="dw", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Add", ["c2", "b2"], ["c2b"], name="dw_bias"),
        helper.make_node("Clip", ["c2b", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Add", ["r2", "p1"], ["res"], name="residual"),
        helper.make_node("Sigmoid", ["res"], ["s"], name="sigmoid"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    graph = helper.make_graph(nodes, "small_cnn", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def single(op_type: str, shape=(2, 8), out=(2, 8), opset: int = OPSET, **attrs):
    """One node of ``op_type`` from ``x`` to ``y``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None if out is None else list(out))
    graph = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], **attrs)], op_type.lower(), [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def pointwise_pair():
    """Two 1x1 convs, the first with its bias and a ReLU: [1, 6, 5, 7] -> [1, 4, 5, 7]."""
    rng = np.random.default_rng(3)
    inits = [_init(name, rng.uniform(-0.5, 0.5, shape))
             for name, shape in (("wa", (8, 6, 1, 1)), ("ba", (8,)), ("wb", (4, 8, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="expand", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "wb"], ["y"], name="squeeze", kernel_shape=[1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 7])
    return helper.make_model(helper.make_graph(nodes, "pointwise", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", OPSET)])


def residual_block(channels: int = 16, size: int = 8):
    """conv+ReLU, conv, a residual Add of the first ReLU's output, ReLU: ONNX
    Runtime computes the Add and the last ReLU inside the second conv; input
    ``x`` [1, channels, size, size]."""
    rng = np.random.default_rng(5)
    inits = [_init(name, rng.uniform(-0.3, 0.3, (channels, channels, 3, 3))) for name in ("w1", "w2")]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", **conv),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", **conv),
             helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
             helper.make_node("Relu", ["s"], ["y"], name="relu2")]
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "residual_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def downsample_block(channels: int = 8, size: int = 8):
    """A residual network's first block of a stage: conv/2+ReLU, conv, and a 1x1/2
    shortcut conv that comes after the second conv in the node order (as PyTorch
    exports it), their residual Add, ReLU; [1, channels, size, size] -> [1, 2 *
    channels, size / 2, size / 2]."""
    rng = np.random.default_rng(7)
    wide = 2 * channels
    inits = [_init(name, rng.uniform(-0.3, 0.3, shape)) for name, shape in (
        ("w1", (wide, channels, 3, 3)), ("b1", (wide,)), ("w2", (wide, wide, 3, 3)), ("b2", (wide,)),
        ("ws", (wide, channels, 1, 1)), ("bs", (wide,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "ws", "bs"], ["s"], name="shortcut", kernel_shape=[1, 1], strides=[2, 2]),
             helper.make_node("Add", ["c2", "s"], ["sum"], name="residual"),
             helper.make_node("Relu", ["sum"], ["y"], name="relu2")]
    graph = helper.make_graph(
        nodes, "downsample_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, wide, size // 2, size // 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
