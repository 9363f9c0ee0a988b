"""ek.export_onnxruntime: the custom-op library and the rewritten model run by the
real onnxruntime (no mocks), against onnxruntime running the original model."""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import evokernel as ek

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # the small ONNX graphs of the model tests
from _graphs import downsample_block, pointwise_pair, small_cnn

SHAPE = (2, 4, 12, 12)
CPU = ["CPUExecutionProvider"]


def head(batch="n"):
    """Relu then Softmax over [batch, 10]: a second model, to read small_cnn's output."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1)]
    return helper.make_model(helper.make_graph(nodes, "head", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def session(model, *libraries, options=None):
    """An onnxruntime session of ``model`` (a path or a ModelProto) with ``libraries`` registered."""
    options = options or ort.SessionOptions()
    for lib in libraries:
        options.register_custom_ops_library(str(lib))
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=CPU)


def reference(model, **inputs):
    return session(model).run(None, inputs)[0]


def evokernel_nodes(model) -> list:
    return [n for n in model.graph.node if n.domain.startswith("evokernel.")]


@pytest.fixture(scope="module")
def tuned(make_cache):
    """small_cnn (7 distinct operators) and head (2), tuned with about two evaluations per operator."""
    root = make_cache("ort")
    options = {"seed": 0, "evaluator": "local", "cache_dir": root, "progress": False}
    cnn = ek.tune_model(small_cnn(), budget=14, input_shapes={"x": SHAPE}, **options)
    second = ek.tune_model(head(), budget=4, input_shapes={"x": (2, 10)}, **options)
    assert len(cnn.kernels) == 7 and len(second.kernels) == 2
    return cnn, second


@pytest.fixture(scope="module")
def exported(tuned, tmp_path_factory):
    """(library, rewritten model) of small_cnn and of head, in two directories."""
    cnn, second = tuned
    return (ek.export_onnxruntime(cnn, tmp_path_factory.mktemp("cnn")),
            ek.export_onnxruntime(second, tmp_path_factory.mktemp("head"), name="head_ort"))


def test_onnxruntime_with_the_library_equals_onnxruntime_without_it(exported):
    (lib, path), _ = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ours = evokernel_nodes(model)
    assert [n.name for n in ours] == ["conv1+relu1", "pool1", "dw+dw_bias+relu6", "residual", "gap", "fc", "softmax"]
    assert {n.op_type for n in model.graph.node if not n.domain} == {"Sigmoid", "Flatten"}
    assert {o.domain: o.version for o in model.opset_import}[ours[0].domain] == 1
    assert not {"w1", "b1", "w2", "b2", "wf", "bf"} & {t.name for t in model.graph.initializer}  # now in kernel layout
    x = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(session(path, lib).run(None, {"x": x})[0], reference(small_cnn(), x=x),
                               rtol=1e-4, atol=1e-6)


def test_the_fc_weight_is_stored_transposed_as_the_kernel_takes_it(exported):
    (_, path), _ = exported
    model = onnx.load(str(path))
    fc = next(n for n in model.graph.node if n.name == "fc")
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    original = {t.name: onnx.numpy_helper.to_array(t) for t in small_cnn().graph.initializer}
    assert fc.input[0] == "f"  # the Flatten's output, read as it is
    np.testing.assert_array_equal(weights[fc.input[1]], original["wf"])  # transB=1: already [out, in]
    np.testing.assert_array_equal(weights[fc.input[2]], original["bf"])


def test_a_node_whose_kernel_is_missing_stays_onnxruntimes(tuned, tmp_path):
    cnn, _ = tuned
    softmax = next(k for k in cnn.kernels if k.signature.key.startswith("softmax"))
    kernels = {k.signature.key: k for k in cnn.kernels if k is not softmax}
    partial = ek.TunedModel(cnn.network, kernels, {softmax.signature.key: "no correct candidate"}, cnn.input_shapes)
    lib, path = ek.export_onnxruntime(partial, tmp_path)
    model = onnx.load(str(path))
    assert len(evokernel_nodes(model)) == 6
    node = next(n for n in model.graph.node if n.name == "softmax")
    assert (node.domain, node.op_type) == ("", "Softmax")
    x = np.random.default_rng(2).random(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(session(path, lib).run(None, {"x": x})[0], reference(small_cnn(), x=x),
                               rtol=1e-4, atol=1e-6)


ROW = re.compile(r"^(\S+) .*?(?:(\d+\.\d+)x)?\s+(evokernel|ONNX Runtime)\s*(.*)$")


def report_rows(path: Path) -> dict[str, tuple]:
    """Node -> (speedup or None, where it runs, note), from the report beside ``path``."""
    lines = path.with_suffix(".report.txt").read_text().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("node ")) + 1:]
    return {m[1]: (float(m[2]) if m[2] else None, m[3], m[4]) for m in map(ROW.match, lines)}


def test_1x1_convs_run_as_matrix_products_of_their_positions(make_cache, tmp_path):
    """Imported as conv1x1 (the image's positions flattened), their weights stored as
    [c_out, c_in]; the executor and ONNX Runtime with the library equal ONNX Runtime."""
    model = pointwise_pair()
    net = ek.tune_model(model, budget=6, seed=0, evaluator="local", cache_dir=make_cache("pointwise"),
                        progress=False)
    assert sorted(k.signature.key for k in net.kernels) == [
        "conv1x1(n=1,c_in=6,c_out=8,positions=35,bias=True,activation=relu,dtype=float32)",
        "conv1x1(n=1,c_in=8,c_out=4,positions=35,bias=False,activation=None,dtype=float32)"]
    x = np.random.default_rng(4).random((1, 6, 5, 7), dtype=np.float32)
    want = reference(model, x=x)
    np.testing.assert_allclose(net(x), want, rtol=1e-4, atol=1e-6)
    lib, path = ek.export_onnxruntime(net, tmp_path)
    rewritten = onnx.load(str(path))
    assert [n.name for n in evokernel_nodes(rewritten)] == ["expand+relu", "squeeze"]
    stored = {t.name: t.dims for t in rewritten.graph.initializer}
    assert sorted(map(list, stored.values())) == [[4, 8], [8], [8, 6]]
    np.testing.assert_allclose(session(path, lib).run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-6)


def test_the_report_lists_every_tuned_node(exported):
    (_, path), _ = exported
    rows = report_rows(path)
    assert len(rows) == 7 and {where for _, where, _ in rows.values()} == {"evokernel"}
    assert path.with_suffix(".report.txt").read_text().startswith("7 of 7 tuned nodes on evokernel kernels\n")


def test_min_speedup_leaves_the_nodes_onnxruntime_runs_faster_to_it(tuned, tmp_path):
    """Each tuned node is timed in the whole model by the real onnxruntime's
    profiler both ways; those whose kernel is less than ``min_speedup`` times
    faster keep their original nodes, the report states both whole models' times, and
    the model still computes what the original does. The rule is set between the
    speedups a first export measured, so that some nodes fall on each side."""
    cnn, _ = tuned
    everything = ek.export_onnxruntime(cnn, tmp_path / "all", min_speedup=1e-9)[1]
    assert len(evokernel_nodes(onnx.load(str(everything)))) == 7
    measured = sorted(speedup for speedup, _, _ in report_rows(everything).values())
    assert len(measured) == 7 and None not in measured
    whole = re.search(r"The whole model per run, profiled: ([\d.]+) (m?s|us) on ONNX Runtime's kernels, "
                      r"([\d.]+) (m?s|us) with every tuned node", everything.with_suffix(".report.txt").read_text())
    assert whole and float(whole[1]) > 0 and float(whole[3]) > 0
    rule = measured[2] + 0.005  # halfway between two speedups as the report rounds them: no tie to misread
    lib, path = ek.export_onnxruntime(cnn, tmp_path, min_speedup=rule)
    rows = report_rows(path)
    assert len(rows) == 7 and all(speedup is not None for speedup, _, _ in rows.values())
    ours = {n.name for n in evokernel_nodes(onnx.load(str(path)))}
    assert ours and ours == {name for name, (speedup, where, _) in rows.items() if where == "evokernel"}
    assert all((speedup >= rule) == (name in ours) for name, (speedup, _, _) in rows.items())
    x = np.random.default_rng(3).random(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(session(path, lib).run(None, {"x": x})[0], reference(small_cnn(), x=x),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ek.ExportError, match=r"no tuned node is at least 1000000000.0x faster(.|\n)*fc "):
        ek.export_onnxruntime(cnn, tmp_path / "none", min_speedup=1e9)
    assert not list((tmp_path / "none").glob("*"))


def test_a_residual_block_runs_as_fused_nodes_each_timed_against_onnxruntimes_own(make_cache, tmp_path):
    """A residual Add and its ReLU join the convolution before them, as ONNX Runtime
    fuses them into its own: each fused node is timed against ONNX Runtime's nodes
    for the same step (even the loosest rule keeps every one), the shortcut that
    comes later in the node order runs before the node that reads it, and the model
    computes what the original does."""
    model = downsample_block()
    net = ek.tune_model(model, budget=6, seed=0, evaluator="local", cache_dir=make_cache("residual"),
                        progress=False)
    lib, path = ek.export_onnxruntime(net, tmp_path, min_speedup=1e-9)
    rows = report_rows(path)
    assert set(rows) == {"conv1+relu1", "shortcut", "conv2+residual+relu2"}
    assert all(speedup is not None and where == "evokernel" for speedup, where, _ in rows.values())
    assert [n.op_type for n in onnx.load(str(path)).graph.node if not n.domain] == []
    x = np.random.default_rng(6).random((1, 8, 8, 8), dtype=np.float32) - 0.5
    np.testing.assert_allclose(session(path, lib).run(None, {"x": x})[0], reference(model, x=x), rtol=1e-4, atol=1e-5)


def test_min_speedup_leaves_to_onnxruntime_a_step_it_fuses_into_another_node(make_cache, tmp_path):
    """ONNX Runtime computes an Add of a constant inside the matrix product before
    it (a Gemm named after the MatMul): the product is timed against that Gemm,
    the Add, which costs ONNX Runtime next to nothing, is left to it even by the
    loosest rule, and the model still computes what the original does."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])
    rng = np.random.default_rng(4)
    inits = [onnx.numpy_helper.from_array(rng.random(shape, dtype=np.float32), name)
             for name, shape in (("w", (8, 16)), ("c", (4, 16)))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="product"),
             helper.make_node("Add", ["m", "c"], ["y"], name="plus")]
    model = helper.make_model(helper.make_graph(nodes, "affine", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    net = ek.tune_model(model, budget=4, seed=0, evaluator="local", cache_dir=make_cache("affine"), progress=False)
    lib, path = ek.export_onnxruntime(net, tmp_path, min_speedup=1e-9)
    rows = report_rows(path)
    assert rows["product"][0] is not None and rows["product"][1] == "evokernel"
    assert rows["plus"] == (None, "ONNX Runtime", "not timed: ONNX Runtime computes it inside another node")
    a = rng.random((4, 8), dtype=np.float32)
    np.testing.assert_allclose(session(path, lib).run(None, {"x": a})[0], reference(model, x=a), rtol=1e-5, atol=1e-6)


def test_a_wrong_shape_at_run_time_is_an_onnxruntime_error_naming_it(exported):
    (lib, path), _ = exported
    model = onnx.load(str(path))  # its input is static, which onnxruntime checks itself: make it dynamic
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    run = session(model, lib)
    with pytest.raises(Exception, match=r"conv1\+relu1.*input 0 must be float32 of shape \[2, 4, 12, 12\].*"
                                        r"got float32 of shape \[3, 4, 12, 12\]") as error:
        run.run(None, {"x": np.zeros((3, 4, 12, 12), np.float32)})
    assert "INVALID_ARGUMENT" in str(error.value)
    x = np.random.default_rng(3).random(SHAPE, dtype=np.float32)  # the session still runs what fits
    np.testing.assert_allclose(run.run(None, {"x": x})[0], reference(small_cnn(), x=x), rtol=1e-4, atol=1e-6)


def test_one_library_loads_into_two_sessions_of_one_process(exported):
    (lib, path), _ = exported
    first, second = session(path, lib), session(path, lib)
    x = np.random.default_rng(4).random(SHAPE, dtype=np.float32)
    np.testing.assert_array_equal(first.run(None, {"x": x})[0], second.run(None, {"x": x})[0])
    # onnxruntime refuses one domain twice in one session: registering it twice in one SessionOptions
    with pytest.raises(Exception, match="Domain already set in registry"):
        session(path, lib, lib)
    np.testing.assert_array_equal(first.run(None, {"x": x})[0], second.run(None, {"x": x})[0])


def test_two_different_libraries_run_in_one_session(exported):
    (cnn_lib, cnn_path), (head_lib, head_path) = exported
    cnn, top = onnx.load(str(cnn_path)), onnx.compose.add_prefix(onnx.load(str(head_path)), "head/")
    assert evokernel_nodes(cnn)[0].domain != evokernel_nodes(top)[0].domain
    assert {n.op_type for n in evokernel_nodes(cnn)} & {n.op_type for n in evokernel_nodes(top)}  # softmax_0 in both
    both = onnx.compose.merge_models(cnn, top, io_map=[("y", "head/x")])
    x = np.random.default_rng(5).random(SHAPE, dtype=np.float32)
    expected = reference(head(), x=reference(small_cnn(), x=x))
    np.testing.assert_allclose(session(both, cnn_lib, head_lib).run(None, {"x": x})[0], expected,
                               rtol=1e-4, atol=1e-6)


THREADS_PROBE = """
import json, os, sys
import numpy as np, onnxruntime as ort, evokernel as ek
lib, model, bundle = sys.argv[1:4]
threads = lambda: len(os.listdir("/proc/self/task"))
options = ort.SessionOptions()
options.intra_op_num_threads = 2
options.register_custom_ops_library(lib)
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
start = threads()
for _ in range(3):
    session.run(None, {"x": np.random.default_rng(0).random((2, 4, 12, 12), dtype=np.float32)})
after_session = threads()
kernel = ek.load_kernel(bundle, trusted=True)
kernel(*(np.ones(s.shape, np.float32) for s in kernel.signature.inputs))
print(json.dumps({"start": start, "after_session": after_session, "after_kernel": threads()}))
"""


def test_kernels_run_their_parallel_loops_on_onnxruntimes_intra_op_threads(tuned, exported, tmp_path):
    """In a session, the process gains no thread (the loops ran on the session's
    intra-op pool); one of the same kernels called from NumPy starts Halide's pool."""
    cnn, _ = tuned
    (lib, path), _ = exported
    parallel = next((k for k in cnn.kernels if ".parallel(" in k.schedule), None)
    assert parallel is not None, "no tuned kernel has a parallel loop to place"
    bundle = parallel.save(tmp_path / "parallel.ekb")
    done = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(lib), str(path), str(bundle)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["after_session"] == seen["start"], seen
    assert seen["after_kernel"] > seen["after_session"], seen


def test_the_library_exports_only_its_entry_points(exported):
    (lib, _), (head_lib, _) = exported
    for path, name in ((lib, "evokernel_ort"), (head_lib, "head_ort")):
        table = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
        assert {line.split()[-1] for line in table.stdout.splitlines()} == {"RegisterCustomOps",
                                                                           f"{name}_set_num_threads"}
    set_threads = ctypes.CDLL(str(lib)).evokernel_ort_set_num_threads
    set_threads(2)
    assert set_threads(0) == 2


class _ApiBase(ctypes.Structure):
    _fields_ = [("get_api", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)),
                ("get_version_string", ctypes.CFUNCTYPE(ctypes.c_void_p))]


def _onnxruntime_library() -> Path:
    found = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so*"))
    if not found:
        pytest.skip("this onnxruntime package ships no libonnxruntime.so to call the C API with")
    return found[0]


def test_registration_fails_cleanly_where_the_api_version_is_missing(exported):
    (lib, _), _ = exported
    runtime = ctypes.CDLL(str(_onnxruntime_library()))
    runtime.OrtGetApiBase.restype = ctypes.POINTER(_ApiBase)
    real = runtime.OrtGetApiBase().contents.get_api
    version = ctypes.create_string_buffer(b"1.15.0")
    asked = []

    def older(available):  # an OrtApiBase of a runtime that gives API versions up to `available`
        def get_api(v):
            asked.append(v)
            return real(v) if v <= available else None
        return _ApiBase(_ApiBase._fields_[0][1](get_api), _ApiBase._fields_[1][1](lambda: ctypes.addressof(version)))

    register = ctypes.CDLL(str(lib)).RegisterCustomOps
    register.restype, register.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.POINTER(_ApiBase)]
    base = older(15)
    status = register(None, ctypes.byref(base))  # no session options needed: it fails before using them
    api = ctypes.cast(real(1), ctypes.POINTER(ctypes.c_void_p))
    message = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(api[2])(status).decode()  # GetErrorMessage
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(api[93])(status)  # ReleaseStatus
    assert asked == [16, 1]
    assert "C API version 16" in message and "ONNX Runtime 1.15.0 does not provide it" in message
    asked.clear()
    base = older(0)  # not even version 1: nothing to report with, nothing registered
    assert register(None, ctypes.byref(base)) is None and asked == [16, 1]


def test_bad_arguments_are_export_errors(tuned, tmp_path):
    cnn, _ = tuned
    with pytest.raises(ek.ExportError, match="pass an ek.TunedModel .* got list"):
        ek.export_onnxruntime(cnn.kernels, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ek.ExportError, match="cannot write to"):
        ek.export_onnxruntime(cnn, tmp_path / "file")
    with pytest.raises(ek.ExportError, match="the library name must be a C identifier"):
        ek.export_onnxruntime(cnn, tmp_path, name="my-lib")
    for bad in (0, -1.0, float("nan"), "2", True):
        with pytest.raises(ek.ExportError, match="min_speedup must be a positive number"):
            ek.export_onnxruntime(cnn, tmp_path, min_speedup=bad)
    assert not list(tmp_path.glob("*.so"))


def test_a_float64_kernel_is_an_export_error(make_cache, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "double", [x], [y])
    net = ek.tune_model(helper.make_model(graph), budget=1, evaluator="local", cache_dir=make_cache("f64"),
                        progress=False)
    with pytest.raises(ek.ExportError, match=r"relu\(shape=2x8,dtype=float64\) computes float64: .* float32"):
        ek.export_onnxruntime(net, tmp_path)
