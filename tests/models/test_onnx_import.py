"""Importing ONNX graphs: which nodes become operators (fused as engines fuse them),
which stay with the NumPy reference and why, and every bad input's error."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import evokernel as ek
from evokernel.models import import_onnx

from _graphs import OPSET, downsample_block, residual_block, single, small_cnn


def test_small_cnn_maps_and_fuses_like_an_inference_engine():
    net = import_onnx(small_cnn(), {"x": (2, 4, 12, 12)})
    kinds = {s.name: (s.kind, s.operator) for s in net.steps}
    assert kinds["conv1+relu1"][1].activation == "relu" and kinds["conv1+relu1"][1].bias
    depthwise = kinds["dw+dw_bias+relu6"][1]
    assert (depthwise.groups, depthwise.bias, depthwise.activation) == (8, True, "relu6")
    assert kinds["fc"][1].family == "fc" and kinds["softmax"][1].family == "softmax"
    assert kinds["sigmoid"][1] is None and kinds["flatten"][1] is None
    assert "Sigmoid" in next(s.reason for s in net.steps if s.name == "sigmoid")


def test_reference_run_of_the_imported_graph_equals_onnxruntime():
    """Before any tuning, the network computed by operator references and ONNX's
    reference ops equals onnxruntime (the real engine) on the same model."""
    model = small_cnn()
    x = np.random.default_rng(1).random((3, 4, 12, 12), dtype=np.float32)
    ours = import_onnx(model, {"x": x.shape}).run({"x": x}, {})["y"]
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [residual_block, downsample_block])
def test_a_residual_add_and_its_relu_join_the_convolution_before_them(make):
    """As engines fuse a residual network's block: the Add is taken by one
    convolution only, whose step runs where the Add did (after a shortcut that
    comes later in the node order), and the network still computes what
    onnxruntime computes."""
    model = make()
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    net = import_onnx(model)
    names = [s.name for s in net.steps]
    fused = next(s for s in net.steps if "residual" in s.name)
    assert fused.name == "conv2+residual+relu2" and sum("residual" in n for n in names) == 1
    assert fused.operator.residual and fused.operator.activation == "relu"
    assert all(not s.operator.residual for s in net.steps if s is not fused)
    assert names.index(fused.name) == len(names) - 1
    x = np.random.default_rng(2).random(shape, dtype=np.float32) - 0.5
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(net.run({"x": x}, {})["y"], theirs, rtol=1e-5, atol=1e-6)


def test_equal_operators_are_counted_once():
    a = helper.make_node("Relu", ["x"], ["a"])
    b = helper.make_node("Relu", ["a"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    net = import_onnx(helper.make_model(helper.make_graph([a, b], "twice", [x], [y])))
    assert [count for _, count in net.operators().values()] == [2]


def test_softmax_of_old_opsets_flattens_at_its_axis():
    model = single("Softmax", shape=(2, 3, 4), out=(2, 3, 4), opset=11, axis=1)
    net = import_onnx(model)
    assert net.steps[0].operator.key.startswith("softmax(shape=2x12")
    x = np.random.default_rng(0).random((2, 3, 4), dtype=np.float32)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(net.run({"x": x}, {})["y"], theirs, rtol=1e-5)


@pytest.mark.parametrize("make, reason", [
    (lambda: single("Softmax", shape=(2, 3, 4), out=(2, 3, 4), axis=1), "axis 1"),
    (lambda: _clip(-1.0, 1.0), "Clip(0, 6)"),
    (lambda: single("MaxPool", shape=(1, 2, 6, 6), out=(1, 2, 6, 6), kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
     "asymmetric pads"),
    (lambda: single("AveragePool", shape=(1, 2, 6, 6), out=(1, 2, 6, 6), kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
     "count_include_pad"),
])
def test_nodes_no_operator_computes_say_why(make, reason):
    net = import_onnx(_with_a_relu(make()))
    step = net.steps[0]
    assert step.operator is None and reason in step.reason


def _clip(low: float, high: float):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    inits = [numpy_helper.from_array(np.array(low, np.float32), "lo"), numpy_helper.from_array(np.array(high, np.float32), "hi")]
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    return helper.make_model(helper.make_graph([node], "clip", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", OPSET)])


def _with_a_relu(model):
    """``model`` with a Relu after its output, so that one node is computed."""
    graph = model.graph
    out = graph.output[0].name
    graph.node.append(helper.make_node("Relu", [out], ["relu_out"]))
    graph.output[0].name = "relu_out"
    return model


# -- bad input ---------------------------------------------------------------------------

def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ek.ModelError, match="no ONNX model at .*absent.onnx"):
        import_onnx(tmp_path / "absent.onnx")


def test_a_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(small_cnn().SerializeToString()[:200] + b"\xff" * 50)
    with pytest.raises(ek.ModelError, match="broken.onnx"):
        import_onnx(path)


def test_not_a_model_at_all():
    with pytest.raises(ek.ModelError, match="got int"):
        import_onnx(42)


def test_an_unsupported_opset_is_named():
    model = single("Relu")
    model.opset_import[0].version = 3
    with pytest.raises(ek.ModelError, match="opset 3"):
        import_onnx(model)


def test_an_unsupported_data_type_is_named():
    x = helper.make_tensor_value_info("x", TensorProto.INT32, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [2, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "ints", [x], [y]))
    with pytest.raises(ek.ModelError, match="'x' has ONNX data type 6"):
        import_onnx(model)


def test_a_dynamic_dimension_without_input_shapes_is_named():
    with pytest.raises(ek.ModelError, match="'x' has a dynamic dimension 'n'"):
        import_onnx(small_cnn())


@pytest.mark.parametrize("shapes, match", [
    ({"x": (2, 5, 12, 12)}, "does not fit"),           # 5 channels where the model has 4
    ({"x": (2, 4, 12)}, "does not fit"),               # wrong rank
    ({"x": "big"}, "tuple of ints"),
    ({"images": (1, 4, 12, 12)}, "'images', which the model has not"),
])
def test_input_shapes_that_do_not_fit_are_named(shapes, match):
    with pytest.raises(ek.ModelError, match=match):
        import_onnx(small_cnn(), shapes)


def test_input_shapes_the_graph_cannot_compute_are_named():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    add = helper.make_node("Add", ["x", "b"], ["y"])
    bias = numpy_helper.from_array(np.ones(4, np.float32), "b")
    model = helper.make_model(helper.make_graph([add], "bias", [x], [y], [bias]),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(ek.ModelError, match="do not fit the graph"):
        import_onnx(model, {"x": (2, 5)})  # 5 features added to a bias of 4


def test_a_model_with_no_supported_node_is_refused():
    with pytest.raises(ek.ModelError, match="no node of the model is one evokernel computes.*Sigmoid"):
        import_onnx(single("Sigmoid"))


def test_weights_aliased_by_identity_nodes_are_still_constants():
    """PyTorch's exporter shares equal weights through Identity nodes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])
    inits = [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    nodes = [helper.make_node("Identity", ["b"], ["b_alias"]),
             helper.make_node("Conv", ["x", "w", "b_alias"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = helper.make_model(helper.make_graph(nodes, "alias", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    (step,) = import_onnx(model).steps
    assert step.kind == "Conv" and step.operator.bias
